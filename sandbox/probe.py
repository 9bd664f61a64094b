"""What ``orchestrate sandbox check`` looks at inside a worker container, and what the policy expects.

``PROBE`` is a POSIX shell script (the agent images all have ``sh``, coreutils and ``getent``) that
prints one ``key=value`` fact per line about the container it runs in: its user, capabilities,
no-new-privileges and seccomp mode, which mount points it can write, whether a Docker socket is in
reach, its network devices and name resolution, its pids/memory/CPU limits and its PID 1.
``expected(spec)`` says what POLICIES.md §1 wants for the spec the probe ran with, and
``compare(facts, spec)`` gives one ``Check`` per property. Pure: no Docker here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from orchestrator.runtime.spec import ContainerSpec

PROBE = r"""
st() { sed -n "s/^$1:[[:space:]]*//p" /proc/self/status; }
first() { for f in "$@"; do [ -r "$f" ] && { head -n1 "$f"; return; }; done; echo unknown; }
echo "uid=$(id -u)"; echo "gid=$(id -g)"
echo "cap_eff=$(st CapEff)"; echo "cap_bnd=$(st CapBnd)"
echo "no_new_privs=$(st NoNewPrivs)"; echo "seccomp=$(st Seccomp)"
w=""
for mp in $(awk '{print $2}' /proc/mounts | sort -u); do
  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac
  if [ -d "$mp" ]; then f="$mp/.orchestrator-probe-$$"; touch "$f" 2>/dev/null && rm -f "$f" && w="$w $mp"
  elif [ -f "$mp" ]; then [ -w "$mp" ] && w="$w $mp"; fi
done
echo "writable=$(echo $w)"
s=""
for p in /var/run/docker.sock /run/docker.sock /tmp/docker.sock /home/agent/.docker/run/docker.sock; do
  [ -e "$p" ] && s="$s $p"
done
echo "docker_socket=$(echo $s $(grep -F docker.sock /proc/mounts | awk '{print $2}'))"
echo "docker_host=${DOCKER_HOST:-}"
echo "net_devices=$(ls /sys/class/net | grep -v '^lo$' | tr '\n' ' ' | sed 's/ $//')"
if timeout 3 getent hosts example.com >/dev/null 2>&1; then echo "resolves_outside=yes"; else echo "resolves_outside=no"; fi
echo "pids_max=$(first /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max)"
echo "memory_max=$(first /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max)"
echo "memory_swap_max=$(first /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes /sys/fs/cgroup/memory.swap.max)"
echo "cpu_quota=$(first /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max | awk '{print $1}')"
echo "cpu_period=$(first /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/cpu.max | awk '{print $NF}')"
echo "pid1=$(cat /proc/1/comm)"
echo "probe=done"
""".strip()

NO_CAPS = "0000000000000000"


@dataclass(frozen=True, slots=True)
class Check:
    """One property: what the policy wants, what the container showed."""

    name: str
    expected: str
    actual: str

    @property
    def ok(self) -> bool:
        return self.expected == self.actual

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}


def parse_facts(lines: Iterable[str]) -> dict[str, str]:
    """``key=value`` lines -> dict (the last value of a key wins; other lines are ignored)."""
    facts: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key and key.replace("_", "").isalnum():
            facts[key] = value.strip()
    return facts


def expected(spec: ContainerSpec) -> dict[str, str]:
    """The facts POLICIES.md §1 wants from a container started with ``spec``.

    Writable: exactly the read-write mounts and the two tmpfs. Network ``none``: no device but
    loopback. Swap: cgroup v1 shows memory+swap (= memory), v2 shows the swap alone (0).
    """
    writable = sorted({m.target for m in spec.mounts if not m.read_only} | {t.target for t in spec.tmpfs})
    period = 100_000
    return {
        "uid": str(spec.uid),
        "gid": str(spec.gid),
        "cap_eff": NO_CAPS,
        "cap_bnd": NO_CAPS,
        "no_new_privs": "1",
        "seccomp": "2",
        "writable": " ".join(writable),
        "docker_socket": "",
        "docker_host": "",
        "resolves_outside": "no",
        "pids_max": str(spec.pids_limit),
        "memory_max": str(spec.memory_bytes),
        "memory_swap_max": str(spec.memory_bytes),
        "cpu_quota": str(spec.nano_cpus * period // 1_000_000_000),
        "cpu_period": str(period),
        "pid1": "docker-init",
        "probe": "done",
        **({"net_devices": ""} if spec.network == "none" else {}),
    }


def compare(facts: dict[str, str], spec: ContainerSpec) -> list[Check]:
    """One ``Check`` per expected property; a fact the probe did not print is ``missing``."""
    checks: list[Check] = []
    for name, want in expected(spec).items():
        actual = facts.get(name, "missing")
        if name == "writable":
            actual = " ".join(sorted(actual.split()))
        if name == "memory_swap_max" and actual == "0":  # cgroup v2 reports the swap alone
            actual = str(spec.memory_bytes)
        checks.append(Check(name, want, actual))
    return checks
