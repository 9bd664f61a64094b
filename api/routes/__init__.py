"""The routes of the API, one module per concern: pages (dashboard, health), sessions, stream."""
