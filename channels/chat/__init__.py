"""The chat channel: condenser (pure) and adapter (I/O)."""
