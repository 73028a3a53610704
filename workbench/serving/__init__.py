"""Serving a saved index over HTTP (FastAPI + uvicorn, the optional ``serve`` extra)."""
