"""``FakeKubeApi``: a small Kubernetes API server on loopback, to test ``KubernetesRuntime`` with the real client.

It serves the subset the runtime uses (Pods with ``log``, Secrets, Services, NetworkPolicies:
create, read, list by label selector, merge-patch, delete), answers errors as the API server's
``Status`` bodies, and plays the kubelet: a created pod pulls its image (``images`` limits which
exist), waits for the Secrets its env refers to, then runs a ``FakeProcess`` script (the same one
``FakeRuntime`` takes), so its phase, container state and log move as on a cluster. Deleting a
running pod sends the script SIGTERM (exit 143, or 137 after the grace if it ignores SIGTERM),
reports the terminal state, then removes the pod and the Secrets it owns.

Like an API server it refuses what a real one would refuse: invalid names, label keys, label
values and selectors (422/400), a namespace that does not exist (404), a duplicate (409), a bad
bearer token (401), a log of a container still waiting (400), and a pod that violates the Pod
Security Standard ``restricted`` (403), which ``deploy/kubernetes`` enforces on its namespace.
Every request is recorded in ``requests`` for tests to check what the client sent.

    async with FakeKubeApi(FakeProcess(lines=["hi"])) as api:
        runtime = KubernetesRuntime(KubernetesSettings(kubeconfig=api.kubeconfig(tmp_path), ...), ...)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from orchestrator.runtime.fake import FakeLine, FakeProcess
from orchestrator.runtime.spec import StreamName
from tests.support.fake_kube_checks import Invalid, check_pod, check_selector, matches
from tests.support.fake_kube_objects import (
    FakePod,
    LogEntry,
    ObjectRoutes,
    Recorded,
    Store,
    merge,
    now,
    rfc3339_nano,
    status,
)

__all__ = ["CONTAINER", "TOKEN", "FakeKubeApi", "FakePod", "Recorded", "rfc3339_nano"]

CONTAINER = "agent"
TOKEN = "fake-kube-token"
_CORE = "/api/v1/namespaces/{ns}"
_NETWORKING = "/apis/networking.k8s.io/v1/namespaces/{ns}"


Script = FakeProcess | Callable[[dict[str, Any]], FakeProcess]


class FakeKubeApi:
    """A fake API server plus kubelet; see the module docstring."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        namespaces: tuple[str, ...] = ("orchestrator",),
        images: set[str] | None = None,
        split_streams: bool = False,
        drop_follows: int = 0,
        drop_after_lines: int = 1,
        start_delay_s: float = 0.0,
        removal_delay_s: float = 0.05,
    ) -> None:
        """``drop_follows``: how many follows of each pod end early (after ``drop_after_lines``)."""
        self.script: Script = script if script is not None else FakeProcess()
        self.namespaces = set(namespaces)
        self.images = images
        self.split_streams = split_streams
        self.drop_follows = drop_follows
        self.drop_after_lines = drop_after_lines
        self.start_delay_s = start_delay_s
        self.removal_delay_s = removal_delay_s
        self.requests: list[Recorded] = []
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.objects: Store = {
            "secrets": {}, "services": {}, "networkpolicies": {},
        }  # fmt: skip
        self._uids = itertools.count(1)
        self._last_ns = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> FakeKubeApi:
        app = web.Application(middlewares=[self._record, self._auth])
        self._routes(app)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        tasks = [t for p in self.pods.values() for t in (p.kubelet, p.ender) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pod in self.pods.values():
            pod.notify()
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self, folder: Path, *, token: str = TOKEN) -> Path:
        """Write a kubeconfig (JSON is YAML) that points at this server with ``token``."""
        path = folder / "kubeconfig"
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }  # fmt: skip
        path.write_text(json.dumps(config))
        return path

    # -- what tests read and do --------------------------------------------------------------
    def sent(self, method: str, pattern: str) -> list[Recorded]:
        """The recorded requests with ``method`` whose path matches the regex ``pattern``."""
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    def pod(self, name: str, namespace: str = "orchestrator") -> FakePod:
        return self.pods[(namespace, name)]

    def emit(self, name: str, text: str, stream: StreamName = "stdout", *, newline: bool = True) -> None:
        """Print from a running pod now (``newline=False``: a last line without one)."""
        self._append(self.pod(name), text, stream, newline=newline)

    def exit(self, name: str, exit_code: int = 0, *, reason: str | None = None) -> None:
        """End a running pod's container now, as if its process exited."""
        pod = self.pod(name)
        if pod.kubelet is not None:
            pod.kubelet.cancel()
        self._terminate(pod, exit_code, reason)

    # -- plumbing ----------------------------------------------------------------------------
    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(Recorded(request.method, request.path, dict(request.query), body,
                                      request.headers.get("Content-Type", "")))  # fmt: skip
        result: web.StreamResponse = await handler(request)
        return result

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return status(401, "Unauthorized", "Unauthorized")
        namespace = request.match_info.get("ns")
        if namespace is not None and namespace not in self.namespaces:
            return status(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        result: web.StreamResponse = await handler(request)
        return result

    def _routes(self, app: web.Application) -> None:
        add = app.router.add_route
        add("GET", _CORE + "/pods", self._list_pods)
        add("POST", _CORE + "/pods", self._create_pod)
        add("GET", _CORE + "/pods/{name}", self._get_pod)
        add("PATCH", _CORE + "/pods/{name}", self._patch_pod)
        add("DELETE", _CORE + "/pods/{name}", self._delete_pod)
        add("GET", _CORE + "/pods/{name}/log", self._pod_log)
        stored = ObjectRoutes(self.objects, self._meta)
        for prefix, kind in ((_CORE, "secrets"), (_CORE, "services"), (_NETWORKING, "networkpolicies")):
            add("POST", f"{prefix}/{kind}", stored.creator(kind))
            add("GET", f"{prefix}/{kind}/{{name}}", stored.getter(kind))
            add("PATCH", f"{prefix}/{kind}/{{name}}", stored.patcher(kind))
            add("DELETE", f"{prefix}/{kind}/{{name}}", stored.deleter(kind))

    def _meta(self, obj: dict[str, Any], namespace: str) -> None:
        meta = obj.setdefault("metadata", {})
        meta.update(namespace=namespace, uid=f"uid-{next(self._uids):08d}", creationTimestamp=now(),
                    resourceVersion=str(next(self._uids)))  # fmt: skip

    def _time_ns(self) -> int:
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    # -- pods --------------------------------------------------------------------------------
    async def _list_pods(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        try:
            wanted = check_selector(request.query.get("labelSelector", ""))
        except Invalid as err:
            return status(400, "BadRequest", f"unable to parse requirement: {err}")
        items = [p.obj for (ns, _), p in self.pods.items() if ns == namespace and matches(p.obj, wanted)]
        limit = int(request.query.get("limit", "0") or 0)
        items = items[:limit] if limit else items
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    async def _create_pod(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        obj = await request.json()
        name = str((obj.get("metadata") or {}).get("name", ""))
        try:
            check_pod(obj, namespace)
        except Invalid as err:
            code, reason = (403, "Forbidden") if err.forbidden else (422, "Invalid")
            return status(
                code,
                reason,
                f'Pod "{name}" is invalid: {err}' if code == 422 else f'pods "{name}" is forbidden: {err}',
            )
        if (namespace, name) in self.pods:
            return status(409, "AlreadyExists", f'pods "{name}" already exists')
        self._meta(obj, namespace)
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        obj["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                         "containerStatuses": [{"name": CONTAINER, "ready": False, "restartCount": 0,
                                                "image": obj["spec"]["containers"][0]["image"], "imageID": "",
                                                "state": waiting}]}  # fmt: skip
        pod = FakePod(obj)
        self.pods[(namespace, name)] = pod
        pod.kubelet = asyncio.create_task(self._kubelet(pod, namespace))
        return web.json_response(obj, status=201)

    async def _get_pod(self, request: web.Request) -> web.Response:
        pod = self.pods.get((request.match_info["ns"], request.match_info["name"]))
        if pod is None:
            return status(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        return web.json_response(pod.obj)

    async def _patch_pod(self, request: web.Request) -> web.Response:
        pod = self.pods.get((request.match_info["ns"], request.match_info["name"]))
        if pod is None:
            return status(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        patch = await request.json()
        if set(patch) - {"metadata"} or set(patch.get("metadata", {})) - {"labels", "annotations"}:
            return status(422, "Invalid", "the fake patches only metadata.labels and metadata.annotations")
        merged = merge(pod.obj, patch)
        try:
            check_pod({**merged, "status": {}}, request.match_info["ns"], admission=False)
        except Invalid as err:
            return status(422, "Invalid", f'Pod "{pod.name}" is invalid: {err}')
        pod.obj = merged
        return web.json_response(pod.obj)

    async def _delete_pod(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["ns"], request.match_info["name"]
        pod = self.pods.get((namespace, name))
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found')
        grace_raw = request.query.get("gracePeriodSeconds")
        grace = (
            int(grace_raw)
            if grace_raw is not None
            else int(pod.obj["spec"].get("terminationGracePeriodSeconds", 30))
        )
        if pod.ended or "running" not in pod.state:
            if pod.kubelet is not None:
                pod.kubelet.cancel()
            self._remove(namespace, pod)
            return web.json_response(pod.obj)
        meta = pod.obj["metadata"]
        if "deletionTimestamp" not in meta or grace < int(meta["deletionGracePeriodSeconds"]):
            meta.update(deletionTimestamp=now(), deletionGracePeriodSeconds=grace)
            pod.grace_changed.set()
        if pod.ender is None:
            pod.ender = asyncio.create_task(self._end(pod, namespace))
        return web.json_response(pod.obj)

    async def _pod_log(self, request: web.Request) -> web.StreamResponse:
        pod = self.pods.get((request.match_info["ns"], request.match_info["name"]))
        if pod is None:
            return status(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        container = request.query.get("container", CONTAINER)
        if container != CONTAINER:
            return status(400, "BadRequest", f"container {container} is not valid for pod {pod.name}")
        if "waiting" in pod.state:
            reason = pod.state["waiting"].get("reason", "")
            return status(
                400,
                "BadRequest",
                f'container "{CONTAINER}" in pod "{pod.name}" is waiting to start: {reason}',
            )
        wanted = request.query.get("stream", "All") if self.split_streams else "All"
        if wanted not in ("All", "Stdout", "Stderr"):
            return status(422, "Invalid", f"stream: Unsupported value: {wanted!r}")
        following = request.query.get("follow") == "true"
        stamps = request.query.get("timestamps") == "true"
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        index = sent = 0
        drop = following and pod.follows_dropped < self.drop_follows
        while True:
            while index < len(pod.log):
                entry = pod.log[index]
                index += 1
                if wanted != "All" and entry.stream != wanted.lower():
                    continue
                prefix = f"{rfc3339_nano(entry.time_ns)} ".encode() if stamps else b""
                await response.write(prefix + entry.data)
                sent += 1
                if drop and sent >= self.drop_after_lines:
                    pod.follows_dropped += 1
                    await response.write_eof()
                    return response
            if not following or pod.ended or (request.match_info["ns"], pod.name) not in self.pods:
                break
            await pod.changed()
        await response.write_eof()
        return response

    # -- the kubelet -------------------------------------------------------------------------
    async def _kubelet(self, pod: FakePod, namespace: str) -> None:
        await asyncio.sleep(self.start_delay_s)
        container = pod.obj["spec"]["containers"][0]
        image = container["image"]
        if self.images is not None and image not in self.images:
            message = f'Failed to pull image "{image}": pull access denied, repository does not exist'
            self._set_state(pod, {"waiting": {"reason": "ErrImagePull", "message": message}})
            return
        while missing := self._missing_secrets(container, namespace):
            self._set_state(pod, {"waiting": {"reason": "CreateContainerConfigError",
                                              "message": f'secret "{missing}" not found'}})  # fmt: skip
            await asyncio.sleep(0.02)
        process = self.script(pod.obj) if callable(self.script) else self.script
        pod.process = process
        if process.start_error is not None:
            self._set_state(
                pod, {"waiting": {"reason": "RunContainerError", "message": str(process.start_error)}}
            )
            return
        pod.obj["status"]["phase"] = "Running"
        pod.obj["status"]["podIP"] = f"10.0.0.{len(self.pods) % 250 + 1}"
        self._set_state(pod, {"running": {"startedAt": now()}})
        for item in process.lines:
            line = FakeLine(item) if isinstance(item, str) else item
            if line.after_s:
                await asyncio.sleep(line.after_s)
            self._append(pod, line.text, line.stream)
        if process.hang:
            await asyncio.Event().wait()  # until a deletion or ``exit`` cancels this task
        if process.run_s:
            await asyncio.sleep(process.run_s)
        self._terminate(
            pod, 137 if process.oom_killed else process.exit_code, "OOMKilled" if process.oom_killed else None
        )

    def _missing_secrets(self, container: dict[str, Any], namespace: str) -> str | None:
        for variable in container.get("env") or []:
            ref = (variable.get("valueFrom") or {}).get("secretKeyRef")
            if ref is not None:
                secret = self.objects["secrets"].get((namespace, ref["name"]))
                if secret is None or ref["key"] not in (secret.get("data") or {}):
                    return str(ref["name"])
        return None

    def _set_state(self, pod: FakePod, state: dict[str, Any]) -> None:
        pod.obj["status"]["containerStatuses"][0]["state"] = state
        pod.notify()

    def _append(self, pod: FakePod, text: str, stream: StreamName, *, newline: bool = True) -> None:
        if "running" not in pod.state:
            raise AssertionError(f"pod {pod.name} is not running: it cannot print {text!r}")
        data = text.encode() + (b"\n" if newline else b"")
        pod.log.append(LogEntry(self._time_ns(), stream, data))
        pod.notify()

    def _terminate(self, pod: FakePod, exit_code: int, reason: str | None = None) -> None:
        if pod.ended:
            return
        started = pod.state.get("running", {}).get("startedAt", now())
        reason = reason or ("Completed" if exit_code == 0 else "Error")
        terminated = {"exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": now()}
        pod.obj["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        self._set_state(pod, {"terminated": terminated})

    async def _end(self, pod: FakePod, namespace: str) -> None:
        """A graceful deletion: SIGTERM, SIGKILL after the grace, terminal status, then removal."""
        if pod.kubelet is not None:
            pod.kubelet.cancel()
        if pod.process is not None and pod.process.ignore_sigterm:
            while not pod.ended:
                pod.grace_changed.clear()
                grace = int(pod.obj["metadata"]["deletionGracePeriodSeconds"])
                try:
                    await asyncio.wait_for(pod.grace_changed.wait(), grace)
                except TimeoutError:
                    self._terminate(pod, 137)
        self._terminate(pod, 143)
        await asyncio.sleep(self.removal_delay_s)
        self._remove(namespace, pod)

    def _remove(self, namespace: str, pod: FakePod) -> None:
        self.pods.pop((namespace, pod.name), None)
        uid = pod.obj["metadata"]["uid"]
        for key, secret in list(self.objects["secrets"].items()):  # the garbage collector
            if any(o.get("uid") == uid for o in secret["metadata"].get("ownerReferences") or []):
                del self.objects["secrets"][key]
        pod.notify()

    # -- secrets, services, network policies -------------------------------------------------
