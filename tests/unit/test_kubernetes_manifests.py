"""The pure halves of ``KubernetesRuntime``: spec -> pod (``k8s_manifests``), pod -> answers (``k8s_status``)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from orchestrator.config import KubernetesSettings
from orchestrator.errors import ConfigError, UnsafeMount
from orchestrator.runtime import k8s_manifests as manifests
from orchestrator.runtime.k8s_status import pod_view
from orchestrator.runtime.spec import ContainerSpec, MountSpec, TmpfsSpec
from tests.support.fake_kube_checks import Invalid, check_pod, check_selector, valid_label_value, valid_name

ROOT = PurePosixPath("/data/workspace")
ENFORCED = KubernetesSettings(node_pids_limit=128, network_policy_enforced=True)


def make_spec(**changes: Any) -> ContainerSpec:
    base: dict[str, Any] = {
        "image": "meta-orchestrator/claude:abc", "argv": ("claude", "-p", "hi"), "user": "1000:1001",
        "env": {"HOME": "/home/agent"}, "memory_bytes": 512 * 1024**2, "nano_cpus": 1_500_000_000,
        "pids_limit": 256, "name": "orch-s1-w1-1",
        "mounts": (MountSpec(source=f"{ROOT}/s1/clones/t1", target="/workspace", read_only=False),
                   MountSpec(source=f"{ROOT}/s1/context", target="/context")),
        "tmpfs": (TmpfsSpec(target="/tmp", size="256m"), TmpfsSpec(target="/home/agent", size="64m", uid=1000)),
        "labels": {"orchestrator.managed": "true", "orchestrator.session": "s1", "orchestrator.worker": "w1"},
    }  # fmt: skip
    return ContainerSpec(**{**base, **changes})


def pod(spec: ContainerSpec | None = None, config: KubernetesSettings = ENFORCED) -> dict[str, Any]:
    return manifests.pod_manifest(
        spec or make_spec(), name="orch-s1-w1-1", config=config, root=ROOT, grace_s=10
    )


def test_the_pod_expresses_every_docker_hardening_option() -> None:
    """Each row of the mapping table: non-root uid/gid, no capabilities, no privilege escalation,
    RuntimeDefault seccomp (set twice: Kubernetes defaults to Unconfined), read-only root, no token."""
    spec = pod()["spec"]
    container = spec["containers"][0]
    expected_context = {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1001, "privileged": False,
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert expected_context == container["securityContext"]
    expected_pod_context = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1001,
                            "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
    assert expected_pod_context == spec["securityContext"]
    expected_pod = {"restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
                    "hostNetwork": False, "hostPID": False, "hostIPC": False, "shareProcessNamespace": True,
                    "serviceAccountName": "orchestrator-worker", "terminationGracePeriodSeconds": 10}  # fmt: skip
    assert expected_pod == {k: spec[k] for k in expected_pod}
    expected_argv = (["claude", "-p", "hi"], False)  # args, not command: like Docker's Cmd
    assert expected_argv == (container["args"], "command" in container)


def test_limits_equal_requests_so_the_pod_is_guaranteed_and_never_swaps() -> None:
    """Memory in bytes, CPU in millicores rounded down (never more than asked), limits = requests."""
    resources = pod()["spec"]["containers"][0]["resources"]
    assert {"memory": str(512 * 1024**2), "cpu": "1500m"} == resources["limits"] == resources["requests"]
    tiny = pod(make_spec(nano_cpus=10_999_999))["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    assert tiny == "10m"


def test_mounts_are_subpaths_of_the_workspace_pvc_and_tmpfs_are_memory_emptydirs() -> None:
    """A mount under the workspace root becomes a subPath of the PVC; a tmpfs a sized Memory emptyDir."""
    spec = pod()["spec"]
    expected_volumes = [
        {"name": "workspace", "persistentVolumeClaim": {"claimName": "orchestrator-workspace"}},
        {"name": "tmpfs-0", "emptyDir": {"medium": "Memory", "sizeLimit": str(256 * 1024**2)}},
        {"name": "tmpfs-1", "emptyDir": {"medium": "Memory", "sizeLimit": str(64 * 1024**2)}},
    ]
    expected_mounts = [
        {"name": "workspace", "mountPath": "/workspace", "subPath": "s1/clones/t1", "readOnly": False},
        {"name": "workspace", "mountPath": "/context", "subPath": "s1/context", "readOnly": True},
        {"name": "tmpfs-0", "mountPath": "/tmp"},
        {"name": "tmpfs-1", "mountPath": "/home/agent"},
    ]
    assert (expected_volumes, expected_mounts) == (spec["volumes"], spec["containers"][0]["volumeMounts"])


@pytest.mark.parametrize(
    "source",
    ["/home/user/.ssh", "/data/workspace", "/data/workspace-other/s1", "/data", "/etc/passwd"],
)
def test_a_host_path_outside_the_workspace_volume_is_refused(source: str) -> None:
    """Garbage: anything but a folder strictly inside the PVC root is refused, naming the path and the fix."""
    spec = make_spec(mounts=(MountSpec(source=source, target="/workspace"),))
    with pytest.raises(UnsafeMount) as caught:
        pod(spec)
    assert (source, 2) == (caught.value.path, caught.value.exit_code)
    assert "subPaths of PVC 'orchestrator-workspace'" in str(caught.value)
    assert "ORCH_RUNTIME=docker" in str(caught.value)


@pytest.mark.parametrize(
    ("node_limit", "spec_limit", "refused"),
    [
        (None, 256, "a pod spec has no pids field"),  # nobody said the nodes enforce anything
        (512, 256, "lower the kubelet's podPidsLimit to <= 256"),  # enforced, but looser than asked
        (256, 256, None),  # exactly what was asked
        (128, 256, None),  # stricter than asked: the spec's limit holds
    ],
)
def test_the_pids_limit_is_refused_unless_the_nodes_enforce_one_as_strict(
    node_limit: int | None, spec_limit: int, refused: str | None
) -> None:
    """A hardening option that cannot be enforced is refused, never silently dropped."""
    config = KubernetesSettings(node_pids_limit=node_limit, network_policy_enforced=True)
    found = manifests.refusals(make_spec(pids_limit=spec_limit), config)
    assert (refused is None) == (found == [])
    if refused is not None:
        assert refused in found[0]


def test_network_isolation_is_refused_unless_the_cni_is_declared_to_enforce_it() -> None:
    """NetworkPolicy does nothing on a CNI that ignores it: say so instead of starting an open pod."""
    found = manifests.refusals(make_spec(), KubernetesSettings(node_pids_limit=128))
    assert [m[m.index("ORCH") :] for m in found] == ["ORCH_KUBERNETES__NETWORK_POLICY_ENFORCED=true"]


def test_secrets_go_only_to_the_secret_and_the_pod_refers_to_them() -> None:
    """The secret value is base64 in an immutable Secret; the pod env names it by secretKeyRef only."""
    spec = make_spec(secrets={"ANTHROPIC_API_KEY": SecretStr("sk-ant-0123456789")})
    secret = manifests.secret_manifest(spec, pod="orch-s1-w1-1", config=ENFORCED)
    body = pod(spec)
    assert secret["data"] == {"ANTHROPIC_API_KEY": "c2stYW50LTAxMjM0NTY3ODk="}
    assert (secret["immutable"], secret["metadata"]["name"]) == (True, "orch-s1-w1-1-env")
    ref = {
        "name": "ANTHROPIC_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "orch-s1-w1-1-env", "key": "ANTHROPIC_API_KEY"}},
    }
    assert [{"name": "HOME", "value": "/home/agent"}, ref] == body["spec"]["containers"][0]["env"]
    assert "sk-ant" not in repr(body)


@pytest.mark.parametrize(
    ("config", "setting"),
    [
        (KubernetesSettings(namespace="Orchestrator"), "NAMESPACE"),
        (KubernetesSettings(workspace_pvc="ws/../x"), "WORKSPACE_PVC"),
        (KubernetesSettings(service_account=""), "SERVICE_ACCOUNT"),
        (KubernetesSettings(runtime_class="gVisor"), "RUNTIME_CLASS"),
        (KubernetesSettings(cluster_domain="cluster..local"), "CLUSTER_DOMAIN"),
    ],
)
def test_settings_that_are_not_kubernetes_names_are_refused(config: KubernetesSettings, setting: str) -> None:
    """Garbage settings fail at once with the setting's name, not later as an API error."""
    with pytest.raises(ConfigError, match=f"ORCH_KUBERNETES__{setting}"):
        manifests.check_config(config)


def test_a_pod_on_a_network_is_named_in_its_dns_and_labelled_for_its_policy() -> None:
    """On a network: its label (for the NetworkPolicy and Service) and hostname.subdomain search path."""
    spec = pod(make_spec(network="orch-s1-net"))["spec"]
    labels = pod(make_spec(network="orch-s1-net"))["metadata"]["labels"]
    assert (spec["hostname"], spec["subdomain"]) == ("orch-s1-w1-1", "orch-net-orch-s1-net")
    assert spec["dnsConfig"]["searches"] == ["orch-net-orch-s1-net.orchestrator.svc.cluster.local"]
    assert labels["net.orchestrator/orch-s1-net"] == "true"
    assert "hostname" not in pod()["spec"]


def test_an_internal_network_lets_out_only_dns_and_its_own_pods() -> None:
    """Internal: peers and DNS only (the proxy pod is a peer); not internal: any egress."""
    policy = manifests.network_policy("orch-s1-net", internal=True, labels={"orchestrator.session": "s1"},
                                      config=ENFORCED)  # fmt: skip
    peers = {"podSelector": {"matchLabels": {"net.orchestrator/orch-s1-net": "true"}}}
    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert peers["podSelector"] == policy["spec"]["podSelector"]
    assert [{"to": [peers]}, dns_ports] == [policy["spec"]["egress"][0], policy["spec"]["egress"][1]["ports"]]
    assert [{"from": [peers]}] == policy["spec"]["ingress"]
    open_policy = manifests.network_policy("egress", internal=False, labels={}, config=ENFORCED)
    assert open_policy["spec"]["egress"] == [{}]
    deny = manifests.default_deny_policy(ENFORCED)["spec"]
    expected_deny = (
        {"matchLabels": {"app.kubernetes.io/managed-by": "meta-orchestrator"}},
        ["Ingress", "Egress"],
    )
    assert expected_deny == (deny["podSelector"], deny["policyTypes"])


def test_every_pod_passes_api_validation_and_pod_security_restricted() -> None:
    """The fake API server's checks accept our pods, and do refuse one weakened by a single field."""
    body = pod(make_spec(network="orch-s1-net", secrets={"K": SecretStr("value-123456")}))
    check_pod(body, "orchestrator")
    body["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(Invalid, match="allowPrivilegeEscalation != false") as caught:
        check_pod(body, "orchestrator")
    assert caught.value.forbidden


LABEL_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=150)


@given(LABEL_TEXT)
def test_any_value_maps_to_a_valid_label_value_and_valid_ones_stay(value: str) -> None:
    """``label_value`` always gives what the API server accepts; a valid value is kept as it is."""
    mapped = manifests.label_value(value)
    assert valid_label_value(mapped)
    check_selector(f"k={mapped}")
    assert mapped == manifests.label_value(value)
    if valid_label_value(value):
        assert mapped == value


@given(LABEL_TEXT)
def test_any_name_maps_to_a_dns_label(value: str) -> None:
    """Pod, Secret, Service and policy names are DNS-1123 labels whatever the spec's name."""
    name = manifests.dns_label(value)
    assert valid_name(name, label=True)
    assert valid_name(manifests.policy_name(value), label=True)
    assert valid_name(manifests.secret_name(name))


@given(st.lists(LABEL_TEXT, min_size=2, max_size=2, unique=True))
def test_different_values_map_to_different_labels(values: list[str]) -> None:
    """The mapping keeps values apart (a hash of the original is kept when it has to change)."""
    assert manifests.label_value(values[0]) != manifests.label_value(values[1])


def _pod(phase: str, state: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "annotations": {"orchestrator/labels": '{"a": "B_1"}',
                                                        "orchestrator/networks": '["n1"]'}},
            "spec": {"containers": [{"name": "agent", "image": "img"}]},
            "status": {"phase": phase, "podIP": "10.0.0.9", **status,
                       "containerStatuses": [{"name": "agent", "state": state}]}}  # fmt: skip


@pytest.mark.parametrize(
    ("phase", "state", "requested", "expected"),
    [
        (
            "Succeeded",
            {"terminated": {"exitCode": 0, "reason": "Completed"}},
            None,
            (0, False, "finished", ""),
        ),
        ("Failed", {"terminated": {"exitCode": 3, "reason": "Error"}}, None, (3, False, "crashed", "")),
        ("Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, None, (137, True, "oom", "")),
        ("Failed", {"terminated": {"exitCode": 143, "reason": "Error"}}, "stop", (143, False, "stopped", "")),
        ("Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, "kill", (137, True, "oom", "")),
        (
            "Failed",
            {"terminated": {"exitCode": 128, "reason": "StartError", "message": "exec: no such file"}},
            None,
            (128, False, "crashed", "StartError: exec: no such file"),
        ),
        (
            "Failed",
            {"waiting": {"reason": "ContainerCreating"}},
            None,
            (None, False, "crashed", "Evicted: low memory"),
        ),
    ],
)
def test_the_exit_comes_from_the_terminated_state(
    phase: str, state: dict[str, Any], requested: Any, expected: tuple[Any, ...]
) -> None:
    """``reason: OOMKilled`` is oom; what we asked for comes next; then the exit code (table)."""
    view = pod_view(_pod(phase, state, reason="Evicted", message="low memory"))
    found = view.exit(requested)
    assert found is not None
    assert expected == (found.exit_code, found.oom_killed, found.reason, found.error)


@pytest.mark.parametrize(
    ("phase", "state", "status"),
    [
        ("Pending", {"waiting": {"reason": "ContainerCreating"}}, "created"),
        ("Running", {"running": {"startedAt": "2026-01-01T00:00:00Z"}}, "running"),
        ("Running", {"terminated": {"exitCode": 0}}, "exited"),
        ("Failed", {"terminated": {"exitCode": 1}}, "exited"),
        ("Unknown", {}, "dead"),
    ],
)
def test_the_info_is_docker_shaped(phase: str, state: dict[str, Any], status: str) -> None:
    """Phases become Docker statuses; the exact labels come from the annotation; addresses per network."""
    info = pod_view(_pod(phase, state)).info()
    assert (status, {"a": "B_1"}, {"n1": "10.0.0.9"}) == (info.status, info.labels, info.addresses)
    assert pod_view(_pod("Running", {})).exit(None) is None


def test_garbage_annotations_fall_back_to_the_pods_own_labels() -> None:
    """A hand-edited annotation that is not JSON does not crash ``inspect``."""
    raw = _pod("Running", {})
    raw["metadata"]["annotations"] = {"orchestrator/labels": "{not json", "orchestrator/networks": "7"}
    raw["metadata"]["labels"] = {"a": "b"}
    view = pod_view(raw)
    assert (view.labels, view.networks) == ({"a": "b"}, [])


def test_label_keys_kubernetes_cannot_carry_are_refused() -> None:
    """Docker takes label keys Kubernetes does not (too long, ending in a dot): refused with the fix."""
    with pytest.raises(ConfigError, match="rename them"):
        manifests.pod_labels(make_spec(labels={"a" * 64: "x"}))
    with pytest.raises(ConfigError, match="rename them"):
        manifests.pod_labels(make_spec(labels={"orchestrator.": "x"}))
