"""Settings: the one reader of ``os.environ`` (prefix ``ORCH_``, nested with ``__``).

Built once at an entry point (CLI, app factory) and passed down. Every field is described; the
README's configuration table is generated from these descriptions (``orchestrate config``).
Examples: ``ORCH_WORKSPACE=/data``, ``ORCH_MAX_PARALLEL=2``, ``ORCH_CLAUDE__BASE_URL=http://gw:8080``,
``ORCH_CLAUDE__API_KEY=...``, ``ORCH_RECOVERY__MAX_ATTEMPTS=3``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseModel):
    """How to reach one agent's model API and what its containers get."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(
        default=None, description="the model API endpoint (a company gateway or the scripted model server)"
    )
    api_key: SecretStr | None = Field(default=None, description="the API key; never logged or stored")
    login_dir: Path | None = Field(
        default=None, description="a login folder (~/.claude, ~/.codex, ~/.gemini) copied into the container"
    )
    model: str | None = Field(default=None, description="the model name passed to the CLI")
    image: str | None = Field(default=None, description="override the agent image tag")
    allowed_hosts: list[str] = Field(default_factory=list, description="egress allowlist for this agent")
    max_rung: int = Field(default=2, ge=0, le=2, description="ceiling of the permission ladder")


def _agent(hosts: list[str], max_rung: int = 2) -> AgentSettings:
    return AgentSettings(allowed_hosts=hosts, max_rung=max_rung)


class RecoverySettings(BaseModel):
    """Knobs of the recovery policy (POLICIES.md §2)."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=4, ge=1, le=20, description="containers per worker, first included")
    writer_start_rung: int = Field(
        default=0, ge=0, le=2, description="permission rung a write task starts on"
    )
    backoff_base_s: float = Field(default=30.0, ge=0, description="first rate-limit backoff")
    backoff_cap_s: float = Field(default=900.0, ge=0, description="longest rate-limit backoff")
    max_backoffs: int = Field(default=5, ge=0, description="rate-limit restarts per worker")
    max_restarts: int = Field(default=2, ge=0, description="resumes after a crash")
    stall_timeout_s: float = Field(default=600.0, gt=0, description="no output for this long = stalled")
    memory_factor: float = Field(default=1.5, gt=1.0, description="memory raise after an OOM")
    memory_cap: str = Field(default="4g", description="the most memory a raise may give")


class ReviewSettings(BaseModel):
    """Knobs of the review policy (POLICIES.md §3)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="run peer reviews")
    fix_rounds: int = Field(default=1, ge=0, le=5, description="fix rounds after request_changes")
    timeout_s: float = Field(default=300.0, gt=0, description="time a reviewer gets")
    checkpoint_every: int = Field(default=0, ge=0, description="review every N file changes (0 = off)")


class LimitSettings(BaseModel):
    """Resources of every agent container."""

    model_config = ConfigDict(extra="forbid")

    memory: str = Field(default="2g", description="memory limit (swap equals memory)")
    cpus: float = Field(default=1.0, gt=0, description="CPU limit")
    pids: int = Field(default=256, ge=16, description="process limit")
    tmp_size: str = Field(default="256m", description="size of the /tmp tmpfs")
    home_size: str = Field(default="256m", description="size of the home tmpfs")


class KubernetesSettings(BaseModel):
    """Where workers run when ``runtime`` is ``kubernetes`` (``deploy/kubernetes/README.md``).

    Kubernetes cannot enforce two of the Docker hardening options from a pod spec alone: the pids
    limit (only the kubelet's node-wide ``podPidsLimit``) and network isolation (only a CNI that
    enforces NetworkPolicy). Workers are refused until the operator declares both here.
    """

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(default="orchestrator", description="namespace of the worker pods")
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file; unset = the pod's in-cluster service account"
    )
    context: str | None = Field(default=None, description="kubeconfig context (default: its current one)")
    workspace_pvc: str = Field(
        default="orchestrator-workspace", description="PVC holding the workspace; mounts become its subPaths"
    )
    workspace_root: Path | None = Field(
        default=None, description="where this process sees that PVC (default: ORCH_WORKSPACE)"
    )
    service_account: str = Field(
        default="orchestrator-worker",
        description="service account of worker pods (its token is never mounted)",
    )
    node_pids_limit: int | None = Field(
        default=None,
        ge=16,
        description="the kubelet podPidsLimit every node enforces; unset = workers refused",
    )
    network_policy_enforced: bool = Field(
        default=False, description="the cluster's CNI enforces NetworkPolicy; false = workers refused"
    )
    cluster_domain: str = Field(
        default="cluster.local", description="the cluster's DNS domain (pods find each other by name in it)"
    )
    runtime_class: str | None = Field(default=None, description="RuntimeClass of worker pods, e.g. gvisor")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="imagePullPolicy of worker pods"
    )
    split_log_streams: bool = Field(
        default=False,
        description="the API server splits stdout/stderr (feature gate PodLogsQuerySplitStreams)",
    )
    start_timeout_s: float = Field(default=300.0, gt=0, description="longest wait for a worker pod to run")
    poll_interval_s: float = Field(default=0.5, gt=0, description="pause between pod status reads")


class Settings(BaseSettings):
    """All settings of the orchestrator."""

    model_config = SettingsConfigDict(env_prefix="ORCH_", env_nested_delimiter="__", extra="ignore")

    workspace: Path = Field(default=Path("workspace"), description="folder holding one folder per session")
    runtime: Literal["docker", "kubernetes"] = Field(default="docker", description="where workers run")
    max_parallel: int = Field(default=3, ge=1, le=64, description="tasks running at once")
    task_timeout_s: float = Field(default=3600.0, gt=0, description="wall-clock limit per task")
    grace_period_s: float = Field(default=10.0, ge=0, description="stop grace before SIGKILL")
    network: Literal["allowlist", "open", "none"] = Field(
        default="allowlist", description="worker egress: allowlist proxy, open (recorded), or none"
    )
    allowed_roots: list[Path] = Field(default_factory=list, description="extra folders that may be mounted")
    uid: int | None = Field(default=None, description="uid in containers (default: the repo's owner)")
    gid: int | None = Field(default=None, description="gid in containers (default: the repo's group)")
    image_prefix: str = Field(default="meta-orchestrator", description="repository part of image tags")
    base_image: str | None = Field(
        default=None, description="build images FROM this instead of a locally made Debian base"
    )
    api_host: str = Field(default="127.0.0.1", description="address `orchestrate serve` binds")
    api_port: int = Field(default=8765, ge=1, le=65535, description="port `orchestrate serve` binds")
    api_token: SecretStr | None = Field(default=None, description="bearer token of the API")
    flush_interval_s: float = Field(default=0.005, ge=0, description="longest wait before a batch is fsynced")
    snapshot_every: int = Field(default=10_000, ge=100, description="events between state snapshots")
    log_level: str = Field(default="warning", description="structlog level (debug, info, warning, error)")
    limits: LimitSettings = Field(
        default_factory=LimitSettings, description="container resources (ORCH_LIMITS__*)"
    )
    recovery: RecoverySettings = Field(
        default_factory=RecoverySettings, description="recovery knobs (ORCH_RECOVERY__*)"
    )
    review: ReviewSettings = Field(
        default_factory=ReviewSettings, description="review knobs (ORCH_REVIEW__*)"
    )
    kubernetes: KubernetesSettings = Field(
        default_factory=KubernetesSettings, description="the Kubernetes runtime (ORCH_KUBERNETES__*)"
    )
    claude: AgentSettings = Field(
        default_factory=lambda: _agent(["api.anthropic.com"]), description="Claude Code (ORCH_CLAUDE__*)"
    )
    codex: AgentSettings = Field(
        default_factory=lambda: _agent(["api.openai.com", "chatgpt.com"]),
        description="Codex CLI (ORCH_CODEX__*)",
    )
    gemini: AgentSettings = Field(
        default_factory=lambda: _agent(["generativelanguage.googleapis.com"]),
        description="Gemini CLI (ORCH_GEMINI__*)",
    )

    @field_validator("workspace")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    def agent(self, name: str) -> AgentSettings:
        """The settings of agent ``name`` (claude, codex or gemini)."""
        found: AgentSettings = getattr(self, name)
        return found

    def secret_values(self) -> list[str]:
        """Every configured secret value, for redaction."""
        values = [a.api_key.get_secret_value() for a in (self.claude, self.codex, self.gemini) if a.api_key]
        if self.api_token:
            values.append(self.api_token.get_secret_value())
        return [v for v in values if v]
