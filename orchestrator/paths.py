"""The workspace layout as a type.

Every identifier is validated *before* it is joined into a path: a session id must match
``^[0-9A-Za-z_-]{8,64}$``, a task id ``^[0-9A-Za-z_-]{1,32}$``. Anything else (``../x``, an absolute
path, a NUL byte, an over-long id) is an ``InvalidIdentifier`` naming the bad value.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InvalidIdentifier

SESSION_ID_RE = re.compile(r"[0-9A-Za-z_-]{8,64}")
TASK_ID_RE = re.compile(r"[0-9A-Za-z_-]{1,32}")
WORKER_RE = re.compile(r"[0-9A-Za-z_.-]{1,80}")

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def validate_session_id(value: object) -> str:
    """Return ``value`` if it is a safe session id, else raise ``InvalidIdentifier``."""
    if not isinstance(value, str) or not SESSION_ID_RE.fullmatch(value):
        raise InvalidIdentifier(
            f"invalid session id {_show(value)}: expected 8-64 characters of [0-9A-Za-z_-]"
        )
    return value


def validate_task_id(value: object) -> str:
    """Return ``value`` if it is a safe task id, else raise ``InvalidIdentifier``."""
    if not isinstance(value, str) or not TASK_ID_RE.fullmatch(value):
        raise InvalidIdentifier(f"invalid task id {_show(value)}: expected 1-32 characters of [0-9A-Za-z_-]")
    return value


def validate_worker_name(value: object) -> str:
    """Return ``value`` if it is a safe worker name (``codex-t2``, ``reviewer-claude-1``)."""
    if not isinstance(value, str) or not WORKER_RE.fullmatch(value) or value.startswith("."):
        raise InvalidIdentifier(
            f"invalid worker name {_show(value)}: expected 1-80 characters of [0-9A-Za-z_.-]"
        )
    return value


def new_session_id(now: float | None = None) -> str:
    """A sortable, unique session id: a millisecond timestamp in base 32 plus 8 random characters."""
    millis = int((time.time() if now is None else now) * 1000)
    stamp = ""
    for _ in range(10):
        millis, digit = divmod(millis, 32)
        stamp = _CROCKFORD[digit] + stamp
    suffix = "".join(secrets.choice(_CROCKFORD) for _ in range(8))
    return f"{stamp}{suffix}"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "...'"


@dataclass(frozen=True, slots=True)
class SessionPaths:
    """Where the files of one session live: ``<workspace>/<session_id>/...``."""

    workspace: Path
    session_id: str

    def __post_init__(self) -> None:
        validate_session_id(self.session_id)

    @classmethod
    def of(cls, workspace: Path | str, session_id: str) -> SessionPaths:
        """Validate ``session_id`` and build the paths under ``workspace``."""
        return cls(Path(workspace), validate_session_id(session_id))

    @property
    def root(self) -> Path:
        return self.workspace / self.session_id

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def session_json(self) -> Path:
        return self.root / "session.json"

    @property
    def snapshot(self) -> Path:
        return self.root / "snapshot.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    @property
    def worktrees(self) -> Path:
        return self.root / "worktrees"

    def task_dir(self, task_id: str) -> Path:
        """``tasks/<task_id>/``: what a worker produced that is not in the repository."""
        return self.tasks / validate_task_id(task_id)

    def worktree(self, task_id: str) -> Path:
        """The git worktree (or copy) a write task works in."""
        return self.worktrees / validate_task_id(task_id)

    def home(self, worker: str) -> Path:
        """A per-worker folder for files the CLI needs (config, a copied login folder)."""
        return self.root / "homes" / validate_worker_name(worker)
