"""``orchestrate sandbox check``: the production container of each agent, seen from inside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from orchestrator.commands.sandbox import run_check
from orchestrator.config import Settings
from orchestrator.models.common import AgentName
from orchestrator.runtime import MANAGED_LABEL, WORKER_LABEL
from orchestrator.runtime.docker import DockerRuntime


def orchestrate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, so exit codes are the ones users see."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.main", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})}, check=False,
    )  # fmt: skip


async def test_every_property_holds_and_nothing_is_left_behind(
    tmp_path: Path, images: dict[str, str]
) -> None:
    """On the light image with no network: every check passes; no container survives the check."""
    settings = Settings(_env_file=None, workspace=tmp_path / "ws", network="none")  # type: ignore[call-arg]
    async with DockerRuntime() as runtime:
        reports = await run_check(
            settings, runtime, [AgentName.CLAUDE, AgentName.GEMINI], image=images["base"]
        )
        workers = {info.labels.get(WORKER_LABEL) for info in await runtime.find({MANAGED_LABEL: "true"})}
    assert [(r.agent, r.ok) for r in reports] == [("claude", True), ("gemini", True)]
    failed = [(r.agent, c) for r in reports for c in r.checks if not c.ok]
    assert failed == []
    assert {"uid", "cap_eff", "no_new_privs", "seccomp", "writable", "docker_socket", "net_devices",
            "pids_max", "memory_max", "pid1"} <= {c.name for c in reports[0].checks}  # fmt: skip
    assert not workers & {"claude-check-claude", "gemini-check-gemini"}


def test_the_cli_checks_the_real_agent_images_on_the_session_network(images: dict[str, str]) -> None:
    """``--json`` on the built agent images and the default (allowlist = internal) network: exit 0."""
    result = orchestrate("sandbox", "check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["ok"], report["network"]) == (True, "allowlist")
    assert {(a["agent"], a["image"]) for a in report["agents"]} == {
        (name, images[name]) for name in ("claude", "codex", "gemini")
    }


def test_the_check_follows_the_configured_limits(images: dict[str, str]) -> None:
    """The policy is the configured one: a pids limit of 48 is what the probe must see."""
    env = {"ORCH_NETWORK": "none", "ORCH_LIMITS__PIDS": "48", "ORCH_LIMITS__MEMORY": "300m"}
    result = orchestrate("sandbox", "check", "--agent", "codex", "--image", images["base"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   pids_max         48" in result.stdout
    assert f"ok   memory_max       {300 * 1024**2}" in result.stdout


def test_garbage_arguments_are_usage_errors() -> None:
    """Unknown agents and malformed images exit 2; a missing image exits 5; nothing crashes."""
    unknown = orchestrate("sandbox", "check", "--agent", "nope")
    assert (unknown.returncode, unknown.stderr.strip().removeprefix("error: ")[:20]) == (
        2,
        "unknown agent 'nope'",
    )
    malformed = orchestrate(
        "sandbox", "check", "--agent", "claude", "--image", "bad image", env={"ORCH_NETWORK": "none"}
    )
    assert malformed.returncode == 2, malformed.stderr
    missing = orchestrate("sandbox", "check", "--agent", "claude", "--image", "orchestrator-missing:0",
                          env={"ORCH_NETWORK": "none"})  # fmt: skip
    assert missing.returncode == 5, missing.stderr
    assert "not built" in missing.stderr
    tiny = orchestrate(
        "sandbox", "check", "--agent", "claude", env={"ORCH_NETWORK": "none", "ORCH_LIMITS__MEMORY": "3m"}
    )
    assert tiny.returncode == 2, tiny.stderr
