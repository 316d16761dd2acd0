"""The web API's pieces, the way FastAPI's bigger-applications layout keeps them apart:
schemas (shapes, limits, docs examples), routes, writes (who may write, what a write body is),
errors, metrics and logs, middleware, and app (create_app, startup, serve). api.py at the top
of the repository is the entry point: `uvicorn api:app`."""
