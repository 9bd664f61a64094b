"""Docker networks on Kubernetes: a NetworkPolicy and a headless Service per network.

A pod is on a network when it carries the network's label (``k8s_manifests.network_label``); the
network's NetworkPolicy then decides its traffic and the Service makes its name resolvable. Every
worker pod is also under the default-deny policy, which this module makes sure exists, so a pod
on ``none`` (no network label) can reach nothing and nothing can reach it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from kubernetes.aio import client as k8s

from orchestrator.config import KubernetesSettings
from orchestrator.errors import ContainerNotFound, RuntimeFailure
from orchestrator.runtime import k8s_manifests as manifests
from orchestrator.runtime.k8s_api import to_dict, vendor_errors

MERGE_PATCH: Final = "application/merge-patch+json"  # RFC 7386: what the patches here mean, stated explicitly


class PodNetworks:
    """The network half of ``KubernetesRuntime``; ``client`` gives its (lazily made) API client."""

    def __init__(self, config: KubernetesSettings, client: Callable[[], Awaitable[k8s.ApiClient]]) -> None:
        self.config = config
        self._client = client
        self._known: set[str] = set()
        self._default_deny = False

    @property
    def namespace(self) -> str:
        return self.config.namespace

    async def ensure_default_deny(self) -> None:
        """The policy that denies all traffic of worker pods unless a network's policy allows it."""
        if self._default_deny:
            return
        networking = k8s.NetworkingV1Api(await self._client())
        policy = k8s.V1NetworkPolicy.model_validate(manifests.default_deny_policy(self.config))
        with vendor_errors(f"create NetworkPolicy {manifests.DEFAULT_DENY}"):
            try:
                await networking.create_namespaced_network_policy(self.namespace, policy)
            except k8s.ApiException as err:
                if err.status != 409:
                    raise
        self._default_deny = True

    async def check(self, network: str) -> None:
        """``RuntimeFailure`` unless ``network`` is ``none`` or exists, as Docker refuses a missing one."""
        if network == "none" or network in self._known:
            return
        networking = k8s.NetworkingV1Api(await self._client())
        policy = manifests.policy_name(network)
        try:
            with vendor_errors(f"read NetworkPolicy {policy}"):
                await networking.read_namespaced_network_policy(policy, self.namespace)
        except ContainerNotFound as err:
            raise RuntimeFailure(
                f"network {network!r} not found (no NetworkPolicy {policy} in namespace {self.namespace!r}); "
                "create it before starting containers on it"
            ) from err
        self._known.add(network)

    async def ensure(self, name: str, *, internal: bool, labels: Mapping[str, str]) -> str:
        """Create the network's Service and NetworkPolicy if missing; return the policy's name."""
        core, networking = k8s.CoreV1Api(await self._client()), k8s.NetworkingV1Api(await self._client())
        service = k8s.V1Service.model_validate(manifests.service_manifest(name, config=self.config))
        with vendor_errors(f"create the Service of network {name!r}"):
            try:
                await core.create_namespaced_service(self.namespace, service)
            except k8s.ApiException as err:
                if err.status != 409:
                    raise
        body = manifests.network_policy(name, internal=internal, labels=labels, config=self.config)
        policy = manifests.policy_name(name)
        with vendor_errors(f"create NetworkPolicy {policy} for network {name!r}"):
            try:
                await networking.create_namespaced_network_policy(
                    self.namespace, k8s.V1NetworkPolicy.model_validate(body)
                )
                self._known.add(name)
                return policy
            except k8s.ApiException as err:
                if err.status != 409:
                    raise
            found = await networking.read_namespaced_network_policy(policy, self.namespace)
        annotations = to_dict(networking.api_client, found).get("metadata", {}).get("annotations") or {}
        existing = annotations.get(manifests.INTERNAL_ANNOTATION)
        if existing != json.dumps(internal):
            raise RuntimeFailure(
                f"network {name!r} exists as NetworkPolicy {policy} with internal={existing}, wanted "
                f"internal={json.dumps(internal)}; remove it (kubectl delete networkpolicy {policy} -n "
                f"{self.namespace})"
            )
        self._known.add(name)
        return policy

    async def join(self, pod: str, networks: list[str], network: str) -> None:
        """Put ``pod`` (now on ``networks``) on ``network`` too."""
        if network in networks:
            return
        await self.check(network)
        core = k8s.CoreV1Api(await self._client())
        with vendor_errors(f"connect pod {pod} to network {network!r}"):
            patch = manifests.join_patch([*networks, network])
            await core.patch_namespaced_pod(pod, self.namespace, patch, _content_type=MERGE_PATCH)

    async def remove(self, name: str) -> None:
        """Delete the network's NetworkPolicy and Service; missing ones are fine."""
        self._known.discard(name)
        core, networking = k8s.CoreV1Api(await self._client()), k8s.NetworkingV1Api(await self._client())
        policy = manifests.policy_name(name)
        with contextlib.suppress(ContainerNotFound), vendor_errors(f"delete NetworkPolicy {policy}"):
            await networking.delete_namespaced_network_policy(policy, self.namespace)
        with contextlib.suppress(ContainerNotFound), vendor_errors(f"delete Service {policy}"):
            await core.delete_namespaced_service(policy, self.namespace)
