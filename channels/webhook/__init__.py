"""The webhook channel: condenser (pure) and adapter (I/O)."""
