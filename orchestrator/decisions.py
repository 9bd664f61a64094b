"""A person's decision on a paused session, from any process.

The session's log has one writer. When no process runs the session (it exited with code 4), the
decision is appended to the log directly. When a process runs it, the decision is dropped into the
session's ``inbox/`` as a small JSON file (written atomically); the running coordinator takes it,
records it as a ``human_decision`` event and deletes the file. Either way the event log is the record.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path
from typing import Literal

import orjson

from orchestrator.errors import SessionLocked, StateConflict, UsageError
from orchestrator.models import HumanDecision
from orchestrator.paths import SessionPaths
from orchestrator.store import EventReader, EventWriter, atomic_write

Action = Literal["continue", "stop"]


def inbox(paths: SessionPaths) -> Path:
    return paths.root / "inbox"


def submit_decision(paths: SessionPaths, action: str, note: str = "", by: str = "person") -> str:
    """Record ``action`` for a paused session; returns ``"recorded"`` or ``"queued"`` (live process)."""
    if action not in ("continue", "stop"):
        raise UsageError(f"decision {action!r} is not one of: continue, stop")
    state = EventReader(paths).state()
    if state.status != "paused":
        raise StateConflict(f"session {paths.session_id} is {state.status}, not paused: nothing to decide")
    decision = HumanDecision.model_validate({"action": action, "note": note[:2000], "by": by})
    try:
        with EventWriter.open(paths, create=False) as writer:
            writer.emit("orchestrator", decision)
        return "recorded"
    except SessionLocked:
        name = f"{time.time_ns()}-{secrets.token_hex(4)}.json"
        atomic_write(inbox(paths) / name, orjson.dumps(decision.model_dump()))
        return "queued"


def take_decisions(paths: SessionPaths) -> list[HumanDecision]:
    """Decisions waiting in the inbox, oldest first; their files are removed. Garbage is dropped."""
    folder = inbox(paths)
    if not folder.is_dir():
        return []
    found: list[HumanDecision] = []
    for file in sorted(folder.glob("*.json")):
        with contextlib.suppress(ValueError):
            found.append(HumanDecision.model_validate_json(file.read_bytes()))
        file.unlink(missing_ok=True)
    return found
