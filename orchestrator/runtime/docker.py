"""``DockerRuntime``: the ``Runtime`` on a Docker engine, through docker-py.

This module holds the runtime itself, ``create_kwargs`` (a ``ContainerSpec`` as the hardened
container's create arguments) and the glue between a container's start and its output. Two parts of
it live apart: ``docker_logs`` (``Follower``, reading the stored log) and ``docker_errors``
(``vendor_errors``, docker-py's and requests' exceptions as the orchestrator's). These three are the
only importers of ``docker``.

docker-py blocks, so every call runs in this runtime's own thread pool (not the default executor,
whose few threads long waits would starve), and every reader of output is a thread of its own that
hands runs of lines (``LineRun``) to the event loop through a bounded ``Pipe``. Vendor errors become the
orchestrator's at this boundary (``raise ... from``, through ``vendor_errors``).

Output comes two ways:

- **attach** (``attach.py``), the fast one: ``start`` opens an attach connection between ``create``
  and ``start`` and one thread reads it. The first ``stream``/``stream_batches``/``stream_runs`` of that container
  without ``since_ns`` takes it (``claim``): lines whole up to 1 MiB (longer ones in 1 MiB pieces),
  stamped when received. Until then it keeps the raw bytes; past 10 s or 8 MiB unclaimed it is
  closed and forgotten (the stream then reads the log), so a container nobody reads is never held
  up. While claimed, a slow consumer holds up the container's writes (backpressure). The stream ends
  when the attach does (the container exited), after its last bytes. ``stop``/``kill`` drop an
  unclaimed attach (a claimed one ends with the container), ``remove`` and ``close`` cut any. When
  the engine does not upgrade the connection (an old engine, TLS, an error), ``start`` goes on
  without it.
- **logs** (``docker_logs.Follower``): ``logs(follow=True, timestamps=True)``, two threads (stdout,
  stderr), which read again after a cut without repeating a line. Every other stream reads this
  way: a second one, one with ``since_ns``, one of a container started by another process, one
  whose attach was dropped, and the rest of an attach that broke while the container ran on. The
  daemon stores every line from the container's first byte (the ``local`` driver, set explicitly
  by ``create_kwargs``), so nothing is lost, and its timestamps let a fresh process continue a
  stream where a previous one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import docker
import docker.errors
import docker.utils
import requests.exceptions
from docker.models.containers import _create_container_args
from docker.types import LogConfig, Mount

from orchestrator.errors import DockerUnavailable, ImageMissing, OrchestratorError, RuntimeFailure
from orchestrator.log import get_logger
from orchestrator.runtime.attach import Attached, AttachRefused, open_attach
from orchestrator.runtime.batches import unbatched
from orchestrator.runtime.docker_errors import FIX_ENGINE, vendor_errors
from orchestrator.runtime.docker_logs import Follower
from orchestrator.runtime.lines import TimestampError, parse_timestamp_ns
from orchestrator.runtime.pipe import End, Pipe, handout, keep_after
from orchestrator.runtime.runs import lines_of
from orchestrator.runtime.spec import (
    NS_PER_S,
    ContainerInfo,
    ContainerSpec,
    ExitInfo,
    LineRun,
    LogLine,
    Request,
    StreamName,
    classify_exit,
)

log = get_logger(__name__)
T = TypeVar("T")
_WAIT_CHUNK_S = 5.0  # a cancelled wait frees its thread within this time
_CLAIM_ON_LOOP = 64 * 1024  # kept attach bytes made into lines on the event loop; more go to a thread
_EXIT_AFTER_EOF_S = 2.0  # an attach ends as the process's output closes; its exit is seen soon after
# ``local``, not ``json-file``: json-file stores each 16 KiB fragment as a JSON string, which turns a
# UTF-8 character cut by the fragment boundary into two U+FFFD; ``local`` keeps the bytes.
_LOG_CONFIG = LogConfig(type="local", config={"max-size": "64m", "max-file": "4"})
_NO_TIME = "0001-01-01T00:00:00Z"
_DEFAULT_URL = "unix:///var/run/docker.sock"


def _time(raw: str | None) -> datetime | None:
    if not raw or raw == _NO_TIME:
        return None
    try:
        return datetime.fromtimestamp(parse_timestamp_ns(raw.encode()) / NS_PER_S, tz=UTC)
    except TimestampError:
        return None


def _info(attrs: dict[str, Any]) -> ContainerInfo:
    state = attrs.get("State") or {}
    status = state.get("Status", "dead")
    return ContainerInfo(
        id=attrs["Id"], name=str(attrs.get("Name", "")).lstrip("/"),
        image=(attrs.get("Config") or {}).get("Image", ""), labels=(attrs.get("Config") or {}).get("Labels") or {},
        status=status, exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
        oom_killed=bool(state.get("OOMKilled")), started_at=_time(state.get("StartedAt")),
        finished_at=_time(state.get("FinishedAt")), addresses=_addresses(attrs),
    )  # fmt: skip


def _addresses(attrs: dict[str, Any]) -> dict[str, str]:
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return {name: str(net["IPAddress"]) for name, net in networks.items() if (net or {}).get("IPAddress")}


def create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """docker-py ``containers.create`` keyword arguments for ``spec``: the hardened container."""
    kwargs: dict[str, Any] = {
        "image": spec.image, "command": list(spec.argv), "name": spec.name, "user": spec.user,
        "working_dir": spec.workdir, "environment": spec.environment, "labels": dict(spec.labels),
        "mounts": [Mount(m.target, m.source, type="bind", read_only=m.read_only) for m in spec.mounts],
        "tmpfs": {t.target: t.options() for t in spec.tmpfs},
        "read_only": spec.read_only_root, "cap_drop": list(spec.cap_drop),
        "security_opt": list(spec.security_opt), "privileged": False, "init": spec.init,
        "mem_limit": spec.memory_bytes, "memswap_limit": spec.memory_bytes,
        "nano_cpus": spec.nano_cpus, "pids_limit": spec.pids_limit,
        "detach": True, "tty": False, "stdin_open": False, "use_config_proxy": False,
        "log_config": _LOG_CONFIG,
    }  # fmt: skip
    if spec.network == "none":
        kwargs["network_mode"] = "none"
    else:
        kwargs["network"] = spec.network
        # The embedded DNS of an internal network never answers outside names: fail in 2 s, not 20.
        kwargs["dns_opt"] = ["timeout:1", "attempts:1"]
    return kwargs


def _create(client: docker.DockerClient, kwargs: dict[str, Any]) -> str:
    """``client.containers.create(**kwargs)`` without the inspect of the new container that follows
    it there: the id is all a start needs, and under a burst of starts each call to the engine counts."""
    args = _create_container_args({**kwargs, "version": client.api.api_version})
    return str(client.api.create_container(**args)["Id"])


class DockerRuntime:
    """``Runtime`` on a Docker engine. Use as ``async with DockerRuntime() as runtime:``."""

    supports_pause: ClassVar[bool] = True

    def __init__(self, base_url: str | None = None, *, timeout_s: float = 60.0, threads: int = 32) -> None:
        """``base_url`` like ``unix:///var/run/docker.sock``; None reads ``DOCKER_HOST`` (docker's default)."""
        self._base_url = base_url
        self._timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="docker")
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._requested: dict[str, Request] = {}
        self._closed = False
        self._followers: set[Follower] = set()
        self._engine_url: str | None = None  # for attach; None: attach is not tried (TLS, ssh, ...)
        self._unclaimed: dict[str, Attached] = {}
        self._attached: set[Attached] = set()

    async def __aenter__(self) -> DockerRuntime:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def client(self) -> docker.DockerClient:
        """The docker-py client, made on first use (it asks the engine its API version)."""
        with self._client_lock:
            if self._client is None:
                env = docker.utils.kwargs_from_env()
                url = self._base_url or env.get("base_url") or _DEFAULT_URL
                self._engine_url = url if self._base_url or not env.get("tls") else None
                # docker-py leaks the socket of a failed unix connect: do not try a missing socket.
                if url.startswith("unix://") and not Path(url.removeprefix("unix://")).exists():
                    raise DockerUnavailable(f"no Docker engine socket at {url}; {FIX_ENGINE}")
                with vendor_errors("connect to the Docker engine"):
                    if self._base_url:
                        self._client = docker.DockerClient(
                            base_url=self._base_url, timeout=int(self._timeout_s), max_pool_size=64
                        )
                    else:
                        self._client = docker.from_env(timeout=int(self._timeout_s), max_pool_size=64)
            return self._client

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeFailure("this DockerRuntime was closed; make a new one")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    # -- Runtime -----------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._call(self._ping)

    def _ping(self) -> None:
        with vendor_errors("ping the Docker engine"):
            self.client().ping()

    async def start(self, spec: ContainerSpec) -> str:
        container_id, attached = await self._call(self._start, spec)
        self._sweep()
        if attached is not None:
            self._unclaimed[container_id] = attached
            self._attached.add(attached)
        log.info("container_started", container=container_id[:12], name=spec.name, image=spec.image)
        return container_id

    def _start(self, spec: ContainerSpec) -> tuple[str, Attached | None]:
        action = f"create container {spec.name or ''} from image {spec.image!r}"
        with vendor_errors(action):
            try:
                container_id = _create(self.client(), create_kwargs(spec))
            except docker.errors.ImageNotFound as err:
                raise ImageMissing(
                    f"image {spec.image!r} is not built; run `orchestrate images build`"
                ) from err
            except docker.errors.NotFound as err:  # the network, most often
                raise RuntimeFailure(f"{action}: {err.explanation}; create the network first") from err
        attached = self._attach(container_id)
        try:
            with vendor_errors(f"start container {container_id[:12]}", container_id):
                self.client().api.start(container_id)
        except OrchestratorError:
            if attached is not None:
                attached.close()
            with contextlib.suppress(Exception):  # best effort: the start failure is what matters
                self.client().api.remove_container(container_id, force=True)
            raise
        return container_id, attached

    def _attach(self, container_id: str) -> Attached | None:
        """An attach connection to a created container, reading; None if the engine will not give one."""
        url = self._engine_url
        if url is None:
            return None
        try:
            version = str(self.client().api.api_version)
            sock, head = open_attach(url, version, container_id, self._timeout_s)
        except (OSError, AttachRefused) as err:
            log.debug("attach_unavailable", container=container_id[:12], error=str(err))
            return None
        attached = Attached(container_id, sock, head, functools.partial(self._runs_on, container_id))
        attached.start()
        return attached

    def _runs_on(self, container_id: str, clean: bool) -> bool:
        """After an attach ended: whether the container still runs (then its stored log has the rest)."""
        deadline = time.monotonic() + (_EXIT_AFTER_EOF_S if clean else 0.0)
        while not self._closed and self._inspect(container_id).running:
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.02)
        return False

    def _sweep(self) -> None:
        """Forget attaches past their claim deadline and readers that have ended."""
        for container_id, attached in list(self._unclaimed.items()):
            if not attached.unclaimed:
                attached.drop()
                del self._unclaimed[container_id]
        waiting = set(self._unclaimed.values())
        self._attached = {a for a in self._attached if not a.finished or a in waiting}

    async def find(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return await self._call(self._find, dict(labels))

    def _find(self, labels: dict[str, str]) -> list[ContainerInfo]:
        with vendor_errors("list containers"):
            api = self.client().api
            found = api.containers(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
            infos: list[ContainerInfo] = []
            for summary in sorted(found, key=lambda s: (s.get("Created", 0), s["Id"])):
                with contextlib.suppress(docker.errors.NotFound):  # removed between list and inspect
                    infos.append(_info(api.inspect_container(summary["Id"])))
            return infos

    async def inspect(self, container_id: str) -> ContainerInfo:
        return await self._call(self._inspect, container_id)

    def _inspect(self, container_id: str) -> ContainerInfo:
        with vendor_errors(f"inspect container {container_id[:12]}", container_id):
            return _info(self.client().api.inspect_container(container_id))

    def stream(self, container_id: str, since_ns: int | None = None) -> AsyncGenerator[LogLine, None]:
        return unbatched(self.stream_batches(container_id, since_ns))

    async def stream_batches(
        self, container_id: str, since_ns: int | None = None
    ) -> AsyncGenerator[list[LogLine], None]:
        """The lines of ``stream_runs``, a batch per batch of runs."""
        async with contextlib.aclosing(self.stream_runs(container_id, since_ns)) as batches:
            async for batch in batches:
                yield lines_of(batch)

    async def stream_runs(
        self, container_id: str, since_ns: int | None = None
    ) -> AsyncGenerator[list[LineRun], None]:
        """Batches of at most ``BATCH`` lines; the event loop runs between two batches (``pipe.handout``)."""
        skip: dict[StreamName, int] | None = None
        attached = self._unclaimed.pop(container_id, None) if since_ns is None else None
        if attached is not None:
            pipe = Pipe(asyncio.get_running_loop())
            try:
                if attached.kept <= _CLAIM_ON_LOOP:
                    read = attached.claim(pipe)
                else:  # making lines of megabytes would stall the loop
                    read = await asyncio.to_thread(attached.claim, pipe)
                if read is not None:
                    ends: list[End] = []
                    async for batch in handout(pipe, read, 1, ends):
                        yield batch
                    if ends[0].resume is None:
                        return
                    skip = ends[0].resume  # the connection broke while the container ran on
                    log.info("attach_broke", container=container_id[:12], read=skip)
            finally:
                pipe.close()
                attached.leave()
        async with contextlib.aclosing(self._follow(container_id, since_ns, skip)) as batches:
            async for batch in batches:
                yield batch

    async def _follow(
        self, container_id: str, since_ns: int | None, skip: dict[StreamName, int] | None
    ) -> AsyncGenerator[list[LineRun], None]:
        """The stored log, after ``since_ns``, without the first ``skip[stream]`` lines of each stream."""
        await self.inspect(container_id)  # ContainerNotFound now, not from a thread later
        pipe = Pipe(asyncio.get_running_loop())
        since_s = (since_ns or 0) // NS_PER_S  # the daemon filters by whole seconds; we filter exactly
        followers = [
            Follower(self.client, self._inspect, container_id, name, since_s) for name in ("stdout", "stderr")
        ]
        self._followers.update(followers)
        for follower in followers:
            follower.start(pipe)
        try:
            async for batch in handout(pipe, [], len(followers), [], keep_after(since_ns, skip)):
                yield batch
        finally:
            pipe.close()
            for follower in followers:
                follower.cancel()
            self._followers.difference_update(followers)

    async def wait(self, container_id: str, timeout_s: float | None = None) -> ExitInfo:
        cancelled = threading.Event()
        try:
            return await self._call(self._wait, container_id, timeout_s, cancelled)
        finally:
            cancelled.set()

    def _wait(self, container_id: str, timeout_s: float | None, cancelled: threading.Event) -> ExitInfo:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        api = self.client().api
        while self._inspect(container_id).status not in ("exited", "dead", "created"):
            remaining = _WAIT_CHUNK_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"container {container_id[:12]} still runs after {timeout_s} s")
            if cancelled.is_set():  # nobody awaits the answer any more: free the thread
                raise TimeoutError(f"wait for container {container_id[:12]} was cancelled")
            # A chunk that times out surfaces as a requests error; the next inspect tells a
            # still-running container from an engine that went away.
            with (
                vendor_errors(f"wait for container {container_id[:12]}", container_id),
                contextlib.suppress(requests.exceptions.ConnectionError, requests.exceptions.Timeout),
            ):
                api.wait(container_id, timeout=max(0.05, min(remaining, _WAIT_CHUNK_S)))
        with vendor_errors(f"inspect container {container_id[:12]}", container_id):
            state = api.inspect_container(container_id).get("State") or {}
        exit_code = state.get("ExitCode")
        oom = bool(state.get("OOMKilled"))
        return ExitInfo(
            exit_code=exit_code, oom_killed=oom, error=state.get("Error") or "",
            reason=classify_exit(exit_code, oom, self._requested.get(container_id)),
        )  # fmt: skip

    async def pause(self, container_id: str) -> None:
        await self._call(self._simple, "pause", container_id)

    async def unpause(self, container_id: str) -> None:
        await self._call(self._simple, "unpause", container_id)

    def _simple(self, verb: str, container_id: str) -> None:
        with vendor_errors(f"{verb} container {container_id[:12]}", container_id):
            getattr(self.client().api, verb)(container_id)

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        self._requested.setdefault(container_id, "stop")
        await self._call(self._stop, container_id, grace_s)
        self._drop(container_id)

    def _stop(self, container_id: str, grace_s: float) -> None:
        with vendor_errors(f"stop container {container_id[:12]}", container_id):
            self.client().api.stop(container_id, timeout=max(0, math.ceil(grace_s)))

    async def kill(self, container_id: str) -> None:
        self._requested.setdefault(container_id, "kill")
        await self._call(self._kill, container_id)
        self._drop(container_id)

    def _kill(self, container_id: str) -> None:
        with vendor_errors(f"kill container {container_id[:12]}", container_id):
            try:
                self.client().api.kill(container_id)
            except docker.errors.APIError as err:
                if err.status_code != 409:  # 409: not running, which is what we wanted
                    raise

    async def remove(self, container_id: str) -> None:
        await self._call(self._remove, container_id)
        self._requested.pop(container_id, None)
        self._drop(container_id)
        for attached in self._attached:
            if attached.container_id == container_id:
                attached.interrupt()  # a claimed stream ends with ContainerNotFound, as a logs stream does

    def _remove(self, container_id: str) -> None:
        with vendor_errors(f"remove container {container_id[:12]}", container_id):
            try:
                self.client().api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as err:
                if err.status_code != 409:  # 409: removal already in progress
                    raise

    async def ensure_network(
        self,
        name: str,
        *,
        internal: bool = True,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> str:
        return await self._call(self._ensure_network, name, internal, dict(labels or {}), dict(options or {}))

    def _ensure_network(
        self, name: str, internal: bool, labels: dict[str, str], options: dict[str, str]
    ) -> str:
        networks = self.client().networks
        with vendor_errors(f"create network {name!r}"):
            try:
                found = networks.get(name)
            except docker.errors.NotFound:
                try:
                    found = networks.create(name, driver="bridge", internal=internal, labels=labels,
                                            options=options or None, check_duplicate=True)  # fmt: skip
                except docker.errors.APIError as err:
                    if err.status_code != 409:  # 409: made by someone else meanwhile
                        raise
                    found = networks.get(name)
            if bool(found.attrs.get("Internal")) != internal:
                raise RuntimeFailure(
                    f"network {name!r} exists with internal={not internal}, wanted internal={internal}; "
                    f"remove it (docker network rm {name})"
                )
            return str(found.id)

    async def connect_network(self, container_id: str, network: str, *, aliases: Sequence[str] = ()) -> None:
        await self._call(self._connect_network, container_id, network, list(aliases))

    def _connect_network(self, container_id: str, network: str, aliases: list[str]) -> None:
        action = f"connect container {container_id[:12]} to network {network!r}"
        with vendor_errors(action, container_id):
            api = self.client().api
            if network in _addresses(api.inspect_container(container_id)):
                return
            try:
                api.connect_container_to_network(container_id, network, aliases=aliases or None)
            except docker.errors.NotFound as err:
                raise RuntimeFailure(f"{action}: {err.explanation}; create the network first") from err

    async def remove_network(self, name: str) -> None:
        await self._call(self._remove_network, name)

    def _remove_network(self, name: str) -> None:
        with vendor_errors(f"remove network {name!r}"):
            try:
                self.client().networks.get(name).remove()
            except docker.errors.NotFound:
                return

    def _drop(self, container_id: str) -> None:
        """Forget the container's unclaimed attach: a later stream reads the stored log."""
        attached = self._unclaimed.pop(container_id, None)
        if attached is not None:
            attached.drop()

    async def close(self) -> None:
        """Idempotent. Containers are left alone; open streams end (their readers are closed)."""
        self._closed = True
        for follower in list(self._followers):
            follower.cancel()
        for attached in list(self._attached):
            attached.close()
        self._unclaimed.clear()
        self._attached.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
