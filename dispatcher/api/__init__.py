"""The HTTP API (FastAPI). `dispatcher.api.app.create_app()` is the factory uvicorn runs; it mounts the
public pages (dispatcher/public/) beside the API."""
