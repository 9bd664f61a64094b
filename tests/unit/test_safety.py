"""The sandbox rules of POLICIES.md §1 (``sandbox/safety.py``): every refusal, every guarantee."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from orchestrator.config import LimitSettings, Settings
from orchestrator.errors import ConfigError, InvalidIdentifier, UnsafeMount
from orchestrator.runtime.spec import MountSpec
from sandbox.mounts import HOME_SECRETS, SYSTEM_DENIED
from sandbox.safety import (
    FALLBACK_UID,
    MountRequest,
    Refusal,
    SandboxRoots,
    WorkerRequest,
    build_spec,
    check_mount,
    check_mounts,
    container_user,
    refusal_of,
)

SESSION = "sess0001abcd"
SECRET = "sk-test-0123456789abcdef"


@dataclass(frozen=True)
class Host:
    """A fake host: a home with secret folders, a repository, a session folder with a worktree."""

    root: Path
    home: Path
    repo: Path
    workspace: Path
    worktree: Path
    outside: Path
    extra: Path

    def roots(self, *, worktree: bool = True, extra: bool = False) -> SandboxRoots:
        return SandboxRoots(
            repo=self.repo, workspace=self.workspace, worktree=self.worktree if worktree else None,
            extra=(self.extra,) if extra else (), home=self.home,
        )  # fmt: skip

    def path(self, template: str) -> str:
        return template.format(
            root=self.root, home=self.home, repo=self.repo, ws=self.workspace, wt=self.worktree,
            out=self.outside, extra=self.extra,
        )  # fmt: skip


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = tmp_path_factory.mktemp("host")
    home = root / "home"
    for name in (*HOME_SECRETS, "projects"):
        (home / name).mkdir(parents=True)
    repo = root / "repo"
    for name in ("src", "docs"):
        (repo / name).mkdir(parents=True)
    (repo / "README.md").write_text("hi")
    workspace = root / "workspace" / SESSION
    worktree = workspace / "worktrees" / "t1"
    (worktree / "src").mkdir(parents=True)
    outside = root / "outside"
    outside.mkdir()
    extra = root / "extra"
    extra.mkdir()
    (repo / "link-etc").symlink_to("/etc")
    (repo / "link-ssh").symlink_to(home / ".ssh")
    (repo / "link-out").symlink_to(outside)
    (repo / "link-src").symlink_to(repo / "src")
    (repo / "link-broken").symlink_to(repo / "nothing-here")
    (repo / "loop-a").symlink_to(repo / "loop-b")
    (repo / "loop-b").symlink_to(repo / "loop-a")
    (repo / "docker.sock").write_text("not a socket, but named like one")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(repo / "agent.sock"))
    try:
        yield Host(root, home, repo, workspace, worktree, outside, extra)
    finally:
        sock.close()


# (path template, mode, task, extra root configured, expected refusal)
REFUSED = [
    ("", "ro", "write", False, Refusal.GARBAGE),
    ("{repo}/src\x00", "ro", "write", False, Refusal.GARBAGE),
    ("{repo}/sr\nc", "ro", "write", False, Refusal.GARBAGE),
    ("/" + "x" * 5000, "ro", "write", False, Refusal.GARBAGE),
    ("src", "ro", "write", False, Refusal.RELATIVE),
    ("./src", "ro", "write", False, Refusal.RELATIVE),
    ("~/.ssh", "ro", "write", False, Refusal.RELATIVE),
    ("{repo}/../outside", "ro", "write", False, Refusal.DOTDOT),
    ("{repo}/src/../../home/.ssh", "ro", "write", False, Refusal.DOTDOT),
    ("{repo}/nope", "ro", "write", False, Refusal.MISSING),
    ("{repo}/link-broken", "ro", "write", False, Refusal.MISSING),
    ("{repo}/loop-a", "ro", "write", False, Refusal.MISSING),
    ("/", "ro", "write", False, Refusal.DENIED),
    ("/etc", "ro", "write", False, Refusal.DENIED),
    ("/etc/ssl", "ro", "write", False, Refusal.DENIED),
    ("/proc/self", "ro", "write", False, Refusal.DENIED),
    ("/sys", "ro", "write", False, Refusal.DENIED),
    ("/dev/null", "ro", "write", False, Refusal.DENIED),
    ("/boot", "ro", "write", False, Refusal.DENIED),
    ("/root", "ro", "write", False, Refusal.DENIED),
    ("/var/run", "ro", "write", False, Refusal.DENIED),
    ("/run", "ro", "write", False, Refusal.DENIED),
    ("{home}", "ro", "write", True, Refusal.DENIED),
    ("{home}/.ssh", "ro", "write", True, Refusal.DENIED),
    ("{home}/.aws", "ro", "write", True, Refusal.DENIED),
    ("{home}/.gnupg", "ro", "write", True, Refusal.DENIED),
    ("{home}/.config/gcloud", "ro", "write", True, Refusal.DENIED),
    ("{home}/.docker", "ro", "write", True, Refusal.DENIED),
    ("{home}/.kube", "ro", "write", True, Refusal.DENIED),
    ("{repo}/link-etc", "ro", "write", False, Refusal.DENIED),
    ("{repo}/link-ssh", "ro", "write", False, Refusal.DENIED),
    ("{root}", "ro", "write", False, Refusal.CONTAINS_DENIED),
    ("{home}/.config", "ro", "write", True, Refusal.CONTAINS_DENIED),
    ("/var", "ro", "write", False, Refusal.CONTAINS_DENIED),
    ("{repo}/agent.sock", "ro", "write", False, Refusal.SOCKET),
    ("{repo}/docker.sock", "ro", "write", False, Refusal.SOCKET),
    ("{out}", "ro", "write", False, Refusal.OUTSIDE_ROOTS),
    ("{repo}/link-out", "ro", "write", False, Refusal.OUTSIDE_ROOTS),
    ("{extra}", "ro", "write", False, Refusal.OUTSIDE_ROOTS),
    ("{home}/projects", "ro", "write", False, Refusal.OUTSIDE_ROOTS),
    ("{repo}/src", "rw", "write", False, Refusal.WRITE_NOT_WORKTREE),
    ("{repo}", "rw", "write", False, Refusal.WRITE_NOT_WORKTREE),
    ("{ws}", "rw", "write", False, Refusal.WRITE_NOT_WORKTREE),
    ("{extra}", "rw", "write", True, Refusal.WRITE_NOT_WORKTREE),
    ("{wt}", "rw", "read-only", False, Refusal.WRITE_IN_ANALYSIS),
    ("{wt}/src", "rw", "read-only", False, Refusal.WRITE_IN_ANALYSIS),
]


@pytest.mark.parametrize(("template", "mode", "task", "extra", "expected"), REFUSED)
def test_refused_mounts_name_the_path_and_the_rule(
    host: Host, template: str, mode: str, task: str, extra: bool, expected: Refusal
) -> None:
    """Each unsafe request is refused with ``UnsafeMount`` (exit 2) naming the path and its rule."""
    path = host.path(template)
    with pytest.raises(UnsafeMount) as caught:
        check_mount(MountRequest(path, mode), host.roots(extra=extra), task)  # type: ignore[arg-type]
    assert expected == refusal_of(caught.value)
    assert caught.value.exit_code == 2
    assert path[:300] == caught.value.path
    assert caught.value.rule in str(caught.value)


@pytest.mark.parametrize("garbage", [None, 42, b"/etc", ["/tmp"], Path("/tmp")])
def test_non_string_paths_are_refused_as_garbage(host: Host, garbage: object) -> None:
    """A path that is not a string is refused cleanly, never a crash."""
    with pytest.raises(UnsafeMount) as caught:
        check_mount(MountRequest(garbage, "ro"), host.roots(), "write")  # type: ignore[arg-type]
    assert refusal_of(caught.value) == Refusal.GARBAGE


@pytest.mark.parametrize("mode", ["", "RW", "write", None, 1])
def test_unknown_modes_are_refused(host: Host, mode: object) -> None:
    """Only 'ro' and 'rw' are modes."""
    with pytest.raises(UnsafeMount) as caught:
        check_mount(MountRequest(str(host.repo), mode), host.roots(), "write")  # type: ignore[arg-type]
    assert refusal_of(caught.value) == Refusal.GARBAGE


# (path template, mode, task, expected container path, expected read-only)
ALLOWED = [
    ("{wt}", "rw", "write", "/workspace", False),
    ("{wt}/src", "rw", "write", "/workspace/src", False),
    ("{wt}/src", "ro", "write", "/workspace/src", True),
    ("{wt}", "ro", "read-only", "/workspace", True),
    ("{repo}/src", "ro", "write", "/mnt{repo}/src", True),
    ("{repo}/link-src", "ro", "write", "/mnt{repo}/src", True),
    ("{ws}", "ro", "read-only", "/mnt{ws}", True),
]


@pytest.mark.parametrize(("template", "mode", "task", "target", "read_only"), ALLOWED)
def test_allowed_mounts_are_resolved_and_placed(
    host: Host, template: str, mode: str, task: str, target: str, read_only: bool
) -> None:
    """Allowed paths reach Docker resolved; the task's base is /workspace, other roots under /mnt."""
    actual = check_mount(MountRequest(host.path(template), mode), host.roots(), task)  # type: ignore[arg-type]
    expected_source = str(Path(os.path.realpath(host.path(template))))
    assert MountSpec(source=expected_source, target=host.path(target), read_only=read_only) == actual


def test_without_a_worktree_the_repository_is_the_base(host: Host) -> None:
    """An analysis task with no worktree sees the repository's folders under /workspace."""
    actual = check_mount(MountRequest(f"{host.repo}/src"), host.roots(worktree=False), "read-only")
    assert actual.target == "/workspace/src"


def test_a_home_project_is_allowed_when_its_root_is_configured(host: Host) -> None:
    """A folder in the home is fine when a configured root holds it; only the secrets are denied."""
    roots = SandboxRoots(repo=host.repo, workspace=host.workspace, extra=(host.home,), home=host.home)
    actual = check_mount(MountRequest(f"{host.home}/projects"), roots, "read-only")
    assert str(host.home / "projects") == actual.source


def test_root_is_a_home_not_a_subtree_when_it_is_the_users_home(host: Host) -> None:
    """Run as root (home /root), /root itself and /root/.ssh stay denied; its projects are not."""
    roots = SandboxRoots(repo=host.repo, workspace=host.workspace, home=Path("/root"))
    exact, subtree = roots.denied()
    assert Path("/root") in exact
    assert Path("/root") not in subtree
    assert Path("/root/.ssh") in subtree


@pytest.mark.parametrize("target", ["relative", "/proc/x", "/dev/shm", "/", "/home", "/tmp", "/home/agent",
                                    "/workspace/../etc", "/sys"])  # fmt: skip
def test_bad_container_paths_are_refused(host: Host, target: str) -> None:
    """A container path must be absolute and leave the container's own places alone."""
    with pytest.raises(UnsafeMount) as caught:
        check_mount(MountRequest(f"{host.repo}/docs", "ro", target), host.roots(), "write")
    assert refusal_of(caught.value) == Refusal.BAD_TARGET


def test_two_sources_on_one_container_path_conflict(host: Host) -> None:
    """Two different mounts for one container path are refused; identical repeats are merged."""
    same = [MountRequest(str(host.worktree), "rw"), MountRequest(str(host.worktree), "rw")]
    assert len(check_mounts(same, host.roots(), "write")) == 1
    clash = [MountRequest(str(host.worktree), "rw"), MountRequest(str(host.worktree), "ro")]
    with pytest.raises(UnsafeMount) as caught:
        check_mounts(clash, host.roots(), "write")
    assert refusal_of(caught.value) == Refusal.CONFLICT


def request(host: Host, **changes: object) -> WorkerRequest:
    base: dict[str, object] = {
        "image": "meta-orchestrator-claude:abc", "argv": ["claude", "-p", "do it"], "session_id": SESSION,
        "worker": "claude-t1", "attempt": 2, "task": "write",
        "mounts": [MountRequest(str(host.worktree), "rw"), MountRequest(f"{host.repo}/docs")],
        "roots": host.roots(), "user": (1234, 2345),
        "limits": LimitSettings(memory="1g", cpus=1.5, pids=128, tmp_size="64m", home_size="32m"),
        "network": "orch-net", "env": {"FOO": "bar"}, "secrets": {"ANTHROPIC_API_KEY": SecretStr(SECRET)},
        "task_id": "t1", "agent": "claude",
    }  # fmt: skip
    base.update(changes)
    return WorkerRequest(**base)  # type: ignore[arg-type]


def test_the_spec_is_hardened(host: Host) -> None:
    """Every container: non-root, no caps, no-new-privileges, read-only root, tmpfs, limits, init, labels."""
    spec = build_spec(request(host))
    assert spec.user == "1234:2345"
    assert spec.cap_drop == ("ALL",)
    assert spec.security_opt == ("no-new-privileges:true",)
    assert spec.read_only_root is True
    assert spec.init is True
    assert [t.target for t in spec.tmpfs] == ["/tmp", "/home/agent"]
    assert spec.tmpfs[1].options() == "rw,nosuid,nodev,noexec,size=32m,mode=0700,uid=1234,gid=2345"
    assert spec.memory_bytes == 1024**3
    assert spec.nano_cpus == 1_500_000_000
    assert spec.pids_limit == 128
    assert spec.network == "orch-net"
    assert spec.name == "orch-sess0001abcd-claude-t1-2"
    expected_labels = {
        "orchestrator.managed": "true", "orchestrator.session": SESSION, "orchestrator.worker": "claude-t1",
        "orchestrator.attempt": "2", "orchestrator.task": "t1", "orchestrator.agent": "claude",
    }  # fmt: skip
    assert expected_labels == spec.labels
    assert [("/workspace", False), (f"/mnt{host.repo}/docs", True)] == [
        (m.target, m.read_only) for m in spec.mounts
    ]


def test_secrets_travel_only_in_the_environment(host: Host) -> None:
    """The key is in ``secrets`` (hidden in repr), absent from argv, labels and plain env."""
    spec = build_spec(request(host))
    assert spec.environment["ANTHROPIC_API_KEY"] == SECRET
    assert "ANTHROPIC_API_KEY" not in spec.env
    assert SECRET not in repr(spec)
    assert all(SECRET not in text for text in [*spec.argv, *spec.labels.values(), *spec.env.values()])


@pytest.mark.parametrize("where", ["argv", "env"])
def test_a_secret_outside_secrets_is_refused_without_echoing_it(host: Host, where: str) -> None:
    """A key put into argv or plain env refuses the spec, and the error never repeats the key."""
    changes: dict[str, object] = {"argv": ["claude", SECRET]} if where == "argv" else {"env": {"K": SECRET}}
    with pytest.raises(ConfigError) as caught:
        build_spec(request(host, **changes))
    assert SECRET not in str(caught.value)
    assert "secret" in str(caught.value)


def test_analysis_tasks_get_no_write_mount(host: Host) -> None:
    """A read-only task that asks for its worktree read-write is refused; read-only it runs."""
    with pytest.raises(UnsafeMount) as caught:
        build_spec(request(host, task="read-only"))
    assert refusal_of(caught.value) == Refusal.WRITE_IN_ANALYSIS
    spec = build_spec(request(host, task="read-only", mounts=[MountRequest(str(host.worktree))]))
    assert all(m.read_only for m in spec.mounts)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"session_id": "../etc"}, InvalidIdentifier),
        ({"session_id": ""}, InvalidIdentifier),
        ({"worker": "a/b"}, InvalidIdentifier),
        ({"attempt": 0}, ConfigError),
        ({"task": "everything"}, ConfigError),
        ({"network": "host"}, ConfigError),
        ({"user": (0, 0)}, ConfigError),
        ({"image": "bad image"}, ConfigError),
        ({"argv": []}, ConfigError),
        ({"argv": ["a\x00b"]}, ConfigError),
        ({"env": {"BAD NAME": "x"}}, ConfigError),
        ({"limits": LimitSettings(memory="lots")}, ConfigError),
    ],
)
def test_garbage_requests_get_clear_errors(
    host: Host, changes: dict[str, object], error: type[Exception]
) -> None:
    """Bad ids, modes, networks, users, images, argv or limits are refused with a usage error (exit 2)."""
    with pytest.raises(error) as caught:
        build_spec(request(host, **changes))
    assert caught.value.exit_code == 2  # type: ignore[attr-defined]


def test_container_user_is_the_repository_owner_never_root(tmp_path: Path, settings: Settings) -> None:
    """The repository's owner runs the container; a root-owned repository falls back to uid 1000."""
    repo = tmp_path / "repo"
    repo.mkdir()
    if os.geteuid() == 0:
        assert container_user(repo, settings) == (FALLBACK_UID, FALLBACK_UID)
        os.chown(repo, 4321, 4322)
    assert (repo.stat().st_uid, repo.stat().st_gid) == container_user(repo, settings)
    assert container_user(repo, settings.model_copy(update={"uid": 5000, "gid": 5001})) == (5000, 5001)


@pytest.mark.parametrize(("uid", "gid"), [(0, None), (1000, 0), (0, 0)])
def test_configured_root_user_is_refused(
    tmp_path: Path, settings: Settings, uid: int, gid: int | None
) -> None:
    """ORCH_UID/ORCH_GID 0 is a configuration error, not a root container."""
    with pytest.raises(ConfigError):
        container_user(tmp_path, settings.model_copy(update={"uid": uid, "gid": gid}))


def test_an_unreadable_repository_is_a_clear_error(tmp_path: Path, settings: Settings) -> None:
    """A repository path that does not exist cannot give an owner."""
    with pytest.raises(ConfigError) as caught:
        container_user(tmp_path / "missing", settings)
    assert "missing" in str(caught.value)


# -- properties ------------------------------------------------------------------------------
KNOWN = ["{repo}", "{repo}/src", "{repo}/docs", "{repo}/README.md", "{repo}/link-src", "{repo}/link-etc",
         "{repo}/link-ssh", "{repo}/link-out", "{wt}", "{wt}/src", "{ws}", "{ws}/worktrees", "{extra}",
         "{home}", "{home}/projects", "{home}/.ssh", "{root}", "{out}", "/etc", "/var", "/proc", "/"]  # fmt: skip
PARTS = ["src", "docs", "..", ".", "link-etc", "link-ssh", "link-out", "link-src", "nope", ".ssh",
         "agent.sock", "docker.sock", "", "worktrees", "t1", "repo", "home", "projects", ".aws"]  # fmt: skip
PATHS = st.sampled_from(KNOWN) | st.tuples(
    st.sampled_from(KNOWN), st.lists(st.sampled_from(PARTS), max_size=2)
).map(lambda t: "/".join([t[0], *t[1]]).replace("//", "/"))
REQUESTS = st.tuples(PATHS, st.sampled_from(["ro", "rw"]))


def _denied_or_near(source: Path, roots: SandboxRoots) -> bool:
    exact, subtree = roots.denied()
    system = {Path(p) for p in SYSTEM_DENIED}
    return any(source == d or d.is_relative_to(source) for d in exact | subtree | system) or any(
        source.is_relative_to(d) for d in subtree | system
    )


@settings(max_examples=1000, deadline=None)
@given(st.lists(REQUESTS, min_size=1, max_size=2), st.sampled_from(["read-only", "write"]), st.booleans())
def test_no_spec_ever_holds_a_denied_path_or_a_foreign_write(
    host: Host, requests: list[tuple[str, str]], task: str, extra: bool
) -> None:
    """For any paths at all: refused, or every mount is allowed, undenied, and rw only in the worktree."""
    roots = host.roots(extra=extra)
    mounts = [MountRequest(host.path(path), mode) for path, mode in requests]  # type: ignore[arg-type]
    try:
        spec = build_spec(request(host, mounts=mounts, task=task, roots=roots))
    except UnsafeMount as err:
        event(f"refused: {refusal_of(err)}")
        return
    event(f"allowed, {sum(not m.read_only for m in spec.mounts)} rw")
    worktree = host.worktree.resolve()
    allowed = roots.allowed()
    for mount in spec.mounts:
        source = Path(mount.source)
        assert not _denied_or_near(source, roots), mount
        assert any(source == r or source.is_relative_to(r) for r in allowed), mount
        if not mount.read_only:
            assert task == "write"
            assert source == worktree or source.is_relative_to(worktree), mount
