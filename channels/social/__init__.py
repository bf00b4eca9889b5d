"""The social channel: condenser (pure) and adapter (I/O)."""
