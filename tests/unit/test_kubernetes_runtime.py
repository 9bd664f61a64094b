"""``KubernetesRuntime`` with the real ``kubernetes`` client against ``FakeKubeApi``: what it sends, what it does.

The fake records every request, so these tests check the wire: the pod's hardening, resources,
volumes and labels, the Secret and its owner, the log follow's parameters, deletes with grace,
the NetworkPolicies. The contract tests (``tests/contract/test_contract_kubernetes.py``) check the
behaviour shared with Docker; these check what is Kubernetes' own, and the garbage paths.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from orchestrator.config import KubernetesSettings, Settings
from orchestrator.errors import (
    ConfigError,
    ContainerNotFound,
    DockerUnavailable,
    ImageMissing,
    RuntimeFailure,
    UnsafeMount,
)
from orchestrator.runtime import FakeLine, FakeProcess, FakeRuntime, Runtime, make_runtime
from orchestrator.runtime.kubernetes import KubernetesRuntime
from orchestrator.runtime.spec import ContainerSpec, MountSpec, TmpfsSpec
from tests.support.fake_kube_api import FakeKubeApi

PODS = r"/api/v1/namespaces/orchestrator/pods"
POD = PODS + r"/[^/]+"
SECRETS = r"/api/v1/namespaces/orchestrator/secrets"
POLICIES = r"/apis/networking.k8s.io/v1/namespaces/orchestrator/networkpolicies"
KEY = "sk-test-0123456789abcdef"


class Cluster:
    """A fake API server and a ``KubernetesRuntime`` pointed at it through a kubeconfig."""

    def __init__(self, api: FakeKubeApi, runtime: KubernetesRuntime, workspace: Path) -> None:
        self.api, self.runtime, self.workspace = api, runtime, workspace

    def spec(self, **changes: Any) -> ContainerSpec:
        task = self.workspace / "s1" / "clones" / "t1"
        base: dict[str, Any] = {
            "image": "agent:1", "argv": ("agent", "--run"), "user": "1000:1000", "env": {"HOME": "/home/agent"},
            "memory_bytes": 256 * 1024**2, "nano_cpus": 500_000_000, "pids_limit": 128, "name": "orch-s1-w1-1",
            "mounts": (MountSpec(source=str(task), target="/workspace", read_only=False),),
            "tmpfs": (TmpfsSpec(target="/tmp", size="32m"),),
            "labels": {"orchestrator.managed": "true", "orchestrator.session": "S_1", "orchestrator.worker": "w1"},
        }  # fmt: skip
        return ContainerSpec(**{**base, **changes})

    def created_pod(self) -> dict[str, Any]:
        (request,) = self.api.sent("POST", PODS)
        body: dict[str, Any] = request.body
        return body


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, script: Any = None, *, fake: dict[str, Any] | None = None, **config: Any
) -> AsyncIterator[Cluster]:
    workspace = tmp_path / "workspace"
    (workspace / "s1" / "clones" / "t1").mkdir(parents=True)
    async with FakeKubeApi(script, **(fake or {})) as api:
        settings = {"kubeconfig": api.kubeconfig(tmp_path), "node_pids_limit": 128, "network_policy_enforced": True,
                    "poll_interval_s": 0.02, "start_timeout_s": 5.0, **config}  # fmt: skip
        async with KubernetesRuntime(KubernetesSettings(**settings), workspace_root=workspace) as runtime:
            yield Cluster(api, runtime, workspace)


async def test_the_pod_sent_is_hardened_and_the_exact_labels_come_back(tmp_path: Path) -> None:
    """The created pod carries the hardening, Guaranteed resources, the PVC subPath and mapped labels;
    ``find`` by the original labels returns them exactly (they travel in an annotation)."""
    async with cluster(tmp_path, FakeProcess(lines=["done"])) as kube:
        pod_id = await kube.runtime.start(kube.spec())
        await kube.runtime.wait(pod_id, timeout_s=5)
        found = await kube.runtime.find({"orchestrator.session": "S_1"})
        body = kube.created_pod()
        (listing,) = kube.api.sent("GET", PODS)
    container = body["spec"]["containers"][0]
    assert pod_id == "orch-s1-w1-1"
    assert (
        container["securityContext"]["allowPrivilegeEscalation"],
        container["securityContext"]["readOnlyRootFilesystem"],
        container["securityContext"]["capabilities"]["drop"],
    ) == (False, True, ["ALL"])
    assert {"memory": str(256 * 1024**2), "cpu": "500m"} == container["resources"]["limits"]
    assert (container["volumeMounts"][0]) == {
        "name": "workspace",
        "mountPath": "/workspace",
        "subPath": "s1/clones/t1",
        "readOnly": False,
    }
    assert body["metadata"]["labels"]["orchestrator.session"] == "S_1"  # already a valid label value
    assert listing.query["labelSelector"] == "orchestrator.session=S_1"
    expected_labels = {
        "orchestrator.managed": "true",
        "orchestrator.session": "S_1",
        "orchestrator.worker": "w1",
    }
    assert [(pod_id, "exited", 0, expected_labels)] == [
        (i.id, i.status, i.exit_code, i.labels) for i in found
    ]


async def test_a_label_value_kubernetes_refuses_is_mapped_and_still_found_exactly(tmp_path: Path) -> None:
    """A value with characters Kubernetes refuses is mapped (readable + hash) in the pod and the
    selector; ``find`` still filters by the exact original value."""
    odd = "session with spaces/and:colons"
    async with cluster(tmp_path, FakeProcess(hang=True)) as kube:
        pod_id = await kube.runtime.start(kube.spec(labels={"orchestrator.session": odd}))
        found = await kube.runtime.find({"orchestrator.session": odd})
        other = await kube.runtime.find({"orchestrator.session": odd + "!"})
        mapped = kube.created_pod()["metadata"]["labels"]["orchestrator.session"]
    assert mapped.startswith("session-with-spaces-and-colons-")
    assert ([pod_id], {"orchestrator.session": odd}, []) == ([i.id for i in found], found[0].labels, other)


async def test_secrets_travel_in_a_secret_the_pod_owns_never_in_the_pod(tmp_path: Path) -> None:
    """Secret first, then the pod referring to it, then the pod made its owner (merge patch, uid);
    the key is nowhere in the pod; the cluster deletes the Secret with the pod."""
    async with cluster(tmp_path, FakeProcess(hang=True)) as kube:
        pod_id = await kube.runtime.start(kube.spec(secrets={"API_KEY": SecretStr(KEY)}))
        order = [(r.method, r.path.split("/")[-1 if r.method == "POST" else -2])
                 for r in kube.api.requests if r.method in ("POST", "PATCH")]  # fmt: skip
        (secret,) = kube.api.sent("POST", SECRETS)
        (owner,) = kube.api.sent("PATCH", SECRETS + "/orch-s1-w1-1-env")
        uid = kube.api.pod(pod_id).obj["metadata"]["uid"]
        pod_text = json.dumps(kube.created_pod())
        await kube.runtime.stop(pod_id, grace_s=1)
        left = dict(kube.api.objects["secrets"])
    expected_order = [
        ("POST", "networkpolicies"),
        ("POST", "secrets"),
        ("POST", "pods"),
        ("PATCH", "secrets"),
    ]
    expected_owner = [{"apiVersion": "v1", "kind": "Pod", "name": pod_id, "uid": uid}]
    assert expected_order == order
    assert (base64.b64decode(secret.body["data"]["API_KEY"]).decode(), secret.body["immutable"]) == (
        KEY,
        True,
    )
    assert ("application/merge-patch+json", expected_owner) == (
        owner.content_type, owner.body["metadata"]["ownerReferences"])  # fmt: skip
    assert (KEY in pod_text, '"secretKeyRef"' in pod_text) == (False, True)
    assert left == {}


async def test_log_follow_asks_the_agent_container_with_timestamps(tmp_path: Path) -> None:
    """``follow=true&timestamps=true&container=agent``; merged output comes as stdout, in order."""
    script = FakeProcess(lines=["o1", FakeLine("e1", stream="stderr"), "o2"])
    async with cluster(tmp_path, script) as kube:
        pod_id = await kube.runtime.start(kube.spec())
        lines = [(line.stream, line.text) async for line in kube.runtime.stream(pod_id)]
        (follow,) = kube.api.sent("GET", POD + "/log")
    assert follow.query == {"container": "agent", "follow": "true", "timestamps": "true"}
    assert lines == [("stdout", "o1"), ("stdout", "e1"), ("stdout", "o2")]


async def test_with_split_streams_stderr_is_followed_apart(tmp_path: Path) -> None:
    """``split_log_streams``: one follow per stream (``stream=Stdout``/``Stderr``), as Docker keeps them."""
    script = FakeProcess(lines=["o1", FakeLine("e1", stream="stderr"), "o2"])
    async with cluster(tmp_path, script, fake={"split_streams": True}, split_log_streams=True) as kube:
        pod_id = await kube.runtime.start(kube.spec())
        lines = [(line.stream, line.text) async for line in kube.runtime.stream(pod_id)]
        asked = sorted(r.query["stream"] for r in kube.api.sent("GET", POD + "/log"))
    assert asked == ["Stderr", "Stdout"]
    assert [x for x in lines if x[0] == "stdout"] == [("stdout", "o1"), ("stdout", "o2")]
    assert [x for x in lines if x[0] == "stderr"] == [("stderr", "e1")]


async def test_a_follow_that_drops_is_reopened_without_loss_or_repeat(tmp_path: Path) -> None:
    """Twice the server ends the follow after one line while the pod runs: every line arrives once."""
    script = FakeProcess(lines=[FakeLine(f"l{i}", after_s=0.03) for i in range(6)])
    async with cluster(tmp_path, script, fake={"drop_follows": 2, "drop_after_lines": 1}) as kube:
        pod_id = await kube.runtime.start(kube.spec())
        texts = [line.text async for line in kube.runtime.stream(pod_id)]
        follows = len(kube.api.sent("GET", POD + "/log"))
    assert ([f"l{i}" for i in range(6)], 3) == (texts, follows)


async def test_a_last_line_without_newline_comes_once_the_pod_has_ended(tmp_path: Path) -> None:
    """A partial last line is not a line while the pod runs; at its end it is flushed once."""
    async with cluster(tmp_path, FakeProcess(hang=True)) as kube:
        pod_id = await kube.runtime.start(kube.spec())
        reader = asyncio.ensure_future(_texts(kube.runtime, pod_id))
        kube.api.emit(pod_id, "whole")
        kube.api.emit(pod_id, "half", newline=False)
        await asyncio.sleep(0.1)
        kube.api.exit(pod_id, 0)
        texts = await asyncio.wait_for(reader, 5)
    assert texts == ["whole", "half"]


async def _texts(runtime: KubernetesRuntime, pod_id: str) -> list[str]:
    return [line.text async for line in runtime.stream(pod_id)]


async def test_stop_and_kill_delete_with_their_grace_periods(tmp_path: Path) -> None:
    """``stop(2.2)`` deletes with ``gracePeriodSeconds=3`` (rounded up), ``kill`` with 1; in the background."""
    async with cluster(tmp_path, FakeProcess(hang=True)) as kube:
        stopped = await kube.runtime.start(kube.spec(name="a"))
        killed = await kube.runtime.start(kube.spec(name="b"))
        await kube.runtime.stop(stopped, grace_s=2.2)
        await kube.runtime.kill(killed)
        deletes = [(r.path.rsplit("/", 1)[-1], r.query) for r in kube.api.sent("DELETE", POD)]
        exits = [(await kube.runtime.wait(p)).reason for p in (stopped, killed)]
    expected = [("a", {"gracePeriodSeconds": "3", "propagationPolicy": "Background"}),
                ("b", {"gracePeriodSeconds": "1", "propagationPolicy": "Background"})]  # fmt: skip
    assert (expected, ["stopped", "killed"]) == (deletes, exits)


async def test_oom_comes_from_the_terminated_state(tmp_path: Path) -> None:
    """``reason: OOMKilled`` in the container's terminated state is an ``oom`` exit."""
    async with cluster(tmp_path, FakeProcess(oom_killed=True)) as kube:
        exit_info = await kube.runtime.wait(await kube.runtime.start(kube.spec()), timeout_s=5)
    assert (exit_info.exit_code, exit_info.oom_killed, exit_info.reason) == (137, True, "oom")


async def test_networks_are_a_policy_and_a_service_and_pods_join_them(tmp_path: Path) -> None:
    """``ensure_network``: a headless Service and a NetworkPolicy; ``start`` on it adds the pod's
    label and DNS; ``connect_network`` patches a second network in (aliases refused); the
    default-deny policy is created once; ``addresses`` gives the pod IP per network."""
    async with cluster(tmp_path, FakeProcess(hang=True)) as kube:
        await kube.runtime.ensure_network("orch-s1", internal=True, labels={"orchestrator.session": "s1"},
                                          options={"com.docker.network.bridge.name": "orch-br"})  # fmt: skip
        await kube.runtime.ensure_network("egress", internal=False)
        proxy = await kube.runtime.start(kube.spec(name="proxy", network="orch-s1"))
        worker = await kube.runtime.start(kube.spec(name="worker", network="orch-s1"))
        await kube.runtime.connect_network(proxy, "egress")
        await kube.runtime.connect_network(proxy, "egress")
        with pytest.raises(RuntimeFailure, match="one hostname"):
            await kube.runtime.connect_network(worker, "egress", aliases=["proxy"])
        info = await kube.runtime.inspect(proxy)
        policies = [r.body["metadata"]["name"] for r in kube.api.sent("POST", POLICIES)]
        services = list(kube.api.objects["services"])
        labels = kube.api.pod(proxy).obj["metadata"]["labels"]
        await kube.runtime.remove_network("egress")
        await kube.runtime.remove_network("egress")
        left = sorted(name for _, name in kube.api.objects["networkpolicies"])
    assert policies == ["orch-net-orch-s1", "orch-net-egress", "orchestrator-workers-default-deny"]
    assert services == [("orchestrator", "orch-net-orch-s1"), ("orchestrator", "orch-net-egress")]
    assert {k: v for k, v in labels.items() if k.startswith("net.")} == {
        "net.orchestrator/orch-s1": "true",
        "net.orchestrator/egress": "true",
    }
    assert sorted(info.addresses) == ["egress", "orch-s1"]
    assert left == ["orch-net-orch-s1", "orchestrator-workers-default-deny"]


async def test_make_runtime_picks_the_configured_runtime(tmp_path: Path) -> None:
    """``ORCH_RUNTIME=kubernetes`` gives a ``KubernetesRuntime``, docker a ``DockerRuntime``; only the
    former says it cannot pause (``Runtime.supports_pause``)."""
    kube = make_runtime(Settings(_env_file=None, runtime="kubernetes", workspace=tmp_path))  # type: ignore[call-arg]
    docker = make_runtime(Settings(_env_file=None, workspace=tmp_path))  # type: ignore[call-arg]
    try:
        assert (type(kube).__name__, type(docker).__name__) == ("KubernetesRuntime", "DockerRuntime")
        assert (isinstance(kube, Runtime), kube.root) == (True, tmp_path.resolve())  # type: ignore[attr-defined]
        assert (kube.supports_pause, docker.supports_pause, FakeRuntime.supports_pause) == (False, True, True)
    finally:
        await kube.close()
        await docker.close()


# -- garbage ---------------------------------------------------------------------------------


async def test_a_host_path_outside_the_workspace_is_refused_before_any_request(tmp_path: Path) -> None:
    """A mount of a host folder the PVC does not hold: ``UnsafeMount`` naming it; nothing created."""
    async with cluster(tmp_path) as kube:
        with pytest.raises(UnsafeMount, match="only folders inside the workspace volume root"):
            await kube.runtime.start(kube.spec(mounts=(MountSpec(source="/home/user/.aws", target="/x"),)))
        assert (kube.api.sent("POST", PODS), kube.api.sent("POST", SECRETS)) == ([], [])


async def test_an_unenforceable_pids_limit_is_refused_before_any_request(tmp_path: Path) -> None:
    """No declared node pids limit (or a looser one): ``ConfigError`` saying how to enforce it."""
    async with cluster(tmp_path, node_pids_limit=None) as kube:
        with pytest.raises(ConfigError, match="ORCH_KUBERNETES__NODE_PIDS_LIMIT"):
            await kube.runtime.start(kube.spec())
        assert kube.api.sent("POST", PODS) == []


async def test_an_image_the_nodes_cannot_pull_is_image_missing_and_leaves_nothing(tmp_path: Path) -> None:
    """``ErrImagePull``: ``ImageMissing`` (exit 5) with the kubelet's words; pod and Secret deleted."""
    async with cluster(tmp_path, fake={"images": {"agent:1"}}) as kube:
        with pytest.raises(ImageMissing, match="ErrImagePull") as caught:
            await kube.runtime.start(kube.spec(image="agent:missing", secrets={"API_KEY": SecretStr(KEY)}))
        assert (caught.value.exit_code, kube.api.pods, kube.api.objects["secrets"]) == (5, {}, {})


async def test_a_pod_that_never_runs_times_out_with_the_reason(tmp_path: Path) -> None:
    """Still pending after ``start_timeout_s``: ``RuntimeFailure`` naming what it waits for; deleted."""
    async with cluster(tmp_path, fake={"start_delay_s": 30}, start_timeout_s=0.2) as kube:
        with pytest.raises(RuntimeFailure, match=r"ContainerCreating.*START_TIMEOUT_S"):
            await kube.runtime.start(kube.spec())
        assert kube.api.pods == {}


async def test_a_missing_namespace_a_taken_name_and_a_missing_network_are_clear(tmp_path: Path) -> None:
    """Each refusal says what and how to fix it."""
    async with cluster(tmp_path, FakeProcess(hang=True), namespace="elsewhere") as kube:
        with pytest.raises(ConfigError, match="namespace 'elsewhere' does not exist"):
            await kube.runtime.start(kube.spec())
    async with cluster(tmp_path / "2", FakeProcess(hang=True)) as kube:
        first = await kube.runtime.start(kube.spec())
        for secrets in ({}, {"API_KEY": SecretStr(KEY)}):
            with pytest.raises(RuntimeFailure, match="already in use"):
                await kube.runtime.start(kube.spec(secrets=secrets))
        assert (await kube.runtime.inspect(first)).running, (
            "a refused twin must not take the first pod with it"
        )
        with pytest.raises(RuntimeFailure, match="network 'nowhere' not found"):
            await kube.runtime.start(kube.spec(name="other", network="nowhere"))


async def test_a_secret_left_by_a_start_that_died_is_replaced(tmp_path: Path) -> None:
    """A Secret without its pod (a crash between the two requests) does not block the next start."""
    async with cluster(tmp_path, FakeProcess(hang=True)) as kube:
        kube.api.objects["secrets"][("orchestrator", "orch-s1-w1-1-env")] = {
            "metadata": {"name": "orch-s1-w1-1-env"}
        }
        pod_id = await kube.runtime.start(kube.spec(secrets={"API_KEY": SecretStr(KEY)}))
        secret = kube.api.objects["secrets"][("orchestrator", "orch-s1-w1-1-env")]
    assert (pod_id, KEY) == ("orch-s1-w1-1", base64.b64decode(secret["data"]["API_KEY"]).decode())


async def test_unknown_pods_are_container_not_found(tmp_path: Path) -> None:
    """inspect, stream, wait, stop, kill and connect on a pod that does not exist: ``ContainerNotFound``."""
    async with cluster(tmp_path) as kube:
        for call in (
            kube.runtime.inspect("ghost"), kube.runtime.wait("ghost"), kube.runtime.stop("ghost"),
            kube.runtime.kill("ghost"), kube.runtime.connect_network("ghost", "none"), _texts(kube.runtime, "ghost"),
        ):  # fmt: skip
            with pytest.raises(ContainerNotFound, match="ghost"):
                await call
        await kube.runtime.remove("ghost")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is not a file"),
        ("{not: [valid", "kubeconfig|Invalid|yaml|config"),
        ('{"apiVersion": "v1"}', "context|config"),
    ],
)
async def test_a_bad_kubeconfig_is_a_config_error(tmp_path: Path, text: str, match: str) -> None:
    """Missing, unparsable or empty kubeconfig: ``ConfigError`` (exit 2) pointing at the setting."""
    path = tmp_path / "kubeconfig"
    if text:
        path.write_text(text)
    runtime = KubernetesRuntime(KubernetesSettings(kubeconfig=path), workspace_root=tmp_path)
    with pytest.raises(ConfigError, match=match) as caught:
        await runtime.ping()
    assert (caught.value.exit_code, "ORCH_KUBERNETES__KUBECONFIG" in str(caught.value)) == (2, True)
    await runtime.close()


async def test_no_kubeconfig_outside_a_cluster_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a kubeconfig the in-cluster account is used; outside a pod that is a clear ``ConfigError``."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    runtime = KubernetesRuntime(KubernetesSettings(), workspace_root=tmp_path)
    with pytest.raises(ConfigError, match="ORCH_KUBERNETES__KUBECONFIG"):
        await runtime.ping()
    await runtime.close()


async def test_an_api_server_that_does_not_answer_is_unavailable(tmp_path: Path) -> None:
    """Nothing listens at the kubeconfig's server: ``DockerUnavailable`` (the tree's "engine does not
    answer", exit 5) naming the Kubernetes API server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with FakeKubeApi() as api:
        config = api.kubeconfig(tmp_path)
    config.write_text(config.read_text().replace(api.url, f"http://127.0.0.1:{port}"))
    runtime = KubernetesRuntime(KubernetesSettings(kubeconfig=config), workspace_root=tmp_path)
    with pytest.raises(DockerUnavailable, match="Kubernetes API server does not answer") as caught:
        await runtime.ping()
    assert caught.value.exit_code == 5
    await runtime.close()


async def test_a_refused_token_is_a_runtime_failure_about_credentials(tmp_path: Path) -> None:
    """401 from the API server: ``RuntimeFailure`` saying the client was refused and what to check."""
    async with FakeKubeApi() as api:
        runtime = KubernetesRuntime(KubernetesSettings(kubeconfig=api.kubeconfig(tmp_path, token="wrong")),
                                    workspace_root=tmp_path)  # fmt: skip
        with pytest.raises(RuntimeFailure, match=r"refused this client.*RBAC"):
            await runtime.ping()
        await runtime.close()


async def test_a_malformed_answer_is_a_runtime_failure_not_a_crash(tmp_path: Path) -> None:
    """A pod object without a name (a broken proxy or server): ``RuntimeFailure`` naming the field."""
    async with cluster(tmp_path, FakeProcess(hang=True)) as kube:
        pod_id = await kube.runtime.start(kube.spec())
        kube.api.pod(pod_id).obj["metadata"].pop("name")
        with pytest.raises(RuntimeFailure, match=r"does not fit the Kubernetes API schema \(metadata\.name"):
            await kube.runtime.inspect(pod_id)
