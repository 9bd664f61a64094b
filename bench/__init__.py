"""Benchmarks B1-B5 of the orchestrator, each against a raw baseline measured in the same run.

``python -m bench`` runs them all, ``python -m bench b3`` one, ``--quick`` a small configuration
(CI). Each module measures the orchestrator's real path and the raw path on the same image in the
same minute, and returns ``Figure``s; ``bench.report`` prints the table and writes the results.
Benchmarks print figures; nothing here asserts a timing.
"""
