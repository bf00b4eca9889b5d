"""Channel adapters and the provider sandbox, end to end through the real SDKs."""
