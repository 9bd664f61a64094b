"""The real agent CLIs, each in its hardened image, run a scenario against the model server container.

For claude-code 2.1.197, codex 0.169.0 and gemini 0.61.0: a ``meta-orchestrator-modelserver``
container (started with testcontainers) serves ``orchestrator/scenarios/write-hello.toml`` on an
internal Docker network; the CLI runs at its top rung with the command its adapter builds, as uid
1000 with a read-only root, no capabilities, ``no-new-privileges`` and tmpfs ``/tmp`` and
``/home/agent``; its work dir is a bind mount. The CLI must create ``hello.txt`` there, and the
server's request log must show the scripted turns in order with the tool result sent back.
Containers and networks carry the label ``orchestrator.test`` and are removed by it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import Mount
from testcontainers.core.container import DockerContainer

from orchestrator.agents import CommandSpec, get_adapter
from orchestrator.agents.base import TOP_RUNG
from orchestrator.config import AgentSettings

SCENARIOS = Path(__file__).resolve().parents[2] / "orchestrator" / "scenarios"
LABEL = "orchestrator.test"
BASE_URL = {"claude": "http://{host}:8080", "codex": "http://{host}:8080/v1", "gemini": "http://{host}:8080"}


@pytest.fixture
def docker_client() -> Iterator[Any]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def run_id(docker_client: Any) -> Iterator[str]:
    """A label value for this test's containers and network, all removed by it afterwards."""
    value = f"modelserver-cli-{uuid.uuid4().hex[:10]}"
    yield value
    selector = {"label": f"{LABEL}={value}"}
    for container in docker_client.containers.list(all=True, filters=selector):
        container.remove(force=True)
    for network in docker_client.networks.list(filters=selector):
        network.remove()


@pytest.fixture
def network(docker_client: Any, run_id: str) -> str:
    """An internal network (no route out) shared by the model server and the CLI."""
    name = f"net-{run_id}"
    docker_client.networks.create(name, driver="bridge", internal=True, labels={LABEL: run_id})
    return name


def hardened(run_id: str) -> dict[str, Any]:
    return {
        "user": "1000:1000",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "labels": {LABEL: run_id},
    }


def start_modelserver(image: str, scenario: Path, network: str, run_id: str) -> DockerContainer:
    """The model server container, reachable on ``network`` as ``modelserver-<run_id>:8080``."""
    container = (
        DockerContainer(image)
        .with_name(f"modelserver-{run_id}")
        .with_volume_mapping(str(scenario), "/scenarios/scenario.toml", "ro")
        .with_command(
            [
                "python3",
                "-m",
                "orchestrator.modelserver",
                "--scenario",
                "/scenarios/scenario.toml",
                "--host",
                "0.0.0.0",
            ]
        )
        .with_kwargs(network=network, mem_limit="256m", **hardened(run_id))
    )
    container.start()
    deadline = time.monotonic() + 30
    while "modelserver.listening" not in logs_of(container)[1]:
        if time.monotonic() > deadline:
            raise AssertionError(f"model server did not start: {logs_of(container)}")
        time.sleep(0.2)
    return container


def logs_of(container: DockerContainer) -> tuple[str, str]:
    out, err = container.get_logs()
    return out.decode(errors="replace"), err.decode(errors="replace")


def run_cli(
    client: Any, image: str, spec: CommandSpec, workdir: Path, files: Path, network: str, run_id: str
) -> tuple[int, str, str]:
    """Run the CLI as the adapter declared it, in the hardened spec; returns (exit code, stdout, stderr)."""
    mounts = [Mount(spec.workdir, str(workdir), type="bind")]
    for index, (path, content) in enumerate(sorted(spec.files.items())):
        host = files / f"{index}-{Path(path).name}"
        host.write_bytes(content)
        host.chmod(0o644)
        mounts.append(Mount(path, str(host), type="bind", read_only=True))
    for index, path in enumerate(spec.state_dirs):
        # the CLI's state folder is a writable mount, as in production (orchestrator/launch.py): a
        # read-only file mounted inside the home tmpfs would otherwise leave its folder root-owned
        state = files / f"state-{index}"
        state.mkdir(exist_ok=True)
        os.chown(state, 1000, 1000)
        mounts.append(Mount(path, str(state), type="bind"))
    container = client.containers.run(
        image,
        spec.argv,
        environment=spec.environment,
        detach=True,
        tmpfs={"/tmp": "size=256m", "/home/agent": "size=256m,uid=1000,gid=1000,mode=0700"},
        network=network,
        mounts=mounts,
        working_dir=spec.workdir,
        init=True,
        mem_limit="2g",
        pids_limit=256,
        **hardened(run_id),
    )
    try:
        code = int(container.wait(timeout=180)["StatusCode"])
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    return code, stdout, stderr


def model_requests(server_stderr: str) -> list[dict[str, Any]]:
    """The server's request log lines for model calls (probes and Gemini side requests left out)."""
    entries = [json.loads(line) for line in server_stderr.splitlines() if line.startswith("{")]
    return [
        e
        for e in entries
        if e.get("event") == "modelserver.request"
        and e.get("family")
        and e.get("answer") not in ("side", "count_tokens")
    ]


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_cli_writes_hello_txt_through_the_model_server(
    agent: str, images: dict[str, str], docker_client: Any, network: str, run_id: str, tmp_path: Path
) -> None:
    """At its top rung, in its hardened image, each real CLI follows the write scenario and creates hello.txt."""
    workdir = tmp_path / "work"
    files = tmp_path / "files"
    workdir.mkdir()
    files.mkdir()
    workdir.chmod(0o777)  # the CLI runs as uid 1000; the test may not be able to chown
    server = start_modelserver(images["modelserver"], SCENARIOS / "write-hello.toml", network, run_id)
    settings = AgentSettings(
        base_url=BASE_URL[agent].format(host=f"modelserver-{run_id}"), api_key="dummy-modelserver-key"
    )
    spec = get_adapter(agent).build_command("make hello.txt", TOP_RUNG, settings=settings)

    code, stdout, stderr = run_cli(docker_client, images[agent], spec, workdir, files, network, run_id)

    requests = model_requests(logs_of(server)[1])
    context = f"exit {code}\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}\nrequests: {requests}"
    assert code == 0, context
    assert (workdir / "hello.txt").read_text() == "hello\n", context
    assert [(r["turn"], r["answer"], r["status"]) for r in requests] == [
        (1, "tool:write", 200),
        (2, "text", 200),
    ], context
    assert requests[1].get("tool_result"), context
    assert "done" in stdout, context
