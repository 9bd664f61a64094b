"""``ContainerSpec`` -> Kubernetes objects: the pure half of ``KubernetesRuntime``'s requests.

Every Docker hardening option of the spec is expressed in the pod, or the spec is refused:

==========================================  ===========================================================
Docker (``runtime.docker.create_kwargs``)    pod (``pod_manifest``)
==========================================  ===========================================================
``user`` uid:gid (never 0)                  ``runAsUser``/``runAsGroup``, ``runAsNonRoot: true``
``cap_drop=["ALL"]``                        ``capabilities.drop: [ALL]``, ``privileged: false``
``no-new-privileges``                       ``allowPrivilegeEscalation: false``
Docker's default seccomp profile            ``seccompProfile: RuntimeDefault`` (Kubernetes' default is
                                            Unconfined, so it is set explicitly)
``read_only`` root                          ``readOnlyRootFilesystem: true``
``tmpfs`` with a size                       ``emptyDir: {medium: Memory, sizeLimit}``
memory (= swap), ``nano_cpus``              ``limits`` = ``requests``: Guaranteed QoS, which never swaps
``init``                                    ``shareProcessNamespace``: the pause process is PID 1 and
                                            reaps orphans
``pids_limit``                              no pod field: enforced only by the kubelet's node-wide
                                            ``podPidsLimit``, so refused unless that is declared and
                                            at most the spec's limit
``network`` none / a network                NetworkPolicy (default deny, ``network_policy``): refused
                                            unless the CNI is declared to enforce it; names resolve
                                            through a headless Service per network
bind mounts                                 subPaths of the workspace PVC; any other host path refused
``secrets``                                 a per-worker Secret read through ``secretKeyRef``; never a
                                            plain ``env`` value of the pod
never the Docker socket                     ``automountServiceAccountToken: false``, no service links
==========================================  ===========================================================

Recorded gaps: an ``emptyDir`` is mounted without ``noexec``/``nosuid``/``nodev``. ``nosuid`` and
``nodev`` change nothing under ``allowPrivilegeEscalation: false`` and no capabilities; ``noexec``
is lost, as it is on the (writable, executable) worktree under Docker too. Its folder is mode 0777
owned by root, not the tmpfs ``mode``/``uid``: the pod's one user can write it, and no other user
runs in the pod.

Kubernetes names and label values are stricter than Docker's, so ``dns_label`` and ``label_value``
map any value to a valid one (unchanged when already valid, else readable plus a hash); the exact
labels travel in an annotation, which is what ``find`` and ``inspect`` report.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, Final

from orchestrator.config import KubernetesSettings
from orchestrator.errors import ConfigError, UnsafeMount
from orchestrator.runtime.spec import ContainerSpec, parse_size

CONTAINER: Final = "agent"
WORKSPACE_VOLUME: Final = "workspace"
MANAGED_BY: Final = ("app.kubernetes.io/managed-by", "meta-orchestrator")
NETWORK_PREFIX: Final = "net.orchestrator"
LABELS_ANNOTATION: Final = "orchestrator/labels"
NETWORKS_ANNOTATION: Final = "orchestrator/networks"
NETWORK_ANNOTATION: Final = "orchestrator/network"
INTERNAL_ANNOTATION: Final = "orchestrator/internal"
DEFAULT_DENY: Final = "orchestrator-workers-default-deny"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_HASH = 10


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH]


def label_value(value: str) -> str:
    """``value`` as a valid label value: itself if it already is one, else readable part + hash."""
    if _LABEL_VALUE.fullmatch(value):
        return value
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[: 62 - _HASH].strip("-_.")
    return f"{readable}-{_digest(value)}" if readable else _digest(value)


def dns_label(value: str) -> str:
    """``value`` as a DNS-1123 label (pod, Secret and policy names): itself if valid, else + hash."""
    if _DNS_LABEL.fullmatch(value):
        return value
    readable = re.sub(r"[^a-z0-9-]+", "-", value.lower())[: 62 - _HASH].strip("-")
    return f"{readable}-{_digest(value)}" if readable else f"x{_digest(value)}"


def secret_name(pod: str) -> str:
    """The Secret holding the environment secrets of ``pod``."""
    return f"{pod}-env"


def policy_name(network: str) -> str:
    """The NetworkPolicy that stands for the Docker network ``network``."""
    return dns_label(f"orch-net-{network}")


def network_label(network: str) -> str:
    """The label key (value ``"true"``) of the pods on ``network``: a pod may be on several."""
    return f"{NETWORK_PREFIX}/{dns_label(network)}"


def selector(labels: Mapping[str, str]) -> str:
    """An equality label selector matching every one of ``labels`` (their mapped values)."""
    return ",".join(f"{key}={label_value(value)}" for key, value in sorted(labels.items()))


def pod_labels(spec: ContainerSpec) -> dict[str, str]:
    """The pod's labels: the spec's (values mapped), managed-by, and its network's (none for ``none``)."""
    bad = sorted(k for k in spec.labels if not _LABEL_NAME.fullmatch(k))
    if bad:
        raise ConfigError(
            f"label key(s) {bad} cannot be Kubernetes label names (at most 63 characters, ending in "
            "a letter or digit): rename them"
        )
    labels = {key: label_value(value) for key, value in spec.labels.items()}
    labels[MANAGED_BY[0]] = MANAGED_BY[1]
    if spec.network != "none":
        labels[network_label(spec.network)] = "true"
    return labels


def refusals(spec: ContainerSpec, config: KubernetesSettings) -> list[str]:
    """Why ``spec``'s hardening cannot be enforced on this cluster (empty: it can)."""
    found: list[str] = []
    pids = config.node_pids_limit
    if pids is None:
        found.append(
            f"the pids limit {spec.pids_limit} cannot be enforced: a pod spec has no pids field, only "
            f"the kubelet's node-wide podPidsLimit does it; set podPidsLimit <= {spec.pids_limit} on every "
            "node and declare it with ORCH_KUBERNETES__NODE_PIDS_LIMIT"
        )
    elif pids > spec.pids_limit:
        found.append(
            f"the nodes allow {pids} processes per pod (ORCH_KUBERNETES__NODE_PIDS_LIMIT), more than the "
            f"{spec.pids_limit} this container may have: lower the kubelet's podPidsLimit to <= "
            f"{spec.pids_limit} or raise ORCH_LIMITS__PIDS to >= {pids}"
        )
    if not config.network_policy_enforced:
        found.append(
            f"network isolation ({spec.network!r}) is a NetworkPolicy, which only a CNI that enforces "
            "NetworkPolicy (Calico, Cilium, ...) applies; once it does, declare it with "
            "ORCH_KUBERNETES__NETWORK_POLICY_ENFORCED=true"
        )
    return found


def check_config(config: KubernetesSettings) -> None:
    """``ConfigError`` if a name in ``config`` is not a valid Kubernetes name."""
    names = {
        "ORCH_KUBERNETES__NAMESPACE": config.namespace,
        "ORCH_KUBERNETES__WORKSPACE_PVC": config.workspace_pvc,
        "ORCH_KUBERNETES__SERVICE_ACCOUNT": config.service_account,
        "ORCH_KUBERNETES__RUNTIME_CLASS": config.runtime_class or "x",
    }
    for setting, value in names.items():
        if not _DNS_LABEL.fullmatch(value):
            raise ConfigError(
                f"{setting}={value!r} is not a Kubernetes name: use lowercase letters, digits and '-' "
                "(at most 63, starting and ending with a letter or digit)"
            )
    if not all(_DNS_LABEL.fullmatch(part) for part in config.cluster_domain.split(".")):
        raise ConfigError(
            f"ORCH_KUBERNETES__CLUSTER_DOMAIN={config.cluster_domain!r} is not a DNS domain (e.g. cluster.local)"
        )


def _subpath(source: str, root: PurePosixPath, pvc: str) -> str:
    try:
        relative = PurePosixPath(source).relative_to(root)
    except ValueError:
        relative = None
    if relative is None or not relative.parts:
        raise UnsafeMount(
            source,
            f"on Kubernetes only folders inside the workspace volume root {str(root)!r} can be mounted "
            f"(as subPaths of PVC {pvc!r}); the root itself and host paths elsewhere cannot: keep the "
            "folder under ORCH_WORKSPACE or run this task with ORCH_RUNTIME=docker",
        )
    return relative.as_posix()


def _quantity_cpu(nano_cpus: int) -> str:
    return f"{max(1, nano_cpus // 1_000_000)}m"  # rounded down: never more CPU than asked


def pod_manifest(
    spec: ContainerSpec, *, name: str, config: KubernetesSettings, root: PurePosixPath, grace_s: float
) -> dict[str, Any]:
    """The Pod running ``spec`` as ``name``; ``UnsafeMount`` for a mount outside ``root``."""
    uid, gid = spec.uid, spec.gid
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for mount in spec.mounts:
        sub = _subpath(mount.source, root, config.workspace_pvc)
        mounts.append({"name": WORKSPACE_VOLUME, "mountPath": mount.target, "subPath": sub,
                       "readOnly": mount.read_only})  # fmt: skip
    if spec.mounts:
        volumes.append(
            {"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": config.workspace_pvc}}
        )
    for index, tmpfs in enumerate(spec.tmpfs):
        volume = f"tmpfs-{index}"
        volumes.append(
            {"name": volume, "emptyDir": {"medium": "Memory", "sizeLimit": str(parse_size(tmpfs.size))}}
        )
        mounts.append({"name": volume, "mountPath": tmpfs.target})
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.env.items()]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name(name), "key": k}}}
            for k in sorted(spec.secrets)]  # fmt: skip
    resources = {"memory": str(spec.memory_bytes), "cpu": _quantity_cpu(spec.nano_cpus)}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "serviceAccountName": config.service_account,
        "automountServiceAccountToken": False, "enableServiceLinks": False,
        "hostNetwork": False, "hostPID": False, "hostIPC": False, "shareProcessNamespace": spec.init,
        "terminationGracePeriodSeconds": max(1, math.ceil(grace_s)),
        "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": CONTAINER, "image": spec.image, "imagePullPolicy": config.image_pull_policy,
            # args, not command: like Docker's Cmd, the argv runs under the image's ENTRYPOINT.
            "args": list(spec.argv), "workingDir": spec.workdir, "env": env,
            "resources": {"limits": dict(resources), "requests": dict(resources)},
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "privileged": False,
                "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": spec.read_only_root,
                "capabilities": {"drop": list(spec.cap_drop)}, "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": mounts, "stdin": False, "tty": False,
        }],
        "volumes": volumes,
    }  # fmt: skip
    if config.runtime_class:
        pod_spec["runtimeClassName"] = config.runtime_class
    if spec.network != "none":
        # Docker resolves container names on a user network; here the network's headless Service
        # (``service_manifest``) plus this hostname, subdomain and search path do the same.
        service = policy_name(spec.network)
        pod_spec["hostname"] = name
        pod_spec["subdomain"] = service
        pod_spec["dnsConfig"] = {"searches": [f"{service}.{config.namespace}.svc.{config.cluster_domain}"]}
    metadata = {
        "name": name, "namespace": config.namespace, "labels": pod_labels(spec),
        "annotations": {LABELS_ANNOTATION: json.dumps(spec.labels, sort_keys=True),
                        NETWORKS_ANNOTATION: json.dumps([] if spec.network == "none" else [spec.network])},
    }  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def secret_manifest(spec: ContainerSpec, *, pod: str, config: KubernetesSettings) -> dict[str, Any]:
    """The Secret holding ``spec.secrets`` for ``pod`` (immutable; owned by the pod once it exists)."""
    data = {k: base64.b64encode(v.get_secret_value().encode()).decode() for k, v in spec.secrets.items()}
    labels = {**pod_labels(spec)}
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
        "metadata": {"name": secret_name(pod), "namespace": config.namespace, "labels": labels},
        "data": data,
    }  # fmt: skip


def owner_patch(pod: str, uid: str) -> dict[str, Any]:
    """Make the pod the Secret's owner, so the cluster deletes the Secret with the pod."""
    owner = {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}
    return {"metadata": {"ownerReferences": [owner]}}


def _dns_rule() -> dict[str, Any]:
    return {
        "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def default_deny_policy(config: KubernetesSettings) -> dict[str, Any]:
    """No traffic in or out of any worker pod unless another policy allows it (``network=none``)."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": DEFAULT_DENY, "namespace": config.namespace, "labels": dict([MANAGED_BY])},
        "spec": {"podSelector": {"matchLabels": dict([MANAGED_BY])}, "policyTypes": ["Ingress", "Egress"]},
    }  # fmt: skip


def network_policy(
    network: str, *, internal: bool, labels: Mapping[str, str], config: KubernetesSettings
) -> dict[str, Any]:
    """The NetworkPolicy standing for Docker network ``network``.

    Pods on it may talk to each other. ``internal``: out of it only DNS, so a worker reaches the
    internet only through the session's egress proxy pod, which is on it too and also on a network
    that is not internal (a NetworkPolicy cannot name hosts; the proxy allows only the agents' API
    hosts). Not internal: any egress.
    """
    peers = {"podSelector": {"matchLabels": {network_label(network): "true"}}}
    egress: list[dict[str, Any]] = [{"to": [peers]}, _dns_rule()] if internal else [{}]
    policy_labels = {k: label_value(v) for k, v in labels.items() if _LABEL_NAME.fullmatch(k)}
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {
            "name": policy_name(network), "namespace": config.namespace,
            "labels": {**policy_labels, MANAGED_BY[0]: MANAGED_BY[1]},
            "annotations": {NETWORK_ANNOTATION: network, INTERNAL_ANNOTATION: json.dumps(internal)},
        },
        "spec": {
            "podSelector": peers["podSelector"], "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [peers]}], "egress": egress,
        },
    }  # fmt: skip


def service_manifest(network: str, *, config: KubernetesSettings) -> dict[str, Any]:
    """The headless Service that makes the pods on ``network`` resolvable by their names."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": policy_name(network), "namespace": config.namespace,
                     "labels": dict([MANAGED_BY]), "annotations": {NETWORK_ANNOTATION: network}},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {network_label(network): "true"}},
    }  # fmt: skip


def join_patch(networks: list[str]) -> dict[str, Any]:
    """Pod labels and annotation putting a pod on every one of ``networks``."""
    return {
        "metadata": {
            "labels": {network_label(n): "true" for n in networks},
            "annotations": {NETWORKS_ANNOTATION: json.dumps(networks)},
        }
    }
