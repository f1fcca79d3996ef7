"""Framework helpers (edge, like the adapters): per-endpoint checks and §9 error answers for Starlette/FastAPI,
Flask and Django apps behind :mod:`authmw.asgi` or :mod:`authmw.wsgi`. Each module imports its framework."""

__all__: list[str] = []  # a namespace: import the module you need
