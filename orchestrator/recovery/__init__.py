"""Recovery (POLICIES.md §2): pure rules that turn a worker's events, exit and silence into actions.

``PermissionRecoveryEngine(policy)`` answers ``monitor_stream(line_or_event, worker)``,
``on_exit(worker, exit_info)`` and ``check_stall(worker, now)`` with a ``RecoveryAction`` or None;
``engine.py`` says how the coordinator carries an action out. The knobs are ``RecoveryPolicy``
(``RecoveryPolicy.from_settings(settings)``), the worker is a ``WorkerView``
(``WorkerView.from_state`` / ``from_events``), the permission ladders are the agent adapters'
(``ladder.rung_flags`` reads them).
Nothing here imports docker, os or time.
"""

from orchestrator.recovery.engine import ParserFactory, PermissionRecoveryEngine, adapter_parser
from orchestrator.recovery.ladder import LADDERS, TOP_RUNG, rung_flags
from orchestrator.recovery.policy import RecoveryPolicy, backoff_delay, parse_size
from orchestrator.recovery.rules import CLOCK_RULES, EXIT_RULES, GUARDS, STREAM_RULES
from orchestrator.recovery.view import ExitInfo, WorkerView

__all__ = [
    "CLOCK_RULES",
    "EXIT_RULES",
    "GUARDS",
    "LADDERS",
    "STREAM_RULES",
    "TOP_RUNG",
    "ExitInfo",
    "ParserFactory",
    "PermissionRecoveryEngine",
    "RecoveryPolicy",
    "WorkerView",
    "adapter_parser",
    "backoff_delay",
    "parse_size",
    "rung_flags",
]
