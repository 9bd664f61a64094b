"""The HTTP API and dashboard: ``create_app(settings, runner)`` (see ``api.app``)."""
