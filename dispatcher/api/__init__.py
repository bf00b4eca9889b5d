"""The HTTP API (FastAPI). `create_app()` is the factory uvicorn runs."""

from dispatcher.api.app import create_app

__all__ = ["create_app"]
