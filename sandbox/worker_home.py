"""A worker's own folder on the host, ``workspace/<session>/homes/<worker>/``: what its CLI reads and keeps.

- ``files/``: the read-only config files the CLI reads (``CommandSpec.files``), each written under
  a folder named by its container path and bind-mounted read-only at that path (under ``/etc``);
- ``state/<n>/``: the CLI's own state (``CommandSpec.state_dirs``: its session log, which
  ``--resume`` reads), mounted read-write and kept between the attempts of the worker — a copy of
  the agent's login folder starts it when the agent logs in that way. Never shared between workers
  and never inside a task's clone (what a worker leaves there would be merged).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from orchestrator.agents.base import CommandSpec
from orchestrator.paths import SessionPaths
from sandbox.mounts import MountRequest


@dataclass(frozen=True, slots=True)
class WorkerHome:
    """The folder of worker ``worker`` in session ``paths`` (see the module docstring)."""

    paths: SessionPaths
    worker: str

    @property
    def root(self) -> Path:
        return self.paths.home(self.worker)

    @property
    def state(self) -> Path:
        """The parent of the worker's CLI-state folders: the one place its container may write here."""
        return self.root / "state"

    def mounts(
        self, command: CommandSpec, *, login: Path | None, user: tuple[int, int]
    ) -> list[MountRequest]:
        """Writes ``command``'s config files and makes its state folders; their mounts, files first.

        ``login`` (the agent's login folder, if it logs in that way) is copied into the state folder
        the CLI expects it in, once, when that folder is made. Made folders get ``user`` when we are
        root, so the container's uid can write in them.
        """
        mounts: list[MountRequest] = []
        for target, content in command.files.items():
            host = self.root / "files" / hashlib.sha256(target.encode()).hexdigest()[:16] / Path(target).name
            _write(host, content)
            mounts.append(MountRequest(str(host), "ro", target))
        for index, target in enumerate(command.state_dirs):
            host = self.state / str(index)
            if not host.exists():
                _make_state(host, login if command.login_dir == target else None, user)
            mounts.append(MountRequest(str(host), "rw", target))
        return mounts

    def transcripts(self, command: CommandSpec) -> list[Path]:
        """Host paths of the CLI's session logs (``transcript_glob`` inside one of its state dirs)."""
        pattern = command.transcript_glob or ""
        for index, target in enumerate(command.state_dirs):
            prefix = target.rstrip("/") + "/"
            if pattern.startswith(prefix):
                return sorted((self.state / str(index)).glob(pattern[len(prefix) :]))
        return []


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != content:
        path.write_bytes(content)
        path.chmod(0o644)


def _make_state(host: Path, login: Path | None, user: tuple[int, int]) -> None:
    if login is not None and login.is_dir():
        shutil.copytree(login, host, symlinks=False)
    else:
        host.mkdir(parents=True)
    if os.geteuid() == 0:
        uid, gid = user
        for path in [host, *host.rglob("*")]:
            os.lchown(path, uid, gid)
