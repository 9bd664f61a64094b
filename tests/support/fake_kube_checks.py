"""What ``FakeKubeApi`` refuses, as a Kubernetes API server would: names, labels, selectors, pods.

``check_pod`` applies the API server's validation (the fields the runtime sets) and the Pod
Security Standard ``restricted`` (admission; ``Invalid.forbidden``), with the API server's wording.
"""

from __future__ import annotations

import re
from typing import Any

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)")
_FACTORS = {"": 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
            "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}  # fmt: skip
_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret"}  # fmt: skip


class Invalid(ValueError):
    """A refused object; ``forbidden`` for an admission (Pod Security) refusal."""

    def __init__(self, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden


def valid_name(name: str, *, label: bool = False) -> bool:
    """A DNS-1123 subdomain (most objects) or label (Services, hostnames)."""
    if label:
        return bool(_DNS_LABEL.fullmatch(name))
    return len(name) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(name))


def valid_label_value(value: str) -> bool:
    """At most 63 characters, alphanumeric at both ends, ``-_.`` inside (or empty)."""
    return bool(_LABEL_VALUE.fullmatch(value))


def valid_key(key: str) -> bool:
    """A label or annotation key: ``[prefix/]name``."""
    prefix, _, name = key.rpartition("/")
    return (not prefix or valid_name(prefix)) and bool(_LABEL_NAME.fullmatch(name))


def quantity(value: Any) -> float:
    """The number a resource quantity (``512Mi``, ``250m``, ``1073741824``) stands for."""
    found = _QUANTITY.fullmatch(str(value))
    if not found:
        raise Invalid(
            f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}"
        )
    return float(found.group(1)) * _FACTORS[found.group(2)]


def check_selector(raw: str) -> list[tuple[str, str, str]]:
    """An equality-based label selector as (key, op, value) requirements."""
    requirements: list[tuple[str, str, str]] = []
    for term in filter(None, raw.split(",")):
        found = re.fullmatch(r"(!?)([^=!]+)(?:(==|=|!=)(.*))?", term)
        if not found:
            raise Invalid(f"{term!r}: not a requirement")
        negated, key, op, value = found.group(1), found.group(2), found.group(3), found.group(4) or ""
        if not valid_key(key):
            raise Invalid(f"{key!r}: a valid label key must be a qualified name")
        if op and not _LABEL_VALUE.fullmatch(value):
            raise Invalid(
                f"{value!r}: a valid label must be an empty string or consist of alphanumeric characters"
            )
        requirements.append((key, "!" if negated else (op or "exists"), value))
    return requirements


def matches(obj: dict[str, Any], requirements: list[tuple[str, str, str]]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for key, op, value in requirements:
        if op in ("=", "==") and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


def _metadata(obj: dict[str, Any], namespace: str) -> None:
    meta = obj.get("metadata") or {}
    if not valid_name(str(meta.get("name", ""))):
        raise Invalid(f"metadata.name: Invalid value: {meta.get('name')!r}: a lowercase RFC 1123 subdomain")
    if meta.get("namespace", namespace) != namespace:
        raise Invalid("metadata.namespace: the namespace of the provided object does not match the request")
    for key, value in (meta.get("labels") or {}).items():
        if not valid_key(key) or not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            raise Invalid(f"metadata.labels: Invalid value: {key!r}={value!r}")
    for key in meta.get("annotations") or {}:
        if not valid_key(key):
            raise Invalid(f"metadata.annotations: Invalid value: {key!r}")


def _container(container: dict[str, Any], volumes: set[str]) -> None:
    if not _DNS_LABEL.fullmatch(str(container.get("name", ""))) or not container.get("image"):
        raise Invalid("spec.containers[0]: a container needs a DNS-1123 label name and an image")
    targets: set[str] = set()
    for mount in container.get("volumeMounts") or []:
        if mount.get("name") not in volumes:
            raise Invalid(f"volumeMounts.name: Not found: {mount.get('name')!r}")
        path, sub = str(mount.get("mountPath", "")), str(mount.get("subPath", ""))
        if not path.startswith("/") or path in targets:
            raise Invalid(f"volumeMounts.mountPath: Invalid value: {path!r} (absolute and unique)")
        targets.add(path)
        if sub.startswith("/") or ".." in sub.split("/"):
            raise Invalid(
                f"volumeMounts.subPath: Invalid value: {sub!r}: must be a relative path without '..'"
            )
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for name, value in requests.items():
        if name in limits and quantity(value) > quantity(limits[name]):
            raise Invalid(
                f"resources.requests: Invalid value: {value!r}: must be less than or equal to {name} limit"
            )
    for value in limits.values():
        quantity(value)


def _restricted(spec: dict[str, Any]) -> None:
    """The Pod Security Standard ``restricted``: every violation, in the API server's words."""
    pod_context = spec.get("securityContext") or {}
    found: list[str] = []
    if any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        found.append("host namespaces (hostNetwork=true, hostPID=true or hostIPC=true)")
    kinds = {k for v in spec.get("volumes") or [] for k in v if k != "name"}
    if kinds - _RESTRICTED_VOLUMES:
        found.append(f"restricted volume types (volumes use {sorted(kinds - _RESTRICTED_VOLUMES)})")
    for container in spec.get("containers") or []:
        name, context = container.get("name"), container.get("securityContext") or {}
        if context.get("privileged"):
            found.append(f'privileged (container "{name}" must not set securityContext.privileged=true)')
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f'allowPrivilegeEscalation != false (container "{name}" must set '
                         "securityContext.allowPrivilegeEscalation=false)")  # fmt: skip
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []) or set(capabilities.get("add") or []) - {
            "NET_BIND_SERVICE"
        }:
            found.append(
                f'unrestricted capabilities (container "{name}" must set securityContext.capabilities.drop=["ALL"])'
            )
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            found.append(
                f'runAsNonRoot != true (container "{name}" must set securityContext.runAsNonRoot=true)'
            )
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f'runAsUser=0 (container "{name}" must not set runAsUser=0)')
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f'seccompProfile (container "{name}" must set securityContext.seccompProfile.type to '
                         '"RuntimeDefault" or "Localhost")')  # fmt: skip
    if found:
        raise Invalid('violates PodSecurity "restricted:latest": ' + ", ".join(found), forbidden=True)


def check_pod(obj: dict[str, Any], namespace: str, *, admission: bool = True) -> None:
    """``Invalid`` if the API server (or, with ``admission``, Pod Security) would refuse the pod."""
    if obj.get("kind") != "Pod" or obj.get("apiVersion") != "v1":
        raise Invalid("kind/apiVersion: must be Pod v1")
    _metadata(obj, namespace)
    spec = obj.get("spec") or {}
    if spec.get("restartPolicy", "Always") not in ("Always", "OnFailure", "Never"):
        raise Invalid(f"spec.restartPolicy: Unsupported value: {spec.get('restartPolicy')!r}")
    for field in ("hostname", "subdomain"):
        if field in spec and not _DNS_LABEL.fullmatch(str(spec[field])):
            raise Invalid(f"spec.{field}: Invalid value: {spec[field]!r}: a lowercase RFC 1123 label")
    volumes = [v.get("name") for v in spec.get("volumes") or []]
    if len(set(volumes)) != len(volumes) or not all(_DNS_LABEL.fullmatch(str(v)) for v in volumes):
        raise Invalid(f"spec.volumes: names must be unique DNS-1123 labels: {volumes}")
    for volume in spec.get("volumes") or []:
        size = (volume.get("emptyDir") or {}).get("sizeLimit")
        if size is not None:
            quantity(size)
    containers = spec.get("containers") or []
    if len(containers) != 1:
        raise Invalid("spec.containers: the fake runs exactly one container")
    _container(containers[0], set(volumes))
    if admission:
        _restricted(spec)
