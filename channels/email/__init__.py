"""The email channel: condenser (pure) and adapter (I/O)."""
