"""The subscribers\x27 front door: public pages and routes that need no API key."""
