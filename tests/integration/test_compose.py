"""``compose.yaml`` on a real engine: the server image, up, healthy, a real session, a restart, down.

The stack runs under a unique project name with the settings a user writes into ``.env`` (here in a
temp project folder): the server image's tag, a token, the Docker socket's group, host folders for
the workspace and the repositories (mounted at the same path inside, see docs/deploy.md), a free
port. It is driven with ``docker-compose`` (Debian bookworm's v1.29; v2 reads the same file) and
always taken down with ``down -v``, whatever failed; the containers and networks of its sessions are
removed by label.

The credential-free demo runs through the API of the containerised server: the server starts the
worker containers through the host's socket as siblings, which mount the task clones by their host
paths (the same-path workspace). The images are built on the host first (the ``images`` fixture,
as ``orchestrate images build``): the server image has no docker CLI or npm, and the server never
builds. Timings are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from orchestrator.commands.demo import DEMO_PROMPT, example_repo
from orchestrator.config import Settings
from orchestrator.gitwork import git
from orchestrator.images import BuildStep, ensure_images, image_refs
from orchestrator.models import SessionCreated, SessionFinished
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.store import EventReader, EventWriter
from tests.conftest import IN_CI
from tests.support.served import remove_sessions, running_containers

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
SERVER_UID = 10001  # the image's own user; compose's ORCH_UID picks it here
TOKEN = "compose-test-token-" + uuid.uuid4().hex
HEALTHY_WITHIN_S = 90.0
SESSION_WITHIN_S = 420.0
pytestmark = pytest.mark.timeout(900)


def compose_command() -> list[str]:
    """``docker-compose``, or a failure naming the fix under CI (a skip with the reason elsewhere)."""
    found = shutil.which("docker-compose")
    if found is not None:
        return [found]
    message = "docker-compose is not installed: scripts/setup installs it (apt-get install docker-compose)"
    if IN_CI:
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server_image(docker_engine: None) -> str:
    """The server image for the current checkout, built if missing (about 20 s)."""

    def show(step: BuildStep) -> None:
        if step.built:
            print(f"[images] {step.image} {step.step} {step.seconds:.1f} s")

    return ensure_images(Settings(_env_file=None), ["server"], progress=show)["server"]


@dataclass
class Stack:
    """One compose project: its command line, its folders, its URL, and what was measured."""

    base: list[str]
    project_dir: Path
    workspace: Path
    repos: Path
    url: str
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "COMPOSE_", "DOCKER_GID"))}
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def container(self) -> str:
        container_id = self.run("ps", "-q", "server").stdout.strip()
        assert container_id, "compose lists no server container"
        return container_id

    def health(self) -> str:
        done = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Health.Status}}", self.container()],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    def wait_healthy(self) -> float:
        """Seconds until the engine reports the healthcheck passing (v1 has no ``up --wait``)."""
        started = time.monotonic()
        while (status := self.health()) != "healthy":
            waited = time.monotonic() - started
            if status == "unhealthy" or waited > HEALTHY_WITHIN_S:
                logs = self.run("logs", "--tail", "40", "server", check=False)
                raise AssertionError(f"server is {status} after {waited:.0f} s:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)
        return time.monotonic() - started

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def stack(
    server_image: str, images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """``up -d`` of compose.yaml, healthy (the agent images built on the host first); ``down -v``
    afterwards and every session's containers and network removed by label, whatever happened."""
    command = compose_command()
    folder = tmp_path_factory.mktemp("compose")
    workspace, repos = folder / "workspace", folder / "repos"
    for path in (workspace, repos):
        path.mkdir()
        os.chown(path, SERVER_UID, SERVER_UID)
    port = free_port()
    dotenv = {
        "ORCH_SERVER_IMAGE": server_image,
        "ORCH_API_TOKEN": TOKEN,
        "DOCKER_GID": str(Path("/var/run/docker.sock").stat().st_gid),
        "ORCH_UID": str(SERVER_UID),
        "ORCH_GID": str(SERVER_UID),
        "ORCH_HOST_WORKSPACE": str(workspace),
        "ORCH_HOST_REPOS": str(repos),
        "ORCH_PORT": str(port),
    }
    (folder / ".env").write_text("".join(f"{key}={value}\n" for key, value in dotenv.items()))
    project = f"orchtest{uuid.uuid4().hex[:10]}"
    base = [*command, "--project-directory", str(folder), "-f", str(COMPOSE_FILE), "-p", project]
    stack = Stack(base, folder, workspace, repos, f"http://127.0.0.1:{port}")
    try:
        started = time.monotonic()
        stack.run("up", "-d")
        stack.timings["up -d"] = time.monotonic() - started
        stack.timings["healthy after up"] = stack.wait_healthy()
        yield stack
    finally:
        remove_sessions(workspace)
        started = time.monotonic()
        down = stack.run("down", "-v", "--remove-orphans", check=False)
        stack.timings["down -v"] = time.monotonic() - started
        print("[compose timings] " + json.dumps({k: round(v, 2) for k, v in stack.timings.items()}))
        assert down.returncode == 0, down.stderr


def write_session(workspace: Path, prompt: str) -> str:
    """A finished session written by another process (as ``orchestrate run`` would), owned by the server's uid."""
    session_id = new_session_id()
    paths = SessionPaths.of(workspace, session_id)
    with EventWriter.open(paths) as writer:
        writer.emit("orchestrator", SessionCreated(prompt=prompt, repo="/srv/repos/demo"))
        writer.emit("orchestrator", SessionFinished(status="succeeded", summary="written on the host"))
        writer.flush()
    for path in [paths.root, *paths.root.rglob("*")]:
        os.chown(path, SERVER_UID, SERVER_UID)
    return session_id


def server_owned(path: Path) -> Path:
    """``path`` and everything in it handed to the server's uid (git refuses others' repositories)."""
    for item in [path, *path.rglob("*")]:
        os.chown(item, SERVER_UID, SERVER_UID, follow_symlinks=False)
    return path


@pytest.fixture(scope="module")
def demo_session(stack: Stack) -> str:
    """The credential-free demo started through the containerised server's API, run to its end
    (``POST /api/sessions`` with ``options.scenario = "demo"``); its id."""
    repo = server_owned(example_repo(stack.repos / "example"))
    body = {"prompt": DEMO_PROMPT, "repo": str(repo), "options": {"scenario": "demo"}}
    with stack.client() as client:
        started = time.monotonic()
        answer = client.post("/api/sessions", json=body, timeout=120)
        assert answer.status_code == 202, answer.text
        session_id: str = answer.json()["session_id"]
        stack.timings["demo: POST /api/sessions"] = time.monotonic() - started
        status = None
        while time.monotonic() - started < SESSION_WITHIN_S:
            status = client.get(f"/api/sessions/{session_id}").json()["status"]
            if status in ("succeeded", "failed", "stopped"):
                break
            time.sleep(1)
        stack.timings["demo: POST to finished"] = time.monotonic() - started
    assert status == "succeeded", stack.run("logs", "--tail", "60", "server", check=False).stdout
    while running_containers(session_id) and time.monotonic() - started < SESSION_WITHIN_S:
        time.sleep(0.5)  # the model server and proxies go after session_finished
    return session_id


def test_compose_config_refuses_a_missing_token_with_the_fix() -> None:
    """Without ORCH_API_TOKEN, compose stops before starting anything and says what to set."""
    command = compose_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update({"ORCH_SERVER_IMAGE": "meta-orchestrator-server:0", "DOCKER_GID": "0"})
    done = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "-p", "orchtestconfig", "config"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "set ORCH_API_TOKEN (16+ characters)" in done.stderr


def test_the_image_runs_as_a_non_root_user_and_refuses_to_serve_without_a_token(server_image: str) -> None:
    """The image's own command binds 0.0.0.0; without a token it exits with the fix, never serving."""
    user = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Config.User}}", server_image],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"{SERVER_UID}:{SERVER_UID}" == user.stdout.strip()
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", server_image],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "refusing to serve on '0.0.0.0' without a token" in done.stdout + done.stderr


def test_a_short_token_is_refused_at_start(server_image: str) -> None:
    """A token under 16 characters is garbage: the server exits and says how to make a good one."""
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-e", "ORCH_API_TOKEN=short", server_image],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "the API token is 5 characters long; use at least 16" in done.stdout + done.stderr


def test_health_answers_without_a_token_and_the_api_needs_one(stack: Stack) -> None:
    """/api/health is open (the healthcheck uses it); every other /api route wants the bearer token."""
    with stack.client(token=None) as anonymous:
        health = anonymous.get("/api/health")
        refused = anonymous.get("/api/sessions")
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized")
    with stack.client(token="x" * 32) as wrong:
        assert wrong.get("/api/sessions").status_code == 401
    with stack.client() as client:
        assert client.get("/api/sessions").status_code == 200


def test_the_server_sees_the_host_paths_and_computes_the_hosts_image_tags(stack: Stack) -> None:
    """Inside, ORCH_WORKSPACE is the host's path, unset pass-throughs keep their defaults, and the agent
    image tags (hashes of inputs shipped in the image) are the ones ``orchestrate images build`` made."""
    script = (
        "import json; from orchestrator.config import Settings; from orchestrator.images import image_refs; "
        "s = Settings(); names = ['base', 'claude', 'codex', 'gemini', 'modelserver', 'proxy']; "
        "print(json.dumps({'workspace': str(s.workspace), 'roots': [str(r) for r in s.allowed_roots], "
        "'prefix': s.image_prefix, 'base_image': s.base_image, 'refs': image_refs(s, names)}))"
    )
    done = subprocess.run(
        ["docker", "exec", stack.container(), "python", "-c", script],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    inside = json.loads(done.stdout)
    names = ["base", "claude", "codex", "gemini", "modelserver", "proxy"]
    expected = {
        "workspace": str(stack.workspace),
        "roots": [str(stack.repos)],
        "prefix": "meta-orchestrator",
        "base_image": None,
        "refs": image_refs(Settings(_env_file=None), names),
    }
    assert expected == inside


def test_the_server_reaches_the_engine_through_the_socket_as_non_root(stack: Stack) -> None:
    """The non-root server user (socket group via group_add) can talk to the host's engine."""
    script = "import os, docker; print(os.getuid(), docker.from_env().ping())"
    done = subprocess.run(
        ["docker", "exec", stack.container(), "python", "-c", script],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (0, f"{SERVER_UID} True") == (done.returncode, done.stdout.strip()), done.stderr


def test_a_demo_session_runs_in_the_containerised_server(stack: Stack, demo_session: str) -> None:
    """The server in its container ran the demo: its workers were sibling containers of the host's
    engine that wrote into the task clones through their host paths, so both files are merged on
    ``orch/<session>`` of the repository, the report lists three succeeded tasks, and nothing of the
    session keeps running."""
    with stack.client() as client:
        report = client.get(f"/api/sessions/{demo_session}/report")
    assert report.status_code == 200, report.text
    tasks = [(t["id"], t["agent"], t["status"]) for t in report.json()["tasks"]]
    assert tasks == [
        ("t1", "gemini", "succeeded"),
        ("t2", "codex", "succeeded"),
        ("t3", "claude", "succeeded"),
    ]
    repo = stack.repos / "example"
    merged = git(repo, "ls-tree", "--name-only", f"orch/{demo_session}").stdout.split()
    assert {"greeting.py", "NOTES.md"} <= set(merged)
    events = list(EventReader(SessionPaths.of(stack.workspace, demo_session)).read())
    started = [e for e in events if e.type == "worker_started"]
    assert {e.worker for e in started} >= {"planner", "gemini-t1", "codex-t2", "claude-t3"}
    assert running_containers(demo_session) == []


def test_a_session_without_credentials_is_refused_with_the_fix(stack: Stack) -> None:
    """No agent key is configured in the stack: a start without a scenario answers 503
    ``credentials_missing`` naming the setting, before anything runs."""
    repo = server_owned(example_repo(stack.repos / "needs-keys"))
    with stack.client() as client:
        answer = client.post("/api/sessions", json={"prompt": "say hello", "repo": str(repo)})
    error = answer.json()["error"]
    assert (answer.status_code, error["code"]) == (503, "credentials_missing")
    assert "ORCH_CLAUDE__API_KEY" in error["message"]


def test_sessions_survive_a_restart(stack: Stack, demo_session: str) -> None:
    """A session written on the host and the demo run by the server are listed and readable; after
    ``restart`` (healthy again) they still are."""
    written = write_session(stack.workspace, "written on the host, read in the container")
    with stack.client() as client:
        listed = {s["id"] for s in client.get("/api/sessions").json()["sessions"]}
        state = client.get(f"/api/sessions/{written}").json()
    expected_ids = {written, demo_session}
    assert expected_ids <= listed
    assert (state["status"], state["prompt"]) == ("succeeded", "written on the host, read in the container")

    before = stack.container()
    started_at = time.monotonic()
    stack.run("restart")
    stack.timings["restart"] = time.monotonic() - started_at
    stack.timings["healthy after restart"] = stack.wait_healthy()
    assert before == stack.container()  # the same container, restarted
    with stack.client() as client:
        again = {s["id"] for s in client.get("/api/sessions").json()["sessions"]}
        events = client.get(f"/api/sessions/{written}/events").json()["events"]
    assert expected_ids <= again
    assert [e["type"] for e in events] == ["session_created", "session_finished"]


def test_stop_ends_the_server_gracefully_with_exit_0(stack: Stack) -> None:
    """``stop`` sends SIGTERM: the server shuts down by itself within compose's stop_grace_period and
    exits 0 (not killed); ``start`` brings it back healthy."""
    container = stack.container()
    started_at = time.monotonic()
    stack.run("stop")
    stack.timings["stop"] = time.monotonic() - started_at
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", container],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert state.stdout.split() == ["0", "false"]
    stack.run("start")
    stack.timings["healthy after start"] = stack.wait_healthy()
