"""``compose.yaml`` on a real engine: the server image, up, healthy, sessions kept across a restart, down.

The stack runs under a unique project name with the settings a user writes into ``.env`` (here in a
temp project folder): the server image's tag, a token, the Docker socket's group, host folders for
the workspace and the repositories (mounted at the same path inside, see docs/deploy.md), a free
port. It is driven with ``docker-compose`` (Debian bookworm's v1.29; v2 reads the same file) and
always taken down with ``down -v``, whatever failed. Timings are printed (``pytest -s``).
"""

from __future__ import annotations

import importlib
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

from orchestrator.commands.serve import RUNNER_MODULE
from orchestrator.config import Settings
from orchestrator.images import BuildStep, ensure_images, image_refs
from orchestrator.models import SessionCreated, SessionFinished
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.store import EventWriter
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
SERVER_UID = 10001  # the image's own user; compose's ORCH_UID picks it here
TOKEN = "compose-test-token-" + uuid.uuid4().hex
HEALTHY_WITHIN_S = 90.0


def compose_command() -> list[str]:
    """``docker-compose``, or a failure naming the fix under CI (a skip with the reason elsewhere)."""
    found = shutil.which("docker-compose")
    if found is not None:
        return [found]
    message = "docker-compose is not installed: scripts/setup installs it (apt-get install docker-compose)"
    if IN_CI:
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


def runner_available() -> bool:
    """Whether ``orchestrate serve`` gets a session runner (the coordinator's ``make_runner``)."""
    try:
        module = importlib.import_module(RUNNER_MODULE)
    except ModuleNotFoundError:
        return False
    return hasattr(module, "make_runner")


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
def stack(server_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``up -d`` of compose.yaml, healthy; ``down -v`` afterwards whatever happened."""
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


def make_repo(path: Path) -> Path:
    """A git repository with one commit, owned by the server's uid (git refuses others' repositories)."""
    path.mkdir()
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("demo\n")
    subprocess.run(["git", "-C", str(path), "add", "README.md"], check=True)
    subprocess.run(["git", "-C", str(path), *identity, "commit", "-q", "-m", "first"], check=True)
    for item in [path, *path.rglob("*")]:
        os.chown(item, SERVER_UID, SERVER_UID, follow_symlinks=False)
    return path


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


def test_sessions_survive_a_restart(stack: Stack) -> None:
    """A session in the workspace is listed and readable; after ``restart`` (healthy again) it still is.

    A session started through the API is kept too once the coordinator provides the runner (which may
    refuse a start here, with no agent credentials, but only with an error from the tree); until then
    the server is read-only and ``POST /api/sessions`` answers 503 with the reason.
    """
    written = write_session(stack.workspace, "written on the host, read in the container")
    repo = make_repo(stack.repos / "demo")
    with stack.client() as client:
        started = client.post("/api/sessions", json={"prompt": "say hello", "repo": str(repo)})
        listed = {s["id"] for s in client.get("/api/sessions").json()["sessions"]}
        state = client.get(f"/api/sessions/{written}").json()
    expected_ids = {written}
    if not runner_available():
        assert (started.status_code, started.json()["error"]["code"]) == (503, "environment")
    elif started.status_code == 202:
        expected_ids.add(started.json()["session_id"])
    else:
        # No agent credentials are configured here: the runner may refuse the start, but only with an
        # error from the one tree (its status and JSON body), never a server error.
        assert started.status_code in (400, 409, 422, 503), started.text
        assert set(started.json()["error"]) == {"code", "message"}
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
