"""The seed's ``server.py``: the FastAPI app lives in ``api/``; its factory is importable from here."""

from api.app import begin_shutdown, create_app

__all__ = ["begin_shutdown", "create_app"]
