"""``KubernetesRuntime``: the ``Runtime`` on a Kubernetes cluster, through the official ``kubernetes`` client.

One bare Pod per container (plus a Secret for its environment secrets), not a Job: the orchestrator
is the controller. Retries, attempts and timeouts are its recovery policy's decisions, and ``stop``
must end a container with the caller's grace period. A Job controller would be a second controller
whose own retries, replacement pods and deletion grace would work against both; what a Job adds
(``ttlSecondsAfterFinished``) the orchestrator's clean-up by label already does. It uses the
client's asyncio flavour (``kubernetes.aio``), so it needs no threads. The pod is built by
``k8s_manifests`` (hardening mapping and refusals), read by ``k8s_status``, followed by ``k8s_logs``.

Where it differs from ``DockerRuntime`` (``deploy/kubernetes/README.md`` says the same):

- ``pause``/``unpause`` raise ``RuntimeFailure``: Kubernetes cannot freeze a pod. ``supports_pause``
  is False, so a review that would pause a worker stops it instead.
- ``stream``: the API server merges stdout and stderr, so every line comes as ``stdout``, unless
  ``split_log_streams`` says the server takes the ``stream`` parameter (feature gate
  ``PodLogsQuerySplitStreams``); then the two are followed apart, as on Docker. Lines longer than
  the kubelet's 16 KiB are not rejoined.
- ``stop``/``kill`` delete the pod with the grace period (``kill``: 1 s, the shortest that still lets
  the kubelet end the container; 0 would drop the API object while the container may still run).
  The pod and its output are then gone from the cluster: the exit seen on the way is kept in this
  process, so ``wait``/``inspect``/``find`` still answer, but a new ``stream`` raises
  ``ContainerNotFound``. A pod that ended by itself keeps its output until ``remove``.
- ``start`` returns once the container runs; an image the nodes cannot pull raises ``ImageMissing``.
- networks are NetworkPolicies plus a headless Service each (names resolve); no aliases.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

from kubernetes.aio import client as k8s

from orchestrator.config import KubernetesSettings, Settings
from orchestrator.errors import (
    ConfigError,
    ContainerNotFound,
    ImageMissing,
    OrchestratorError,
    RuntimeFailure,
)
from orchestrator.log import get_logger
from orchestrator.runtime import k8s_manifests as manifests
from orchestrator.runtime.batches import batched
from orchestrator.runtime.k8s_api import load_client, to_dict, vendor_errors
from orchestrator.runtime.k8s_logs import follow, follow_both
from orchestrator.runtime.k8s_networks import MERGE_PATCH, PodNetworks
from orchestrator.runtime.k8s_status import PodView, pod_view
from orchestrator.runtime.runs import as_runs
from orchestrator.runtime.spec import (
    ContainerInfo,
    ContainerSpec,
    ExitInfo,
    LineRun,
    LogLine,
    Request,
    classify_exit,
)

log = get_logger(__name__)
_GONE_TIMEOUT_S = 120.0  # longest wait, after the grace period, for a deleted pod to disappear


@dataclass(frozen=True, slots=True)
class _Ended:
    """What this process saw of a pod that ``stop``/``kill`` deleted."""

    info: ContainerInfo
    exit: ExitInfo


class KubernetesRuntime:
    """``Runtime`` on a Kubernetes cluster; see the module docstring for how it differs from Docker."""

    supports_pause: ClassVar[bool] = False

    def __init__(
        self, config: KubernetesSettings, *, workspace_root: Path, grace_period_s: float = 10.0
    ) -> None:
        """``workspace_root``: where this process sees the workspace PVC (mount sources live under it)."""
        manifests.check_config(config)
        self.config = config
        self.root = PurePosixPath(workspace_root.resolve())
        self.grace_period_s = grace_period_s
        self._api: k8s.ApiClient | None = None
        self._lock = asyncio.Lock()
        self._requested: dict[str, Request] = {}
        self._ended: dict[str, _Ended] = {}
        self._ending: dict[str, asyncio.Event] = {}
        self.networks = PodNetworks(config, self._client)

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesRuntime:
        config = settings.kubernetes
        root = config.workspace_root or settings.workspace
        return cls(config, workspace_root=root, grace_period_s=settings.grace_period_s)

    async def __aenter__(self) -> KubernetesRuntime:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def namespace(self) -> str:
        return self.config.namespace

    async def _client(self) -> k8s.ApiClient:
        async with self._lock:
            if self._api is None:
                self._api = await load_client(self.config)
            return self._api

    async def _core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(await self._client())

    async def _read(self, pod: str) -> PodView:
        core = await self._core()
        with vendor_errors(f"read pod {pod}"):  # a malformed answer too: RuntimeFailure, not a crash
            found = await core.read_namespaced_pod(pod, self.namespace)
            return pod_view(to_dict(core.api_client, found))

    # -- Runtime -----------------------------------------------------------------------------
    async def ping(self) -> None:
        core = await self._core()
        with vendor_errors(f"list pods in namespace {self.namespace!r}"):
            await core.list_namespaced_pod(self.namespace, limit=1)

    async def start(self, spec: ContainerSpec) -> str:
        name = manifests.dns_label(spec.name) if spec.name else f"orch-{secrets.token_hex(6)}"
        # The pod first: a mount outside the workspace is the caller's to fix, whatever the cluster.
        body = manifests.pod_manifest(
            spec, name=name, config=self.config, root=self.root, grace_s=self.grace_period_s
        )
        refused = manifests.refusals(spec, self.config)
        if refused:
            raise ConfigError(f"refused to start {name} on Kubernetes: " + "; ".join(refused))
        await self.networks.check(spec.network)
        await self.networks.ensure_default_deny()
        core = await self._core()
        if spec.secrets:
            await self._create_secret(core, spec, name)
        created = False  # never clean up a pod of that name that this call did not create
        try:
            uid = await self._create_pod(core, name, body, spec.image)
            created = True
            if spec.secrets:
                with vendor_errors(f"make pod {name} the owner of its secret"):
                    patch = manifests.owner_patch(name, uid)
                    await core.patch_namespaced_secret(
                        manifests.secret_name(name), self.namespace, patch, _content_type=MERGE_PATCH
                    )
            await self._until_running(name, spec.image)
        except BaseException:
            with contextlib.suppress(OrchestratorError):  # best effort: the first error is what matters
                if created:
                    await self._delete(name, 1)
                if spec.secrets:
                    await self._delete_secret(name)
            raise
        log.info("pod_started", pod=name, image=spec.image, namespace=self.namespace)
        return name

    async def _create_pod(self, core: k8s.CoreV1Api, name: str, body: dict[str, object], image: str) -> str:
        with vendor_errors(f"create pod {name} from image {image!r}"):
            try:
                created = await core.create_namespaced_pod(self.namespace, k8s.V1Pod.model_validate(body))
            except k8s.ApiException as err:
                if err.status == 409:
                    raise RuntimeFailure(
                        f"pod name {name!r} is already in use in namespace {self.namespace!r}; remove that "
                        "container first"
                    ) from err
                raise
            return pod_view(to_dict(core.api_client, created)).metadata.uid

    async def _create_secret(self, core: k8s.CoreV1Api, spec: ContainerSpec, name: str) -> None:
        secret = k8s.V1Secret.model_validate(manifests.secret_manifest(spec, pod=name, config=self.config))
        with vendor_errors(f"create the secret of pod {name}"):
            try:
                await core.create_namespaced_secret(self.namespace, secret)
                return
            except k8s.ApiException as err:
                if err.status != 409:
                    raise
        # A Secret without its pod is left over from a start that died half-way: replace it.
        with contextlib.suppress(ContainerNotFound):
            await self._read(name)
            raise RuntimeFailure(
                f"pod name {name!r} is already in use in namespace {self.namespace!r}; remove that container first"
            )
        await self._delete_secret(name)
        with vendor_errors(f"create the secret of pod {name}"):
            await core.create_namespaced_secret(self.namespace, secret)

    async def _until_running(self, name: str, image: str) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        while True:
            view = await self._read(name)
            if view.state.running is not None or view.terminal:
                return
            problem = view.start_problem()
            if problem is not None and problem[0] == "image":
                raise ImageMissing(
                    f"image {image!r} cannot be pulled by the cluster's nodes ({problem[1]}); push it to a "
                    "registry they reach or load it on every node (kind load, k3s ctr images import)"
                )
            if problem is not None:
                raise RuntimeFailure(f"pod {name} cannot start its container ({problem[1]})")
            if time.monotonic() >= deadline:
                raise RuntimeFailure(
                    f"pod {name} still does not run after {self.config.start_timeout_s:g} s "
                    f"({view.pending_detail()}); raise ORCH_KUBERNETES__START_TIMEOUT_S or free capacity"
                )
            await asyncio.sleep(self.config.poll_interval_s)

    async def find(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        core = await self._core()
        with vendor_errors(f"list pods in namespace {self.namespace!r}"):
            found = await core.list_namespaced_pod(self.namespace, label_selector=manifests.selector(labels))
            views = [pod_view(item) for item in to_dict(core.api_client, found).get("items") or []]
        views.sort(
            key=lambda v: (v.metadata.creation_timestamp is None, v.metadata.creation_timestamp, v.name)
        )
        infos = [v.info() for v in views if _carries(v.labels, labels)]
        listed = {info.id for info in infos}
        infos += [
            e.info for n, e in self._ended.items() if n not in listed and _carries(e.info.labels, labels)
        ]
        return infos

    async def inspect(self, container_id: str) -> ContainerInfo:
        ended = self._ended.get(container_id)
        if ended is not None:
            return ended.info
        return (await self._read(container_id)).info()

    async def stream(self, container_id: str, since_ns: int | None = None) -> AsyncIterator[LogLine]:
        if container_id in self._ended:
            raise ContainerNotFound(
                f"pod {container_id} was stopped and deleted, and its output with it: on Kubernetes read "
                "a container's output while it runs"
            )
        await self._read(container_id)  # ContainerNotFound now, not from a follow later
        core = await self._core()
        retry_s = self.config.poll_interval_s

        async def ended() -> bool | None:
            try:
                return (await self._read(container_id)).terminal
            except ContainerNotFound:
                return None

        if self.config.split_log_streams:
            lines = follow_both(
                core, self.namespace, container_id, ended=ended, since_ns=since_ns, retry_s=retry_s
            )
        else:
            lines = follow(
                core, self.namespace, container_id, ended=ended, since_ns=since_ns, retry_s=retry_s
            )
        try:
            async for line in lines:
                yield line
        finally:
            await lines.aclose()

    def stream_batches(self, container_id: str, since_ns: int | None = None) -> AsyncIterator[list[LogLine]]:
        """``stream``'s lines in batches of what has been read when asked (``batches.batched``)."""
        return batched(self.stream(container_id, since_ns))

    def stream_runs(self, container_id: str, since_ns: int | None = None) -> AsyncIterator[list[LineRun]]:
        """``stream_batches`` as runs (``runs.as_runs``)."""
        return as_runs(self.stream_batches(container_id, since_ns))

    async def wait(self, container_id: str, timeout_s: float | None = None) -> ExitInfo:
        try:
            async with asyncio.timeout(timeout_s):
                return await self._wait(container_id)
        except TimeoutError:
            raise TimeoutError(f"pod {container_id} still runs after {timeout_s} s") from None

    async def _wait(self, pod: str) -> ExitInfo:
        while True:
            ended = self._ended.get(pod)
            if ended is not None:
                return ended.exit
            try:
                view = await self._read(pod)
            except ContainerNotFound:
                ending = self._ending.get(pod)
                if ending is None:
                    raise
                await ending.wait()  # deleted by our own stop, which records the exit
                continue
            found = view.exit(self._requested.get(pod))
            if found is not None:
                return found
            await asyncio.sleep(self.config.poll_interval_s)

    async def pause(self, container_id: str) -> None:
        raise RuntimeFailure(
            f"cannot pause pod {container_id}: Kubernetes has no way to freeze a pod's processes "
            "(KubernetesRuntime.supports_pause is False); stop the worker instead"
        )

    async def unpause(self, container_id: str) -> None:
        raise RuntimeFailure(
            f"cannot unpause pod {container_id}: Kubernetes never pauses a pod (KubernetesRuntime.supports_pause "
            "is False)"
        )

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        await self._end(container_id, max(1, math.ceil(grace_s)), "stop")

    async def kill(self, container_id: str) -> None:
        await self._end(container_id, 1, "kill")

    async def _end(self, pod: str, grace_s: int, request: Request) -> None:
        if pod in self._ended:
            return
        view = await self._read(pod)
        if view.terminal:
            return  # it ended by itself: a no-op, and its record stays until remove
        self._requested.setdefault(pod, request)
        ending = self._ending.setdefault(pod, asyncio.Event())
        try:
            last = await self._delete_and_watch(pod, grace_s, view)
            requested = self._requested.get(pod)
            exit_info = last.exit(requested) or ExitInfo(
                exit_code=None, reason=classify_exit(None, False, requested),
                error="the pod was deleted before the kubelet reported its exit code",
            )  # fmt: skip
            update = {
                "status": "exited",
                "exit_code": exit_info.exit_code,
                "oom_killed": exit_info.oom_killed,
            }
            self._ended[pod] = _Ended(last.info().model_copy(update=update), exit_info)
            log.info("pod_ended", pod=pod, request=request, grace_s=grace_s, exit_code=exit_info.exit_code)
        finally:
            ending.set()
            self._ending.pop(pod, None)

    async def _delete_and_watch(self, pod: str, grace_s: int, last: PodView) -> PodView:
        """Delete ``pod`` with ``grace_s`` and return the last state seen before it disappeared."""
        if not await self._delete(pod, grace_s):
            return last
        deadline = time.monotonic() + grace_s + _GONE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                last = await self._read(pod)
            except ContainerNotFound:
                return last
            await asyncio.sleep(self.config.poll_interval_s)
        raise RuntimeFailure(
            f"pod {pod} is still terminating {grace_s + _GONE_TIMEOUT_S:g} s after its deletion; its node may "
            "be unreachable (kubectl describe pod)"
        )

    async def _delete(self, pod: str, grace_s: int) -> bool:
        """Delete ``pod`` with ``grace_s``; False if it was already gone."""
        core = await self._core()
        try:
            with vendor_errors(f"delete pod {pod}"):
                await core.delete_namespaced_pod(
                    pod, self.namespace, grace_period_seconds=grace_s, propagation_policy="Background"
                )
        except ContainerNotFound:
            return False
        return True

    async def _delete_secret(self, pod: str) -> None:
        core = await self._core()
        with contextlib.suppress(ContainerNotFound), vendor_errors(f"delete the secret of pod {pod}"):
            await core.delete_namespaced_secret(manifests.secret_name(pod), self.namespace)

    async def remove(self, container_id: str) -> None:
        self._ended.pop(container_id, None)
        self._requested.setdefault(container_id, "kill")
        try:
            await self._delete_and_watch(container_id, 1, pod_view({"metadata": {"name": container_id}}))
        finally:
            await self._delete_secret(container_id)
            self._requested.pop(container_id, None)

    async def ensure_network(
        self,
        name: str,
        *,
        internal: bool = True,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> str:
        """A NetworkPolicy and a headless Service stand for the network (``k8s_networks``).

        ``options`` are Docker bridge driver options (the bridge's name, for a host firewall rule):
        a pod network has no bridge of its own, and the NetworkPolicy does that rule's job.
        """
        return await self.networks.ensure(name, internal=internal, labels=labels or {})

    async def connect_network(self, container_id: str, network: str, *, aliases: Sequence[str] = ()) -> None:
        """Put the pod on ``network`` too (its NetworkPolicy now applies to the pod); idempotent.

        The pod keeps the DNS name of its first network only (a pod's subdomain cannot change) and
        cannot get ``aliases`` (a pod has one hostname): asking for them raises ``RuntimeFailure``.
        """
        if aliases:
            raise RuntimeFailure(
                f"cannot give pod {container_id} the extra names {list(aliases)} on network {network!r}: a "
                "Kubernetes pod has one hostname; address it by its name"
            )
        if container_id in self._ended:
            raise RuntimeFailure(
                f"pod {container_id} was stopped and deleted: cannot connect it to {network!r}"
            )
        view = await self._read(container_id)
        await self.networks.join(container_id, view.networks, network)

    async def remove_network(self, name: str) -> None:
        await self.networks.remove(name)

    async def close(self) -> None:
        async with self._lock:
            api, self._api = self._api, None
        if api is not None:
            await api.close()  # type: ignore[no-untyped-call]


def _carries(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())
