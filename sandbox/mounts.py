"""The mount rules of POLICIES.md §1: which host path may be mounted, and how.

A requested mount is allowed only if all of these hold (checked in this order; the first that
fails names the path and the rule in an ``UnsafeMount``):

1. it is a usable absolute path: a non-empty string, no NUL or control character, at most 4096
   characters, no ``..`` component (``garbage``, ``relative``, ``dotdot``);
2. it exists (``missing``);
3. after resolving every symlink it is not a denied path and does not contain one (``denied``,
   ``contains-denied``). Denied: ``/`` and the user's home folder themselves; and ``~/.ssh``,
   ``~/.aws``, ``~/.gnupg``, ``~/.config/gcloud``, ``~/.docker``, ``~/.kube``, ``/etc``,
   ``/proc``, ``/sys``, ``/dev``, ``/boot``, ``/root``, ``/var/run`` (and ``/run``, its target)
   with everything inside them. (``/root`` counts as a home folder, not a subtree, when it *is*
   the user's home: the policy forbids the home itself and its secret folders, not every repository
   in it.) A Docker socket is refused wherever it is: a socket file, anything named ``docker.sock``
   and the configured socket paths (``socket``);
4. after resolving, it lies inside an allowed root: the session's repository, its worktree, the
   session's workspace folder, or a root the user configured (``outside-roots``);
5. a read-write mount lies inside the task's own worktree (``write-not-worktree``), and an
   analysis (read-only) task gets no read-write mount at all (``write-in-analysis``);
6. its container path (given or derived) is absolute, free of ``..``, and not one the container
   needs for itself (``bad-target``); no two mounts share a container path (``conflict``).

The mount that reaches Docker is the *resolved* path, so a symlink swapped in after the check
cannot redirect it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Literal

from orchestrator.errors import UnsafeMount
from orchestrator.runtime.spec import MountSpec
from sandbox.profiles import OWN_TARGETS, RESERVED_TARGETS, WORKDIR

MAX_PATH = 4096
HOME_SECRETS = (".ssh", ".aws", ".gnupg", ".config/gcloud", ".docker", ".kube")
SYSTEM_DENIED = ("/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/var/run", "/run")
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")

Mode = Literal["ro", "rw"]
TaskMode = Literal["read-only", "write"]


class Refusal(StrEnum):
    """Why a mount was refused; the first word of ``UnsafeMount.rule``."""

    GARBAGE = "garbage"
    RELATIVE = "relative"
    DOTDOT = "dotdot"
    MISSING = "missing"
    DENIED = "denied"
    CONTAINS_DENIED = "contains-denied"
    SOCKET = "socket"
    OUTSIDE_ROOTS = "outside-roots"
    WRITE_NOT_WORKTREE = "write-not-worktree"
    WRITE_IN_ANALYSIS = "write-in-analysis"
    BAD_TARGET = "bad-target"
    CONFLICT = "conflict"


def refuse(path: object, refusal: Refusal, detail: str) -> UnsafeMount:
    """An ``UnsafeMount`` whose rule starts with the refusal's name."""
    shown = path if isinstance(path, str) else repr(path)
    return UnsafeMount(shown[:300], f"{refusal.value}: {detail}")


def refusal_of(error: UnsafeMount) -> Refusal:
    """The ``Refusal`` an ``UnsafeMount`` from this module carries."""
    return Refusal(error.rule.split(":", 1)[0])


@dataclass(frozen=True, slots=True)
class MountRequest:
    """A host path the task asks for; ``target`` defaults to a path derived from the roots."""

    path: str
    mode: Mode = "ro"
    target: str | None = None


@dataclass(frozen=True, slots=True)
class SandboxRoots:
    """The places of one session: what may be mounted, and what is denied."""

    repo: Path
    workspace: Path
    worktree: Path | None = None
    extra: tuple[Path, ...] = ()
    home: Path = field(default_factory=Path.home)
    docker_sockets: tuple[Path, ...] = ()
    state: tuple[Path, ...] = ()  # the worker's own CLI-state folders (under the workspace): writable

    def allowed(self) -> list[Path]:
        roots = [self.repo, self.workspace, *self.extra, *self.state]
        if self.worktree is not None:
            roots.append(self.worktree)
        return [Path(os.path.realpath(r)) for r in roots]

    def denied(self) -> tuple[set[Path], set[Path]]:
        """(folders denied themselves, folders denied with everything inside), both resolved."""
        home = Path(os.path.realpath(self.home))
        exact = {Path("/"), home}
        subtree = {home / name for name in HOME_SECRETS}
        subtree |= {Path(p) for p in (*SYSTEM_DENIED, *DOCKER_SOCKETS)} | set(self.docker_sockets)
        subtree |= {Path(os.path.realpath(p)) for p in subtree}
        return exact, subtree - exact


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _check_text(path: object) -> str:
    if not isinstance(path, str) or not path:
        raise refuse(path, Refusal.GARBAGE, "a mount path must be a non-empty string")
    if any(ord(c) < 32 or ord(c) == 127 for c in path) or len(path) > MAX_PATH:
        raise refuse(path, Refusal.GARBAGE, "the path contains NUL or control characters, or is too long")
    if not path.startswith("/"):
        raise refuse(path, Refusal.RELATIVE, "give an absolute host path")
    if ".." in path.split("/"):
        raise refuse(path, Refusal.DOTDOT, "the path contains '..'; give it without '..'")
    return path


def resolve_allowed(path: object, roots: SandboxRoots) -> Path:
    """Rules 1-4: the resolved host path, or ``UnsafeMount``."""
    text = _check_text(path)
    try:
        real = Path(text).resolve(strict=True)
        is_socket = stat.S_ISSOCK(real.stat().st_mode)
    except (OSError, RuntimeError) as err:  # missing, a broken or looping symlink, unreadable
        raise refuse(
            text, Refusal.MISSING, f"the path cannot be found ({type(err).__name__}); create it first"
        ) from None
    shown = "" if str(real) == text else f" (it resolves to {real})"
    exact, subtree = roots.denied()
    for denied in sorted(exact | subtree):
        if real == denied or (denied in subtree and real.is_relative_to(denied)):
            raise refuse(
                text, Refusal.DENIED, f"{denied} is a denied path{shown}; mount a folder of the repository"
            )
    for denied in sorted(exact | subtree):
        if denied.is_relative_to(real):
            raise refuse(
                text,
                Refusal.CONTAINS_DENIED,
                f"it contains the denied path {denied}{shown}; mount a narrower folder",
            )
    if real.name == "docker.sock" or is_socket:
        raise refuse(text, Refusal.SOCKET, f"it is a socket{shown}; the Docker socket is never mounted")
    allowed = roots.allowed()
    if not any(_inside(real, root) for root in allowed):
        places = ", ".join(str(r) for r in allowed)
        raise refuse(
            text,
            Refusal.OUTSIDE_ROOTS,
            f"it lies outside the allowed roots{shown}: {places}; add a root (ORCH_ALLOWED_ROOTS) or mount a path inside them",
        )
    return real  # fmt: skip


def _target_for(real: Path, roots: SandboxRoots) -> str:
    """``/workspace/<rel>`` inside the task's base (worktree, else repository), else ``/mnt/<host path>``."""
    base = Path(os.path.realpath(roots.worktree if roots.worktree is not None else roots.repo))
    if _inside(real, base):
        rel = real.relative_to(base).as_posix()
        return WORKDIR if rel == "." else f"{WORKDIR}/{rel}"
    return f"/mnt{real.as_posix()}"


def _check_target(request: MountRequest, target: str) -> str:
    pure = PurePosixPath(target)
    path = Path(target)
    bad = (
        not target.startswith("/")
        or ".." in pure.parts
        or any(ord(c) < 32 for c in target)
        or any(_inside(path, Path(r)) for r in RESERVED_TARGETS)
        or any(_inside(Path(own), path) and own != WORKDIR for own in OWN_TARGETS)
        or (path != Path(WORKDIR) and _inside(Path(WORKDIR), path))
    )
    if bad:
        raise refuse(
            request.path, Refusal.BAD_TARGET,
            f"container path {target!r} is not usable: give an absolute path, not inside "
            f"{', '.join(RESERVED_TARGETS)} and not one of {', '.join(OWN_TARGETS)} or a folder holding them",
        )  # fmt: skip
    return str(pure)


def check_mount(request: MountRequest, roots: SandboxRoots, task: TaskMode) -> MountSpec:
    """All rules for one request: the ``MountSpec`` to give Docker, or ``UnsafeMount``."""
    if not isinstance(request, MountRequest) or request.mode not in ("ro", "rw"):
        raise refuse(getattr(request, "path", request), Refusal.GARBAGE, "mode must be 'ro' or 'rw'")
    real = resolve_allowed(request.path, roots)
    own_state = any(_inside(real, Path(os.path.realpath(s))) for s in roots.state)
    if request.mode == "rw" and not own_state:
        if task != "write":
            raise refuse(request.path, Refusal.WRITE_IN_ANALYSIS, "an analysis (read-only) task gets no write mount; ask for 'ro'")  # fmt: skip
        worktree = Path(os.path.realpath(roots.worktree)) if roots.worktree is not None else None
        if worktree is None or not _inside(real, worktree):
            raise refuse(request.path, Refusal.WRITE_NOT_WORKTREE, f"write access is only for the task's own worktree ({worktree}); ask for 'ro'")  # fmt: skip
    target = request.target if request.target is not None else _target_for(real, roots)
    if not isinstance(target, str):
        raise refuse(request.path, Refusal.BAD_TARGET, "the container path must be a string")
    return MountSpec(source=str(real), target=_check_target(request, target), read_only=request.mode == "ro")


def check_mounts(
    requests: Iterable[MountRequest], roots: SandboxRoots, task: TaskMode
) -> tuple[MountSpec, ...]:
    """Every request checked; identical duplicates merged; two sources or modes on one path refused."""
    chosen: dict[str, MountSpec] = {}
    for request in requests:
        mount = check_mount(request, roots, task)
        found = chosen.get(mount.target)
        if found is not None and found != mount:
            raise refuse(request.path, Refusal.CONFLICT, f"{mount.target} is already mounted from {found.source} ({'ro' if found.read_only else 'rw'}); ask for each container path once")  # fmt: skip
        chosen[mount.target] = mount
    return tuple(sorted(chosen.values(), key=lambda m: (m.target.count("/"), m.target)))


def writable(mounts: Sequence[MountSpec]) -> list[str]:
    """The host paths mounted read-write."""
    return [m.source for m in mounts if not m.read_only]
