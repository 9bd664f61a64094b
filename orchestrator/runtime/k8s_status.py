"""Kubernetes pod status -> ``ContainerInfo``/``ExitInfo``: the pure half of ``KubernetesRuntime``'s answers.

A pod as the API server returns it (a JSON dict) becomes a ``PodView`` at the boundary, holding only
what the runtime reads. ``PodView.info`` and ``PodView.exit`` are the Docker-shaped answers;
``PodView.start_problem`` tells a pod that can never start (no image, a bad config) from one that
is only waiting (scheduling, pulling).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from orchestrator.runtime.k8s_manifests import CONTAINER, LABELS_ANNOTATION, NETWORKS_ANNOTATION
from orchestrator.runtime.spec import ContainerInfo, ContainerStatus, ExitInfo, Request, classify_exit

# Waiting reasons after which the kubelet will not start the container by itself.
IMAGE_PROBLEMS: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
)
CONFIG_PROBLEMS: Final = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
_PHASES: Final[dict[str, ContainerStatus]] = {
    "Pending": "created", "Running": "running", "Succeeded": "exited", "Failed": "exited", "Unknown": "dead",
}  # fmt: skip


class _View(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Waiting(_View):
    reason: str = ""
    message: str = ""


class Running(_View):
    started_at: datetime | None = None


class Terminated(_View):
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None


class State(_View):
    waiting: Waiting | None = None
    running: Running | None = None
    terminated: Terminated | None = None


class ContainerStatusView(_View):
    name: str = ""
    state: State = Field(default_factory=State)


class Condition(_View):
    type: str = ""
    status: str = ""
    reason: str = ""
    message: str = ""


class StatusView(_View):
    phase: str = "Pending"
    reason: str = ""
    message: str = ""
    pod_ip: str = Field(default="", alias="podIP")
    conditions: list[Condition] = Field(default_factory=list)
    container_statuses: list[ContainerStatusView] = Field(default_factory=list)


class MetadataView(_View):
    name: str
    uid: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None


class ContainerView(_View):
    name: str = ""
    image: str = ""


class SpecView(_View):
    containers: list[ContainerView] = Field(default_factory=list)


class PodView(_View):
    """The part of a Pod the runtime reads; build with ``PodView.model_validate(pod_dict)``."""

    metadata: MetadataView
    spec: SpecView = Field(default_factory=SpecView)
    status: StatusView = Field(default_factory=StatusView)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def state(self) -> State:
        """The agent container's state (an empty one while the kubelet has not reported it)."""
        for status in self.status.container_statuses:
            if status.name == CONTAINER:
                return status.state
        return State()

    @property
    def terminal(self) -> bool:
        """The pod has ended: Succeeded, Failed, or its container terminated."""
        return self.status.phase in ("Succeeded", "Failed") or self.state.terminated is not None

    @property
    def labels(self) -> dict[str, str]:
        """The exact labels the spec asked for (from the annotation), else the pod's own."""
        found = _json(self.metadata.annotations.get(LABELS_ANNOTATION))
        if isinstance(found, dict) and all(isinstance(v, str) for v in found.values()):
            return {str(k): v for k, v in found.items()}
        return dict(self.metadata.labels)

    @property
    def networks(self) -> list[str]:
        """The networks the pod is on (``start`` and ``connect_network`` record them)."""
        found = _json(self.metadata.annotations.get(NETWORKS_ANNOTATION))
        return [str(n) for n in found] if isinstance(found, list) else []

    def start_problem(self) -> tuple[Literal["image", "config"], str] | None:
        """Why the container can never start without help, if that is so."""
        waiting = self.state.waiting
        if waiting is None:
            return None
        detail = f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
        if waiting.reason in IMAGE_PROBLEMS:
            return "image", detail
        if waiting.reason in CONFIG_PROBLEMS:
            return "config", detail
        return None

    def pending_detail(self) -> str:
        """What keeps a pending pod pending, in the scheduler's or kubelet's words."""
        waiting = self.state.waiting
        if waiting is not None and waiting.reason:
            return f"{waiting.reason}: {waiting.message}".rstrip(": ")
        for condition in self.status.conditions:
            if condition.status == "False" and (condition.reason or condition.message):
                return f"{condition.type} {condition.reason}: {condition.message}".rstrip(": ")
        return f"phase {self.status.phase}"

    def info(self) -> ContainerInfo:
        """The pod as a Docker-shaped ``ContainerInfo`` (its name is its id)."""
        state = self.state
        status = _PHASES.get(self.status.phase, "dead")
        if state.terminated is not None:
            status = "exited"
        elif self.metadata.deletion_timestamp is not None:
            status = "removing"
        started = (state.running.started_at if state.running else None) or (
            state.terminated.started_at if state.terminated else None
        )
        terminated = state.terminated
        image = self.spec.containers[0].image if self.spec.containers else ""
        return ContainerInfo(
            id=self.name, name=self.name, image=image, labels=self.labels, status=status,
            exit_code=terminated.exit_code if terminated else None,
            oom_killed=bool(terminated and terminated.reason == "OOMKilled"),
            started_at=started, finished_at=terminated.finished_at if terminated else None,
            addresses={n: self.status.pod_ip for n in self.networks} if self.status.pod_ip else {},
        )  # fmt: skip

    def exit(self, requested: Request | None) -> ExitInfo | None:
        """How the pod ended, or None while it has not."""
        if not self.terminal:
            return None
        terminated = self.state.terminated
        if terminated is None:  # failed before the container ran (evicted, deadline, ...)
            error = f"{self.status.reason}: {self.status.message}".strip(": ") or "the pod failed"
            return ExitInfo(exit_code=None, reason=classify_exit(None, False, requested), error=error)
        oom = terminated.reason == "OOMKilled"
        error = "" if terminated.reason in ("Completed", "Error", "OOMKilled") else terminated.reason
        if terminated.message:
            error = f"{error}: {terminated.message}".lstrip(": ")
        return ExitInfo(
            exit_code=terminated.exit_code, oom_killed=oom, error=error,
            reason=classify_exit(terminated.exit_code, oom, requested),
        )  # fmt: skip


def _json(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def pod_view(raw: dict[str, Any]) -> PodView:
    """``raw`` (a Pod as JSON) as a ``PodView``."""
    return PodView.model_validate(raw)
