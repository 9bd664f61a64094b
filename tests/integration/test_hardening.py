"""Escape attempts from inside a worker: each must fail (production spec, real Docker).

Every container here is built by ``sandbox.safety.build_spec`` and run by ``DockerRuntime``, as a
worker is. The probes are shell one-liners printing ``key=value`` facts; each test names one thing
an agent must not be able to do, and a positive control where one makes the failure meaningful.
"""

from __future__ import annotations

import asyncio
import time

from orchestrator.config import LimitSettings
from tests.integration.hardened import Sandbox

# `try KEY CMD...` prints KEY=ok if CMD succeeded, else KEY=<the first line of its error>.
TRY = 'try() { k=$1; shift; if out=$("$@" 2>&1); then echo "$k=ok"; else echo "$k=$(echo "$out" | head -1)"; fi; }'


async def test_writes_land_only_in_the_worktree_owned_by_the_user(sandbox: Sandbox) -> None:
    """The worktree is writable and what is written belongs to the repository's user; nothing else is."""
    docs = f"/mnt{sandbox.repo}/docs"
    run = await sandbox.run(
        f"{TRY}; try worktree touch /workspace/made.txt; try ro_mount touch {docs}/x; try root touch /x; "
        "try usr touch /usr/bin/x; try etc touch /etc/x; try home touch /home/agent/ok; try tmp touch /tmp/ok; "
        f"echo docs=$(cat {docs}/guide.md); echo repo_visible=$(ls -d {sandbox.repo} 2>/dev/null || echo no)"
    )
    facts = run.facts()
    assert facts["worktree"] == "ok"
    assert (sandbox.worktree / "made.txt").stat().st_uid == sandbox.user[0]
    for key in ("ro_mount", "root", "usr", "etc"):
        assert "Read-only file system" in facts[key], (key, facts)
    assert (facts["home"], facts["tmp"]) == ("ok", "ok")
    assert (facts["docs"], facts["repo_visible"]) == ("read me", "no")
    assert not (sandbox.repo / "docs" / "x").exists()


async def test_an_analysis_task_cannot_write_its_mounts(sandbox: Sandbox) -> None:
    """A read-only task: even its worktree is read-only."""
    run = await sandbox.run(f"{TRY}; try worktree touch /workspace/x", task="read-only")
    assert "Read-only file system" in run.facts()["worktree"]


async def test_no_root_and_no_capability(sandbox: Sandbox) -> None:
    """Not root, no capabilities, no-new-privileges, seccomp on; every way up fails."""
    run = await sandbox.run(
        f"{TRY}; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | tr : =; "
        "echo uid=$(id -u); echo gid=$(id -g); try userns unshare -r id; try setpriv setpriv --reuid 0 id; "
        "try setuid python3 -c 'import os; os.setuid(0)'; try chown chown 0 /tmp; try su su -c id root; "
        "try mount mount -t tmpfs none /tmp"
    )
    facts = run.facts()
    assert facts["CapEff"] == facts["CapPrm"] == facts["CapBnd"] == "0000000000000000"
    assert (facts["NoNewPrivs"], facts["Seccomp"]) == ("1", "2")
    assert (facts["uid"], facts["gid"]) == (str(sandbox.user[0]), str(sandbox.user[1]))
    assert facts["uid"] != "0"
    for attempt in ("userns", "setpriv", "setuid", "chown", "su", "mount"):
        assert facts[attempt] != "ok", (attempt, facts)


async def test_the_docker_socket_is_out_of_reach(sandbox: Sandbox) -> None:
    """No Docker socket anywhere the worker can see, nor a DOCKER_HOST to find one."""
    run = await sandbox.run(
        "for s in /var/run/docker.sock /run/docker.sock /tmp/docker.sock; do [ -e $s ] && echo found=$s; done; "
        "grep -cF docker.sock /proc/mounts | sed 's/^/mounts=/'; echo host=${DOCKER_HOST:-none}"
    )
    assert run.facts() == {"mounts": "0", "host": "none"}


async def test_no_network_when_the_policy_says_none(sandbox: Sandbox) -> None:
    """Network ``none``: only the loopback device; any other address is unreachable at once."""
    run = await sandbox.run(
        f"{TRY}; echo devices=$(ls /sys/class/net | tr '\\n' ' '); "
        "try tcp timeout 3 bash -c 'echo > /dev/tcp/172.17.0.1/80'; try dns timeout 3 getent hosts example.com"
    )
    facts = run.facts()
    assert facts["devices"].strip() == "lo"
    assert "Network is unreachable" in facts["tcp"], facts
    assert facts["dns"] != "ok"


FORK_BOMB = """
import os, time
forked, failed, error = 0, 0, ""
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as err:
        failed, error = failed + 1, err.strerror
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    forked += 1
with open("/sys/fs/cgroup/pids/pids.current") as current, open("/sys/fs/cgroup/pids/pids.max") as limit:
    print(f"current={current.read().strip()}", f"limit={limit.read().strip()}", sep="\\n")
print(f"forked={forked}", f"failed={failed}", f"error={error}", sep="\\n")
"""


async def test_a_fork_bomb_stops_at_the_pids_limit(sandbox: Sandbox) -> None:
    """Forking past the pids limit fails inside the container; the process count stays at the limit."""
    run = await sandbox.run(f"exec python3 -c '{FORK_BOMB}'", limits=LimitSettings(memory="512m", pids=32))
    facts = run.facts()
    assert facts["limit"] == "32"
    assert int(facts["current"]) <= 32
    assert int(facts["forked"]) < 32
    assert int(facts["failed"]) >= 168
    assert facts["error"] == "Resource temporarily unavailable"


async def test_memory_beyond_the_limit_is_an_oom_kill(sandbox: Sandbox) -> None:
    """A process that allocates past its memory (swap = memory) is killed; the runtime says ``oom``."""
    run = await sandbox.run(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes "
        "2>/dev/null | sed -n '1s/^/memory=/p;2s/^/swap=/p'; "
        "exec python3 -c 'b = bytearray(512 * 1024 * 1024); print(\"survived\")'",
        limits=LimitSettings(memory="64m", pids=64),
    )
    assert (run.exit.oom_killed, run.exit.reason) == (True, "oom")
    assert "survived" not in run.out
    assert run.facts()["memory"] == run.facts()["swap"] == str(64 * 1024**2)


async def test_stop_ends_the_worker_promptly_and_nothing_survives(sandbox: Sandbox) -> None:
    """``stop``: init forwards SIGTERM, the worker and its children end at once (not after the grace)."""
    container_id = await sandbox.runtime.start(sandbox.spec("sleep 600 & sleep 600; echo never"))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await sandbox.runtime.stop(container_id, grace_s=10)
    exit_info = await sandbox.runtime.wait(container_id, timeout_s=30)
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    assert (exit_info.exit_code, exit_info.reason) == (143, "stopped")
    assert not (await sandbox.runtime.inspect(container_id)).running
