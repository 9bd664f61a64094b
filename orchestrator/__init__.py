"""Meta-Orchestrator: runs AI coding-agent CLIs in hardened Docker containers."""

__version__ = "0.1.0"
