"""A tool call cut short by a stop is issued again to each resumed CLI (real Claude Code 2.1.197,
Codex 0.169, Gemini CLI 0.61).

The scenario runs a quick step (``echo ready``), then a step whose shell call blocks the first time
it runs (it leaves a marker in the work dir, then sleeps) and returns at once when the marker is
there. The test stops the CLI once the marker appears (so the stop lands inside the call every
time), resumes its session with the adapter's resume command, and expects the blocking call to be
issued again (``retry_failed``) and to finish before the closing text. What each resumed CLI sends
for the cut call differs:

- ``codex exec resume`` sends the call with the output text ``aborted`` (its stand-in for an output
  it never got), a failed result. The demo met this at random: its rung-0 Codex was stopped just as
  the re-issued write arrived; the server read ``aborted`` as a success and answered the resumed
  Codex with the closing text, so the file was never written.
- ``claude --resume`` drops the ``tool_use`` (logged before the call ran) and ``gemini --resume``
  never had the ``functionCall`` in its chat (it logs a call once finished): the call is not in the
  conversation at all, only the text said with it, and the latest tool result is the quick step's
  success. The server once read that as the call having gone through and moved on to "done"; now a
  request that brings no new tool result counts as failed (logged ``unanswered``).

Setup as in ``test_modelserver_cli``: the model server container on an internal network, the CLI in
its hardened image at its top rung (where a shell call runs), its state folder (the session logs
that the resume reads) a bind mount, containers and network labelled ``orchestrator.test`` and
removed afterwards.
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

# a call that never ends the first time it runs (shared with the other half of these tests)
SCENARIO = (
    Path(__file__).resolve().parents[1] / "fixtures" / "scenarios" / "interrupted-call.toml"
).read_text()
PROMPT = "run the step"
BLOCKING = "touch started"
# Where a CLI logs a call before running it (None: it logs calls once they finished), under its state dir.
CALL_LOG = {"claude": "projects/*/*.jsonl", "codex": "sessions/**/rollout-*.jsonl", "gemini": None}


class Lab:
    """One test's network, model server and CLI containers, all carrying its label."""

    def __init__(self, client: Any, root: Path, agent: str, image: str) -> None:
        self.client = client
        self.run_id = f"modelserver-interrupt-{uuid.uuid4().hex[:10]}"
        self.root = root
        self.agent = agent
        self.image = image
        self.workdir = root / "work"
        self.logs = root / "logs"
        self.state = root / "cli-state"
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

    def cli(self, resume_id: str | None = None) -> Any:
        """Start the CLI at its top rung (resuming ``resume_id``) with the adapter's own command."""
        settings = AgentSettings(
            base_url=BASE_URL[self.agent].format(host=f"modelserver-{self.run_id}"), api_key="dummy-key"
        )
        spec: CommandSpec = get_adapter(self.agent).build_command(
            PROMPT, TOP_RUNG, settings=settings, resume_id=resume_id
        )
        mounts = [Mount(spec.workdir, str(self.workdir), type="bind")]
        for index, (path, content) in enumerate(sorted(spec.files.items())):
            host = self.root / f"file-{index}-{Path(path).name}"
            host.write_bytes(content)
            host.chmod(0o644)
            mounts.append(Mount(path, str(host), type="bind", read_only=True))
        (state_dir,) = spec.state_dirs  # the session logs that the resume reads
        mounts.append(Mount(state_dir, str(self.state), type="bind"))
        return self.client.containers.run(
            self.image, spec.argv, environment=spec.environment, detach=True, network=self.network,
            mounts=mounts, working_dir=spec.workdir, init=True, mem_limit="2g", pids_limit=256,
            tmpfs={"/tmp": "size=256m", "/home/agent": "size=256m,uid=1000,gid=1000,mode=0700"},
            **hardened(self.run_id),
        )  # fmt: skip

    def call_running(self) -> bool:
        """The blocking call has started (its marker) and the CLI has logged it, if it logs calls early."""
        pattern = CALL_LOG[self.agent]
        logs = self.state.glob(pattern) if pattern else ()
        logged = pattern is None or any(BLOCKING in log.read_text(errors="replace") for log in logs)
        return logged and (self.workdir / "started").exists()

    def requests(self) -> list[dict[str, Any]]:
        """The server's model requests (not probes, token counts or Gemini side requests), with full bodies."""
        path = self.logs / "requests.jsonl"
        entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [e for e in entries if e.get("family") and e.get("answer") not in ("side", "count_tokens")]

    def remove(self) -> None:
        selector = {"label": f"{LABEL}={self.run_id}"}
        for container in self.client.containers.list(all=True, filters=selector):
            container.remove(force=True)
        for network in self.client.networks.list(filters=selector):
            network.remove()


@pytest.fixture(params=["claude", "codex", "gemini"])
def lab(request: pytest.FixtureRequest, tmp_path: Path, images: dict[str, str]) -> Iterator[Lab]:
    client = docker.from_env()
    box = Lab(client, tmp_path, request.param, images[request.param])
    try:
        box.start_server(images["modelserver"])
        yield box
    finally:
        box.remove()
        client.close()


def output_of(container: Any) -> str:
    return str(container.logs(stdout=True, stderr=True).decode(errors="replace"))


def session_of(output: str) -> str:
    """The session id the CLI printed: Claude's and Gemini's ``session_id``, Codex's ``thread_id``."""
    for line in output.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            found = event.get("session_id") or event.get("thread_id")
            if isinstance(found, str):
                return found
    raise AssertionError(f"no session id in:\n{output[-2000:]}")


def calls_and_results(agent: str, body: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The tool calls of a request (call id: its arguments) and their results (call id: its text)."""
    if agent == "claude":
        blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
        calls = {b["id"]: str(b["input"]) for b in blocks if b["type"] == "tool_use"}
        results = {b["tool_use_id"]: str(b["content"]) for b in blocks if b["type"] == "tool_result"}
    elif agent == "codex":
        items = body["input"]
        calls = {i["call_id"]: i["arguments"] for i in items if i.get("type") == "function_call"}
        results = {i["call_id"]: i["output"] for i in items if i.get("type") == "function_call_output"}
    else:
        parts = [p for c in body["contents"] for p in c["parts"]]
        calls = {
            p["functionCall"]["id"]: str(p["functionCall"]["args"]) for p in parts if "functionCall" in p
        }
        results = {
            p["functionResponse"]["id"]: str(p["functionResponse"]["response"])
            for p in parts
            if "functionResponse" in p
        }
    return calls, results


def cut_call_result(agent: str, body: dict[str, Any]) -> str | None:
    """The result ``body`` holds for the blocking call ("" if none), None if the call is not in it."""
    calls, results = calls_and_results(agent, body)
    cut = next((call_id for call_id, arguments in calls.items() if BLOCKING in arguments), None)
    return None if cut is None else results.get(cut, "")


CUT_CALL_SENT_AS = {"claude": None, "codex": "aborted", "gemini": None}


def test_a_call_interrupted_by_a_stop_is_issued_again_to_the_resumed_cli(lab: Lab) -> None:
    """Quick step done, stopped inside the blocking call, resumed: the call again, it runs, then "done"."""
    first = lab.cli()
    deadline = time.monotonic() + 60
    while not lab.call_running():
        first.reload()
        assert first.status == "running" and time.monotonic() < deadline, output_of(first)
        time.sleep(0.1)
    first.stop(timeout=2)
    first_output = output_of(first)
    served_before_resume = len(lab.requests())

    resumed = lab.cli(resume_id=session_of(first_output))
    code = int(resumed.wait(timeout=120)["StatusCode"])

    story = f"first run:\n{first_output[-2000:]}\nresumed:\n{output_of(resumed)[-3000:]}"
    after = lab.requests()[served_before_resume:]
    assert code == 0, story
    assert len(after) == 2, story
    assert cut_call_result(lab.agent, after[0]["body"]) == CUT_CALL_SENT_AS[lab.agent], story
    cut_short_is_failed = lab.agent == "codex"  # the others' latest result is the quick step's success
    unanswered = None if lab.agent == "codex" else True
    answered = [
        (e["turn"], e["answer"], e.get("retry"), e.get("tool_error"), e.get("unanswered")) for e in after
    ]
    assert answered == [
        (2, "tool:shell", 1, cut_short_is_failed, unanswered),
        (3, "text", None, False, None),
    ], story
    assert "finished" in after[1]["tool_result"], story
    assert '"done"' in output_of(resumed), story
