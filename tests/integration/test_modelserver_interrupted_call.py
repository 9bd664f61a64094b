"""A Codex tool call cut short by a stop is issued again to the resumed session (real Codex 0.169).

Codex records a tool call in its session log before it runs it. Stopped while the call runs, it
leaves a call without an output, and ``codex exec resume`` sends that call with the output text
``aborted`` (its stand-in for an output it never got). The demo met this at random: its rung-0
Codex was stopped just as the re-issued write arrived, the server read ``aborted`` as a success,
disarmed the ``retry_failed`` turn and answered the resumed Codex with the closing text, so the
file was never written. Recorded there, from the request of the resumed Codex:
``{"type": "custom_tool_call_output", "call_id": "call_…", "output": "aborted"}``.

Here the stop lands inside the call every time: the scripted shell call blocks the first time it
runs (it leaves a marker in the work dir, then sleeps) and returns at once when the marker is there.
The test stops Codex once the marker appears, resumes its session, and expects the call to be
issued again (and to finish) before the closing text. Setup as in ``test_modelserver_cli``: the
model server container on an internal network, Codex in its hardened image at its top rung (where a
shell call runs), containers and network labelled ``orchestrator.test`` and removed afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import Mount

from orchestrator.agents import CommandSpec, get_adapter
from orchestrator.agents.base import TOP_RUNG
from orchestrator.config import AgentSettings
from tests.integration.test_modelserver_cli import BASE_URL, LABEL, hardened

pytestmark = pytest.mark.timeout(180)

SCENARIO = """
[[turn]]
text = "Running the step."
shell = "if [ -e started ]; then echo finished; else touch started; sleep 120; fi"
retry_failed = 3

[[turn]]
text = "done"
"""
PROMPT = "run the step"


class Lab:
    """One test's network, model server and Codex containers, all carrying its label."""

    def __init__(self, client: Any, root: Path, image: str) -> None:
        self.client = client
        self.run_id = f"modelserver-interrupt-{uuid.uuid4().hex[:10]}"
        self.root = root
        self.image = image
        self.workdir = root / "work"
        self.logs = root / "logs"
        self.state = root / "codex-home"
        for folder in (self.workdir, self.logs, self.state):
            folder.mkdir()
            folder.chmod(0o777)  # the containers run as uid 1000; the test may not be able to chown
        self.network = f"net-{self.run_id}"
        client.networks.create(self.network, driver="bridge", internal=True, labels={LABEL: self.run_id})

    def start_server(self, image: str) -> None:
        """The model server, with ``--log`` (full bodies) in ``logs/requests.jsonl``."""
        (self.root / "scenario.toml").write_text(SCENARIO)
        argv = ["python3", "-m", "orchestrator.modelserver", "--scenario", "/scenario.toml",
                "--host", "0.0.0.0", "--log", "/logs/requests.jsonl"]  # fmt: skip
        mounts = [
            Mount("/scenario.toml", str(self.root / "scenario.toml"), type="bind", read_only=True),
            Mount("/logs", str(self.logs), type="bind"),
        ]
        server = self.client.containers.run(
            image, argv, name=f"modelserver-{self.run_id}", detach=True, network=self.network,
            mounts=mounts, mem_limit="256m", **hardened(self.run_id),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while b"modelserver.listening" not in server.logs(stdout=False, stderr=True):
            assert time.monotonic() < deadline, server.logs().decode(errors="replace")
            time.sleep(0.2)

    def codex(self, resume_id: str | None = None) -> Any:
        """Start Codex at its top rung (resuming ``resume_id``) with the adapter's own command."""
        settings = AgentSettings(
            base_url=BASE_URL["codex"].format(host=f"modelserver-{self.run_id}"), api_key="dummy-key"
        )
        spec: CommandSpec = get_adapter("codex").build_command(
            PROMPT, TOP_RUNG, settings=settings, resume_id=resume_id
        )
        mounts = [Mount(spec.workdir, str(self.workdir), type="bind")]
        for index, (path, content) in enumerate(sorted(spec.files.items())):
            host = self.root / f"file-{index}-{Path(path).name}"
            host.write_bytes(content)
            host.chmod(0o644)
            mounts.append(Mount(path, str(host), type="bind", read_only=True))
        (state_dir,) = spec.state_dirs  # the session logs that ``exec resume`` reads
        mounts.append(Mount(state_dir, str(self.state), type="bind"))
        return self.client.containers.run(
            self.image, spec.argv, environment=spec.environment, detach=True, network=self.network,
            mounts=mounts, working_dir=spec.workdir, init=True, mem_limit="2g", pids_limit=256,
            tmpfs={"/tmp": "size=256m", "/home/agent": "size=256m,uid=1000,gid=1000,mode=0700"},
            **hardened(self.run_id),
        )  # fmt: skip

    def call_running(self) -> bool:
        """The scripted call has started (its marker) and Codex has logged it (its session log)."""
        logs = self.state.rglob("rollout-*.jsonl")
        logged = any('"type":"function_call"' in log.read_text(errors="replace") for log in logs)
        return logged and (self.workdir / "started").exists()

    def requests(self) -> list[dict[str, Any]]:
        """The server's model requests, each with its full body."""
        path = self.logs / "requests.jsonl"
        entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [e for e in entries if e.get("family")]

    def remove(self) -> None:
        selector = {"label": f"{LABEL}={self.run_id}"}
        for container in self.client.containers.list(all=True, filters=selector):
            container.remove(force=True)
        for network in self.client.networks.list(filters=selector):
            network.remove()


@pytest.fixture
def lab(tmp_path: Path, images: dict[str, str]) -> Iterator[Lab]:
    client = docker.from_env()
    box = Lab(client, tmp_path, images["codex"])
    try:
        box.start_server(images["modelserver"])
        yield box
    finally:
        box.remove()
        client.close()


def output_of(container: Any) -> str:
    return str(container.logs(stdout=True, stderr=True).decode(errors="replace"))


def latest_output(body: dict[str, Any]) -> dict[str, Any]:
    """The last ``*_call_output`` item of a Responses request."""
    outputs = [item for item in body["input"] if str(item.get("type", "")).endswith("_call_output")]
    return dict(outputs[-1])


def test_a_call_interrupted_by_a_stop_is_issued_again_to_the_resumed_codex(lab: Lab) -> None:
    """Stopped mid-call, resumed: the call comes back as ``aborted``, is re-issued, runs, then "done"."""
    first = lab.codex()
    deadline = time.monotonic() + 60
    while not lab.call_running():
        first.reload()
        assert first.status == "running" and time.monotonic() < deadline, output_of(first)
        time.sleep(0.1)
    first.stop(timeout=2)
    first_output = output_of(first)
    thread = next(
        json.loads(line)["thread_id"] for line in first_output.splitlines() if '"thread.started"' in line
    )
    served_before_resume = len(lab.requests())

    resumed = lab.codex(resume_id=thread)
    code = int(resumed.wait(timeout=120)["StatusCode"])

    story = f"first run:\n{first_output[-2000:]}\nresumed:\n{output_of(resumed)[-3000:]}"
    after = lab.requests()[served_before_resume:]
    assert code == 0, story
    assert after, story
    cut_short = latest_output(after[0]["body"])
    assert (cut_short["type"], cut_short["output"]) == ("function_call_output", "aborted"), story
    answered = [(e["turn"], e["answer"], e.get("retry"), e.get("tool_error")) for e in after]
    assert answered == [(1, "tool:shell", 1, True), (2, "text", None, False)], story
    assert "finished" in latest_output(after[1]["body"])["output"], story
    assert '"text":"done"' in output_of(resumed), story
