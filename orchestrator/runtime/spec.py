"""What a runtime is asked to run (``ContainerSpec``) and what it reports back.

A ``ContainerSpec`` is built by ``sandbox.safety`` and nowhere else in production. The hardening is
part of the type: ``read_only_root``, ``init``, ``cap_drop`` and ``security_opt`` have exactly one
allowed value, the user is never root, the network is never the host's, and a secret may travel
only in ``secrets`` (environment), never in argv, labels or plain ``env``. So a runtime cannot be
handed a weaker container, whoever built the spec.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, NamedTuple

from pydantic import Field, SecretStr, field_validator, model_validator

from orchestrator.models.common import Model
from orchestrator.models.events import ExitReason

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NETWORK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
CONTAINER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LABEL_KEY_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
NO_NEW_PRIVILEGES: Final = "no-new-privileges:true"
MIN_SECRET = 6
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
NS_PER_S: Final = 1_000_000_000

StreamName = Literal["stdout", "stderr"]
ContainerStatus = Literal["created", "running", "paused", "restarting", "removing", "exited", "dead"]


def parse_size(value: str) -> int:
    """Bytes in a Docker-style size (``512m``, ``2g``, ``1.5g``, ``1048576``); ``ValueError`` if not one."""
    found = SIZE_RE.fullmatch(value) if isinstance(value, str) else None
    if not found:
        raise ValueError(f"size {value!r} is not a size: write a number with k, m or g (e.g. 2g)")
    amount = float(found.group(1)) * _UNITS[found.group(2).lower()]
    if amount < 1:
        raise ValueError(f"size {value!r} is zero: give at least 1 byte")
    return int(amount)


def _plain_path(value: str, what: str) -> str:
    if not value.startswith("/") or "\x00" in value:
        raise ValueError(f"{what} {value!r} must be an absolute path without NUL bytes")
    if ".." in value.split("/"):
        raise ValueError(f"{what} {value!r} must not contain '..'")
    return value


class MountSpec(Model):
    """A bind mount: a resolved host path at ``target`` in the container."""

    source: str = Field(description="absolute host path, symlinks already resolved")
    target: str = Field(description="absolute path in the container")
    read_only: bool = True

    @field_validator("source", "target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _plain_path(value, "mount path")


class TmpfsSpec(Model):
    """A size-capped tmpfs, ``rw,nosuid,nodev,noexec`` (Docker's defaults), owned by uid/gid if given."""

    target: str
    size: str = Field(description="Docker size, e.g. 256m")
    uid: int | None = Field(default=None, ge=0)
    gid: int | None = Field(default=None, ge=0)
    mode: str = Field(default="1777", pattern=r"^[0-7]{3,4}$")

    @field_validator("target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _plain_path(value, "tmpfs path")

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

    def options(self) -> str:
        """The option string Docker's ``--tmpfs`` takes."""
        parts = ["rw", "nosuid", "nodev", "noexec", f"size={self.size}", f"mode={self.mode}"]
        if self.uid is not None:
            parts.append(f"uid={self.uid}")
        if self.gid is not None:
            parts.append(f"gid={self.gid}")
        return ",".join(parts)


class ContainerSpec(Model):
    """Everything a runtime needs to start one hardened container (see the module docstring)."""

    image: str = Field(min_length=1)
    argv: tuple[str, ...] = Field(min_length=1, description="the command, one item per argument")
    env: dict[str, str] = Field(default_factory=dict, description="plain environment; never a secret")
    secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="environment variables holding secrets; never logged"
    )
    user: str = Field(description="uid:gid, numeric, never 0")
    workdir: str = "/workspace"
    mounts: tuple[MountSpec, ...] = ()
    tmpfs: tuple[TmpfsSpec, ...] = ()
    memory_bytes: int = Field(ge=4 * 1024**2, description="memory limit; swap is the same (no swap)")
    nano_cpus: int = Field(ge=10_000_000, description="CPU limit in billionths of a CPU")
    pids_limit: int = Field(ge=16)
    network: str = Field(default="none", description='"none" or the name of a Docker network')
    labels: dict[str, str] = Field(default_factory=dict)
    name: str | None = None
    read_only_root: Literal[True] = True
    init: Literal[True] = True
    cap_drop: tuple[Literal["ALL"]] = ("ALL",)
    security_opt: tuple[Literal["no-new-privileges:true"]] = (NO_NEW_PRIVILEGES,)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if any(c.isspace() or c == "\x00" for c in value):
            raise ValueError(f"image {value!r} contains whitespace or NUL")
        return value

    @field_validator("argv")
    @classmethod
    def _argv(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any("\x00" in arg for arg in value):
            raise ValueError("an argv item contains a NUL byte")
        return value

    @field_validator("user")
    @classmethod
    def _non_root(cls, value: str) -> str:
        found = re.fullmatch(r"(\d{1,10}):(\d{1,10})", value)
        if not found:
            raise ValueError(f"user {value!r} must be numeric uid:gid")
        if int(found.group(1)) == 0 or int(found.group(2)) == 0:
            raise ValueError(f"user {value!r} is root: containers never run as uid or gid 0")
        return value

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str) -> str:
        return _plain_path(value, "workdir")

    @field_validator("network")
    @classmethod
    def _network(cls, value: str) -> str:
        if value == "host" or not NETWORK_RE.fullmatch(value):
            raise ValueError(f"network {value!r} is not allowed: use 'none' or a network name (never host)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not CONTAINER_NAME_RE.fullmatch(value):
            raise ValueError(f"container name {value!r} must match [A-Za-z0-9][A-Za-z0-9_.-]*")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not LABEL_KEY_RE.fullmatch(key) or "\x00" in item:
                raise ValueError(f"label {key!r}={item!r} is not a valid label")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ContainerSpec:
        for key, item in [*self.env.items(), *((k, "") for k in self.secrets)]:
            if not ENV_NAME_RE.fullmatch(key) or "\x00" in item:
                raise ValueError(f"environment variable {key!r} has an invalid name or a NUL byte")
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"variables {both} are both plain env and secrets: give each once")
        targets = [m.target for m in self.mounts] + [t.target for t in self.tmpfs]
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise ValueError(f"two mounts share the target(s) {dupes}")
        for mount in self.mounts:
            if mount.source.rsplit("/", 1)[-1] == "docker.sock":
                raise ValueError(f"mount {mount.source!r} is a Docker socket: never given to a container")
        self._no_secret_outside_secrets()
        return self

    def _no_secret_outside_secrets(self) -> None:
        values = [s.get_secret_value() for s in self.secrets.values()]
        exposed = [*self.argv, *self.labels.values(), *self.labels, *self.env.values()]
        for secret in values:
            if len(secret) >= MIN_SECRET and any(secret in text for text in exposed):
                raise ValueError(
                    "a secret value appears in argv, labels or plain env: pass it only through `secrets`"
                )

    @property
    def environment(self) -> dict[str, str]:
        """The full environment, secrets included: for the runtime only, never log it."""
        return {**self.env, **{k: v.get_secret_value() for k, v in self.secrets.items()}}

    @property
    def uid(self) -> int:
        return int(self.user.split(":")[0])

    @property
    def gid(self) -> int:
        return int(self.user.split(":")[1])


class ExitInfo(Model):
    """How a container ended."""

    exit_code: int | None = Field(description="None if the runtime could not tell")
    oom_killed: bool = False
    reason: ExitReason = Field(
        description="oom > stopped/killed (asked by us) > finished (exit 0) > crashed (anything else)"
    )
    error: str = Field(default="", description="the runtime's own error text, if any")


class ContainerInfo(Model):
    """What the runtime knows about one container."""

    id: str
    name: str
    image: str
    labels: dict[str, str] = Field(default_factory=dict)
    status: ContainerStatus
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    addresses: dict[str, str] = Field(default_factory=dict, description="network name -> IPv4 address")

    @property
    def running(self) -> bool:
        """True while the container's process exists (running or paused)."""
        return self.status in ("running", "paused", "restarting")


class LogLine(NamedTuple):
    """One line of a container's output, without its newline (a tuple: a flood makes one per line).

    ``time_ns`` is the runtime's own timestamp of the line (for Docker: the daemon's, nanoseconds
    since the epoch); it is the cursor for ``Runtime.stream(since_ns=...)``.
    """

    stream: StreamName
    text: str
    time_ns: int

    @property
    def timestamp(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.time_ns // 1000)  # exact: no float rounding


class LineRun(NamedTuple):
    """Consecutive lines of one stream that share one time: ``LogLine(stream, text, time_ns)`` for
    each of ``texts``, without a tuple per line (a flood is read a chunk at a time; see ``runs``)."""

    stream: StreamName
    texts: list[str]
    time_ns: int


Request = Literal["stop", "kill"]


def classify_exit(exit_code: int | None, oom_killed: bool, requested: Request | None) -> ExitReason:
    """Why a container ended: ``oom`` first, then what we asked for, then its exit code."""
    if oom_killed:
        return "oom"
    if requested == "stop":
        return "stopped"
    if requested == "kill":
        return "killed"
    return "finished" if exit_code == 0 else "crashed"
