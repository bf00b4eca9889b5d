"""The HTTP API (FastAPI routers). `dispatcher.app.create_app()` mounts them, with the public pages."""
