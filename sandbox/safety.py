"""The sandbox policy (POLICIES.md §1) as one function: a worker request -> a ``ContainerSpec``.

``build_spec(request)`` is the only way production code makes a ``ContainerSpec``. It checks every
mount (``sandbox.mounts``: exists, resolved inside an allowed root, nothing denied, write only to the
task's own worktree, none for analysis tasks) and adds what every container gets: a non-root user
(the owner of the repository, see ``container_user``), read-only root with size-capped tmpfs for
``/tmp`` and the home, no capabilities, ``no-new-privileges``, Docker's default seccomp, memory with
equal swap, CPU and pids limits, an init process, the session's network (never the host's) and the
labels ``orchestrator.managed``/``session``/``worker``/``attempt``. Secrets go only into the
container's environment (``ContainerSpec.secrets``), never into argv, labels or plain env.

A refused mount raises ``UnsafeMount`` (exit 2) naming the path and the rule; any other refused
input raises ``ConfigError`` or ``InvalidIdentifier``, whose messages never echo a secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr, ValidationError

from orchestrator.config import LimitSettings, Settings
from orchestrator.errors import ConfigError
from orchestrator.log import get_logger
from orchestrator.paths import validate_session_id, validate_worker_name
from orchestrator.runtime.protocol import ATTEMPT_LABEL, MANAGED_LABEL, SESSION_LABEL, WORKER_LABEL
from orchestrator.runtime.spec import ContainerSpec, TmpfsSpec, parse_size
from sandbox.mounts import (
    MountRequest,
    Refusal,
    SandboxRoots,
    TaskMode,
    check_mount,
    check_mounts,
    refusal_of,
    resolve_allowed,
)
from sandbox.profiles import BASE_ENV, HOME, HOME_MODE, TMP, TMP_MODE, WORKDIR

__all__ = [
    "FALLBACK_UID",
    "MountRequest",
    "Refusal",
    "SandboxRoots",
    "TaskMode",
    "WorkerRequest",
    "build_spec",
    "check_mount",
    "check_mounts",
    "container_name",
    "container_user",
    "refusal_of",
    "resolve_allowed",
]

log = get_logger(__name__)
FALLBACK_UID = 1000  # the agent user of the images, when the repository belongs to root
TASK_LABEL = "orchestrator.task"
AGENT_LABEL = "orchestrator.agent"


@dataclass(frozen=True, slots=True)
class WorkerRequest:
    """What one container of a worker needs; ``build_spec`` decides whether and how it runs."""

    image: str
    argv: Sequence[str]
    session_id: str
    worker: str
    attempt: int
    task: TaskMode
    mounts: Sequence[MountRequest]
    roots: SandboxRoots
    user: tuple[int, int]
    limits: LimitSettings = field(default_factory=LimitSettings)
    network: str = "none"
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, SecretStr] = field(default_factory=dict)
    task_id: str | None = None
    agent: str | None = None
    memory_bytes: int | None = None
    workdir: str = WORKDIR


def container_user(repo: Path, settings: Settings) -> tuple[int, int]:
    """The uid/gid containers run as: the configured one, else the repository's owner.

    Never root: a root-owned repository (CI, a root shell) gives uid/gid 1000, the images' agent
    user, and the orchestrator must hand the task's worktree to that uid (``gitwork`` does).
    """
    if settings.uid is not None or settings.gid is not None:
        uid = settings.uid if settings.uid is not None else FALLBACK_UID
        gid = settings.gid if settings.gid is not None else uid
        if uid == 0 or gid == 0:
            raise ConfigError(
                f"ORCH_UID/ORCH_GID {uid}:{gid} is root: containers never run as root; pick another"
            )
        return uid, gid
    try:
        info = repo.stat()
    except OSError as err:
        raise ConfigError(
            f"cannot read the owner of repository {str(repo)!r} ({err}); check the path"
        ) from err
    if info.st_uid == 0:
        log.info("root_owned_repository", repo=str(repo), uid=FALLBACK_UID)
        return FALLBACK_UID, FALLBACK_UID
    return info.st_uid, info.st_gid or info.st_uid


def container_name(session_id: str, worker: str, attempt: int) -> str:
    """``orch-<session>-<worker>-<attempt>``: unique per attempt, readable in ``docker ps``."""
    return f"orch-{session_id}-{worker}-{attempt}"


def _memory(request: WorkerRequest) -> int:
    if request.memory_bytes is not None:
        return request.memory_bytes
    try:
        return parse_size(request.limits.memory)
    except ValueError as err:
        raise ConfigError(f"ORCH_LIMITS__MEMORY: {err}") from None


def build_spec(request: WorkerRequest) -> ContainerSpec:
    """The hardened ``ContainerSpec`` for ``request``; ``UnsafeMount``/``ConfigError`` if refused."""
    session_id = validate_session_id(request.session_id)
    worker = validate_worker_name(request.worker)
    if not isinstance(request.attempt, int) or request.attempt < 1:
        raise ConfigError(f"attempt {request.attempt!r} must be a whole number >= 1")
    if request.task not in ("read-only", "write"):
        raise ConfigError(f"task mode {request.task!r} must be 'read-only' or 'write'")
    mounts = check_mounts(request.mounts, request.roots, request.task)
    uid, gid = request.user
    labels = {
        MANAGED_LABEL: "true",
        SESSION_LABEL: session_id,
        WORKER_LABEL: worker,
        ATTEMPT_LABEL: str(request.attempt),
    }
    if request.task_id is not None:
        labels[TASK_LABEL] = request.task_id
    if request.agent is not None:
        labels[AGENT_LABEL] = request.agent
    limits = request.limits
    try:
        return ContainerSpec(
            image=request.image, argv=tuple(request.argv), env={**BASE_ENV, **request.env},
            secrets=dict(request.secrets), user=f"{uid}:{gid}", workdir=request.workdir, mounts=mounts,
            tmpfs=(
                TmpfsSpec(target=TMP, size=limits.tmp_size, mode=TMP_MODE),
                TmpfsSpec(target=HOME, size=limits.home_size, uid=uid, gid=gid, mode=HOME_MODE),
            ),
            memory_bytes=_memory(request), nano_cpus=int(limits.cpus * 1e9), pids_limit=limits.pids,
            network=request.network, labels=labels, name=container_name(session_id, worker, request.attempt),
        )  # fmt: skip
    except ValidationError as err:
        # Without the input values: they may hold the very secret that was misplaced.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"refused container spec for worker {worker}: {problems}") from None
