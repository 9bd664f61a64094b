"""Credentials on real Docker: a canary key reaches the worker and nothing the orchestrator keeps.

``test_canary_key_never_leaks_from_the_worker_launch_path`` runs the launch path owned here end to
end (``credentials_for`` -> the session's egress -> ``sandbox.safety.build_spec`` -> ``DockerRuntime``)
with a worker that prints its key every way it can, and stores what it printed the way a session
does (events, structlog, the report). The coordinator's full-session version of this test should
extend it rather than replace it: same canary, same places to search, plus SSE.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from pydantic import SecretStr

from orchestrator.config import Settings
from orchestrator.credentials import credentials_for, install_login, login_copy_dir
from orchestrator.egress import SessionEgress, plan_egress
from orchestrator.log import configure_logging, get_logger
from orchestrator.models import lines_of
from orchestrator.models.common import AgentName
from orchestrator.models.events import Error, Output, SessionCreated, TaskFinished, WorkerStarted
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.report import build_report, render_markdown
from orchestrator.runtime import SESSION_LABEL, ContainerSpec
from orchestrator.runtime.docker import DockerRuntime
from orchestrator.store import EventReader, EventWriter
from sandbox.safety import MountRequest, SandboxRoots, WorkerRequest, build_spec, container_user

log = get_logger("tests.secrets")
LONG = 20_000  # longer than one 16 KiB log frame: the key must be masked across the frame boundary
LEAKY = f"""
echo "key=$ANTHROPIC_API_KEY"
echo "stderr key: $ANTHROPIC_API_KEY" >&2
cat /proc/self/environ | tr '\\0' '\\n' | grep API_KEY
printf 'x%.0s' $(seq {LONG // 2}) ; printf '%s' "$ANTHROPIC_API_KEY"; printf 'y%.0s' $(seq {LONG // 2}); echo
printf 'sha256=%s\\n' "$(printf '%s' "$ANTHROPIC_API_KEY" | sha256sum | cut -d' ' -f1)"
"""


@dataclass
class Session:
    """A session's folders, settings, runtime and egress (Claude only)."""

    settings: Settings
    paths: SessionPaths
    repo: Path
    runtime: DockerRuntime
    egress: SessionEgress

    def spec(self, worker: str, script: str, **request: Any) -> ContainerSpec:
        fields: dict[str, Any] = {
            "image": "", "argv": ["sh", "-c", script], "session_id": self.paths.session_id, "worker": worker,
            "attempt": 1, "task": "read-only", "mounts": [], "user": container_user(self.repo, self.settings),
            "roots": SandboxRoots(repo=self.repo, workspace=self.paths.root), "network": self.egress.plan.network,
        }  # fmt: skip
        return build_spec(WorkerRequest(**{**fields, **request}))

    async def run(self, spec: ContainerSpec, writer: EventWriter, agent: AgentName) -> str:
        """Start, record worker_started and every output line (as a session does), wait; return the id."""
        container_id = await self.runtime.start(spec)
        worker = spec.labels["orchestrator.worker"]
        writer.emit(worker, WorkerStarted(agent=agent, image=spec.image, container_id=container_id,
                                          argv=list(spec.argv), attempt=1))  # fmt: skip
        async for line in self.runtime.stream(container_id):
            log.info("worker_output", worker=worker, stream=line.stream, line=line.text)
            writer.emit(worker, Output(stream=line.stream, line=line.text))
        await self.runtime.wait(container_id, 60)
        return container_id


@pytest.fixture
async def session(tmp_path: Path, images: dict[str, str]) -> AsyncIterator[Session]:
    settings = Settings(_env_file=None, workspace=tmp_path / "workspace")
    paths = SessionPaths.of(settings.workspace, new_session_id())
    repo = tmp_path / "repo"
    repo.mkdir()
    runtime = DockerRuntime()
    plan = plan_egress(
        paths.session_id, settings, ["claude", "codex"], egress_network=f"orch-{paths.session_id}-out"
    )
    egress = SessionEgress(runtime, plan, paths, image=images["proxy"])
    try:
        await egress.start()
        yield Session(settings, paths, repo, runtime, egress)
    finally:
        await egress.close()
        for container in await runtime.find({SESSION_LABEL: paths.session_id}):
            await runtime.remove(container.id)
        await runtime.remove_network(plan.network)
        await runtime.remove_network(plan.egress_network)
        await runtime.close()


def inspect(container_id: str) -> dict[str, Any]:
    client = docker.from_env()
    try:
        attrs: dict[str, Any] = client.api.inspect_container(container_id)
        return attrs
    finally:
        client.close()


async def test_canary_key_never_leaks_from_the_worker_launch_path(
    session: Session, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker gets the key (its sha256 matches) yet events.jsonl, the structlog output, the
    report and the container's argv/labels hold it 0 times; docker inspect shows it only in Env."""
    canary = f"sk-ant-canary-{secrets.token_hex(12)}"
    configure_logging("info", json=True)
    settings = session.settings.model_copy(
        update={"claude": session.settings.claude.model_copy(update={"api_key": SecretStr(canary)})}
    )
    credentials = credentials_for("claude", settings)
    spec = session.spec(
        "claude-t1", LEAKY, image=images["base"], secrets=credentials.secrets,
        env={**session.egress.plan.worker_env(AgentName.CLAUDE), **credentials.env}, agent="claude",
    )  # fmt: skip
    with EventWriter.open(session.paths) as writer:
        writer.emit("orchestrator", SessionCreated(prompt=f"use {canary}", repo=str(session.repo)))
        container_id = await session.run(spec, writer, AgentName.CLAUDE)
        writer.emit("claude-t1", Error(message=f"401 for key {canary}", detail=canary))
        writer.emit("claude-t1", TaskFinished(status="failed", summary=f"the key {canary} was refused"), "t1")
        writer.flush()
    events = list(EventReader(session.paths).read())
    report = build_report(events)
    session.paths.report_json.write_text(report.model_dump_json())
    session.paths.report_md.write_text(render_markdown(report))
    logs = capsys.readouterr().err
    attrs = inspect(container_id)

    lines = [text for e in events for text in lines_of(e.data)]
    assert f"sha256={hashlib.sha256(canary.encode()).hexdigest()}" in lines  # the key did reach the worker
    assert "ANTHROPIC_API_KEY=[REDACTED]" in lines  # read back from /proc/self/environ, masked
    assert any(len(line) > LONG for line in lines)  # the long line was stored, masked
    assert "worker_output" in logs
    places = {
        "events.jsonl": session.paths.events.read_text(),
        "structlog": logs,
        "report.json": session.paths.report_json.read_text(),
        "report.md": session.paths.report_md.read_text(),
        "argv": json.dumps([attrs["Path"], attrs["Args"], attrs["Config"]["Cmd"]]),
        "labels": json.dumps(attrs["Config"]["Labels"]),
        "inspect without Env": json.dumps({**attrs, "Config": {**attrs["Config"], "Env": []}}),
    }
    assert {name: text.count(canary) for name, text in places.items()} == dict.fromkeys(places, 0)
    assert [item for item in attrs["Config"]["Env"] if canary in item] == [f"ANTHROPIC_API_KEY={canary}"]


async def test_a_key_without_a_known_shape_is_masked_by_its_value(
    session: Session, images: dict[str, str]
) -> None:
    """Redaction does not rely on the ``sk-...`` shape: a registered key of any shape is masked."""
    plain = f"plainsecret{secrets.token_hex(10)}"
    settings = session.settings.model_copy(
        update={"claude": session.settings.claude.model_copy(update={"api_key": SecretStr(plain)})}
    )
    credentials = credentials_for("claude", settings)
    spec = session.spec(
        "claude-t2", 'echo "key=$ANTHROPIC_API_KEY"', image=images["base"], secrets=credentials.secrets
    )
    with EventWriter.open(session.paths) as writer:
        await session.run(spec, writer, AgentName.CLAUDE)
        writer.flush()
    stored = session.paths.events.read_text()
    assert (stored.count(plain), stored.count("key=[REDACTED]")) == (0, 1)


async def test_two_parallel_codex_workers_each_get_their_own_login_copy(
    session: Session, images: dict[str, str], tmp_path: Path
) -> None:
    """Two Codex workers at once: each writes only its own copy of ~/.codex (mounted in the tmpfs
    home, owned by the container's uid); the user's folder is never mounted nor changed."""
    token = f"codex-canary-token-{secrets.token_hex(12)}"
    user = tmp_path / "user-home" / ".codex"
    user.mkdir(parents=True)
    original = json.dumps({"tokens": {"access_token": token, "refresh_token": token[::-1]}})
    (user / "auth.json").write_text(original)
    settings = session.settings.model_copy(
        update={"codex": session.settings.codex.model_copy(update={"login_dir": user})}
    )
    credentials = credentials_for("codex", settings)
    assert credentials.login is not None
    uid, gid = container_user(session.repo, session.settings)
    script = (
        'echo "owner=$(stat -c %u:%a /home/agent/.codex/auth.json)"; '
        'echo "$WORKER was here" >> /home/agent/.codex/auth.json; sleep 1; '
        'echo "lines=$(wc -l < /home/agent/.codex/auth.json)"; cat /home/agent/.codex/auth.json'
    )
    specs = []
    for worker in ("codex-t1", "codex-t2"):
        copy = install_login(
            credentials, login_copy_dir(session.paths, worker, credentials), uid=uid, gid=gid
        )
        assert copy is not None
        specs.append(session.spec(
            worker, script, image=images["base"], agent="codex", env={"WORKER": worker},
            mounts=[MountRequest(str(copy), "rw", target=credentials.login.target)],
            roots=SandboxRoots(repo=session.repo, workspace=session.paths.root, state=(copy,)),
        ))  # fmt: skip
    with EventWriter.open(session.paths) as writer:
        ids = await asyncio.gather(*(session.run(spec, writer, AgentName.CODEX) for spec in specs))
        writer.flush()
    events = list(EventReader(session.paths).read())
    for worker in ("codex-t1", "codex-t2"):
        said = [text for e in events if e.worker == worker for text in lines_of(e.data)]
        assert f"owner={uid}:600" in said
        assert "lines=1" in said  # its own mark only: the other worker wrote elsewhere
        copy = login_copy_dir(session.paths, worker, credentials) / "auth.json"
        assert copy.read_text() == original + f"{worker} was here\n"
    assert (user / "auth.json").read_text() == original
    sources = {m["Source"] for container_id in ids for m in inspect(container_id)["Mounts"]}
    assert sources == {
        str(login_copy_dir(session.paths, w, credentials).resolve()) for w in ("codex-t1", "codex-t2")
    }
    assert not any(str(user) in source for source in sources)
    assert session.paths.events.read_text().count(token) == 0
    assert login_copy_dir(session.paths, "codex-t1", credentials).stat().st_uid == uid
