"""What ops dashboards read back: lists, searches, a delivery's story. Read-only queries."""
