"""The machinery behind ``orchestrator.images``: image inputs and their hash, the base recipe,
build contexts, and the ``docker`` CLI calls. Callers use ``orchestrator.images``; these modules
are split out so each has one reason to change.
"""
