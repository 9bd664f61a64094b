"""``sandbox check`` without Docker: the policy's expectations, the comparison, the report and exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.commands.sandbox import AgentReport, outcome, render, run_check
from orchestrator.config import Settings
from orchestrator.models.common import AgentName
from orchestrator.runtime import ContainerSpec, FakeProcess, FakeRuntime, MountSpec, TmpfsSpec
from sandbox.probe import Check, compare, expected, parse_facts

SPEC = ContainerSpec(
    image="img:1", argv=("sh",), user="1000:1001", memory_bytes=512 * 1024**2, nano_cpus=1_500_000_000,
    pids_limit=99, mounts=(MountSpec(source="/w", target="/workspace", read_only=False),
                           MountSpec(source="/d", target="/mnt/d")),
    tmpfs=(TmpfsSpec(target="/tmp", size="8m"), TmpfsSpec(target="/home/agent", size="8m")),
)  # fmt: skip

GOOD = {
    "uid": "1000", "gid": "1001", "cap_eff": "0000000000000000", "cap_bnd": "0000000000000000",
    "no_new_privs": "1", "seccomp": "2", "writable": "/tmp /workspace /home/agent", "docker_socket": "",
    "docker_host": "", "resolves_outside": "no", "pids_max": "99", "memory_max": str(512 * 1024**2),
    "memory_swap_max": str(512 * 1024**2), "cpu_quota": "150000", "cpu_period": "100000",
    "pid1": "docker-init", "probe": "done", "net_devices": "",
}  # fmt: skip


def test_a_container_as_the_policy_wants_passes_every_check() -> None:
    """The facts of a hardened container match every expectation (writable order does not matter)."""
    checks = compare(GOOD, SPEC)
    assert [c for c in checks if not c.ok] == []
    assert set(GOOD) == {c.name for c in checks}


@pytest.mark.parametrize(
    ("fact", "value"),
    [("uid", "0"), ("cap_eff", "00000000a80425fb"), ("no_new_privs", "0"), ("seccomp", "0"),
     ("writable", "/ /tmp /workspace /home/agent"), ("writable", "/tmp /workspace /home/agent /mnt/d"),
     ("docker_socket", "/var/run/docker.sock"), ("docker_host", "tcp://host:2375"), ("resolves_outside", "yes"),
     ("net_devices", "eth0"), ("pids_max", "max"), ("memory_max", "9223372036854771712"),
     ("memory_swap_max", "9223372036854771712"), ("cpu_quota", "-1"), ("pid1", "sh"), ("probe", "missing")],
)  # fmt: skip
def test_each_difference_from_the_policy_is_a_failed_check(fact: str, value: str) -> None:
    """Root, capabilities, no NNP or seccomp, extra writable paths, a socket, network, no limits: each fails."""
    facts = {**GOOD, fact: value}
    failed = [c for c in compare(facts, SPEC) if not c.ok]
    assert [fact] == [c.name for c in failed]


def test_cgroup_v2_swap_and_named_networks() -> None:
    """cgroup v2 shows swap alone (0 = none); on a named network, devices other than lo are expected."""
    assert [c for c in compare({**GOOD, "memory_swap_max": "0"}, SPEC) if not c.ok] == []
    assert "net_devices" not in expected(SPEC.model_copy(update={"network": "orch-s1"}))


def test_parse_facts_takes_key_value_lines_and_ignores_the_rest() -> None:
    """Only ``word=value`` lines count; garbage is skipped; the last value of a key wins."""
    lines = ["garbage", "=x", "a b=c", "\x00=1", "a=1", "k=", "uid=1", "uid=2", "\xff\xfe"]
    assert parse_facts(lines) == {"a": "1", "k": "", "uid": "2"}
    assert parse_facts([]) == {}


def test_the_report_and_exit_code() -> None:
    """Exit 0 when all agents match; 1 otherwise; the text names what differs and what the policy wants."""
    good = AgentReport("claude", "img:1", 0, [Check("uid", "1000", "1000")])
    bad = AgentReport("codex", "img:2", 0, [Check("uid", "1000", "0")])
    assert (outcome([good], "none", as_json=False)[1], outcome([good, bad], "none", as_json=False)[1],
                         outcome([], "none", as_json=False)[1]) == (0, 1, 1)  # fmt: skip
    text, _ = outcome([good, bad], "none", as_json=False)
    assert "codex (img:2): DIFFERS FROM POLICY" in text
    assert "FAIL uid              '0' (policy: '1000')" in text
    body, code = outcome([bad], "allowlist", as_json=True)
    assert (code, json.loads(body)["ok"], json.loads(body)["network"]) == (1, False, "allowlist")
    assert "FAIL probe exit code 1" in render([AgentReport("gemini", "img", 1, [])])


async def test_run_check_on_a_fake_that_breaks_the_policy(settings: Settings, tmp_path: Path) -> None:
    """A container whose probe shows root and a writable root fails; its containers are removed."""
    lines = [f"{k}={v}" for k, v in {**GOOD, "uid": "0", "writable": "/ /tmp"}.items()]
    runtime = FakeRuntime(FakeProcess(lines=lines))
    reports = await run_check(settings.model_copy(update={"network": "none"}), runtime, [AgentName.CODEX],
                              image="img:fake")  # fmt: skip
    [report] = reports
    failed = {c.name for c in report.checks if not c.ok}
    assert {"uid", "writable"} <= failed
    assert not report.ok
    assert runtime.containers == {}
