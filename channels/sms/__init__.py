"""The sms channel: condenser (pure) and adapter (I/O)."""
