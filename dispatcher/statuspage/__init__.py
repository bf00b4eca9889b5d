"""The Statuspage-compatible public JSON (`/api/v2/*.json`), served from the status snapshot."""
