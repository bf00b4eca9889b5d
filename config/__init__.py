"""Settings: `get_settings()` is the one way to read configuration."""

from config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
