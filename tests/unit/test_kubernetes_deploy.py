"""``deploy/kubernetes``: the Kustomize base is complete, least-privileged and passes its own Pod Security level.

No cluster runs here (``deploy/kubernetes/README.md``), so the manifests are checked against what
the code does: the Role is compared with the requests ``KubernetesRuntime`` really sends to
``FakeKubeApi`` over a worker's whole life, the server's pod with the fake's Pod Security checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from orchestrator.config import KubernetesSettings, Settings
from orchestrator.runtime import FakeProcess
from orchestrator.runtime import k8s_manifests as manifests
from orchestrator.runtime.kubernetes import KubernetesRuntime
from orchestrator.runtime.spec import ContainerSpec, MountSpec
from tests.support.fake_kube_api import FakeKubeApi, Recorded
from tests.support.fake_kube_checks import check_pod

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def every_object() -> list[dict[str, Any]]:
    return [d for name in documents("kustomization.yaml")[0]["resources"] for d in documents(name)]


def find(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in every_object() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_the_kustomization_lists_every_manifest_file() -> None:
    """Nothing in the folder is left out of ``kubectl apply -k``, nothing listed is missing."""
    listed = sorted(documents("kustomization.yaml")[0]["resources"])
    present = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert present == listed


def _permission(request: Recorded) -> tuple[str, str, str]:
    """(API group, resource, verb) an RBAC check sees for ``request``."""
    found = re.fullmatch(
        r"/(?:api/v1|apis/([^/]+)/v1)/namespaces/[^/]+/([^/]+)(/[^/]+)?(/log)?", request.path
    )
    assert found is not None, request.path
    group, resource, item, log = found.group(1) or "", found.group(2), found.group(3), found.group(4)
    verb = {"POST": "create", "PATCH": "patch", "DELETE": "delete"}.get(request.method)
    verb = verb or ("get" if item else "list")
    return group, resource + ("/log" if log else ""), verb


def _granted() -> set[tuple[str, str, str]]:
    role = find("Role", "orchestrator-runtime")
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}  # fmt: skip


async def test_the_role_grants_exactly_what_a_workers_life_asks(tmp_path: Path) -> None:
    """Replay everything the runtime does (ping, networks, start with secrets, follow, wait, find,
    connect, stop, remove) against the fake: every request is allowed by the Role, and the Role
    allows nothing that was not asked."""
    workspace = tmp_path / "workspace"
    (workspace / "s1").mkdir(parents=True)
    async with FakeKubeApi(FakeProcess(lines=["hi"], hang=True)) as api:
        config = KubernetesSettings(kubeconfig=api.kubeconfig(tmp_path), node_pids_limit=256,
                                    network_policy_enforced=True, poll_interval_s=0.02)  # fmt: skip
        async with KubernetesRuntime(config, workspace_root=workspace) as runtime:
            await runtime.ping()
            await runtime.ensure_network("orch-s1", internal=True)
            await runtime.ensure_network("orch-s1", internal=True)
            await runtime.ensure_network("egress", internal=False)
            spec = ContainerSpec(
                image="agent:1", argv=("agent",), user="1000:1000", memory_bytes=64 * 1024**2,
                nano_cpus=10**9, pids_limit=256, network="orch-s1", name="w1",
                secrets={"API_KEY": SecretStr("sk-0123456789")},
                mounts=(MountSpec(source=str(workspace / "s1"), target="/workspace"),),
            )  # fmt: skip
            pod = await runtime.start(spec)
            await runtime.connect_network(pod, "egress")
            lines = runtime.stream(pod)
            assert (await anext(lines)).text == "hi"
            await lines.aclose()
            await runtime.find({"orchestrator.worker": "w1"})
            await runtime.stop(pod, grace_s=1)
            await runtime.wait(pod)
            await runtime.remove(pod)
            await runtime.remove_network("egress")
        asked = {_permission(r) for r in api.requests}
    assert _granted() == asked


def test_the_server_pod_passes_pod_security_restricted() -> None:
    """The namespace enforces ``restricted``; the server's own pod meets it (the fake's checks)."""
    namespace = find("Namespace", "orchestrator")
    template = find("Deployment", "orchestrator-server")["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "server", **template["metadata"]},
           "spec": template["spec"]}  # fmt: skip
    check_pod(pod, "orchestrator")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_default_deny_policy_is_the_one_the_runtime_makes() -> None:
    """Applied by hand or created by the runtime, it is one and the same object."""
    made = manifests.default_deny_policy(KubernetesSettings())
    deployed = find("NetworkPolicy", manifests.DEFAULT_DENY)
    assert (made["spec"], made["metadata"]["labels"]) == (deployed["spec"], deployed["metadata"]["labels"])


def test_the_settings_configmap_holds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key is an ``ORCH_`` setting that validates; the worker account and PVC are the deployed ones."""
    data = find("ConfigMap", "orchestrator-settings")["data"]
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert all(key.startswith("ORCH_") for key in data)
    assert (settings.runtime, str(settings.workspace)) == ("kubernetes", "/data/workspace")
    find("ServiceAccount", settings.kubernetes.service_account)
    find("PersistentVolumeClaim", settings.kubernetes.workspace_pvc)
    mounts = find("Deployment", "orchestrator-server")["spec"]["template"]["spec"]["containers"][0][
        "volumeMounts"
    ]
    assert {"name": "workspace", "mountPath": str(settings.workspace)} in mounts
