"""``EventWriter.append_output``: a run of output lines stored as one ``output_lines`` event, built
without a model object.

It must store exactly what ``append`` of the ``OutputLines`` event stores (apart from the time),
fold the state the same way, and redact every line. ``append`` writes an event's JSON by hand too:
it must be the event's own ``model_dump_json``.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.log import MASK, Redactor
from orchestrator.models import AgentEvent, EventDraft, Message, OutputLines, replay
from orchestrator.paths import SessionPaths
from orchestrator.store import EventReader, EventWriter

pytestmark = pytest.mark.timeout(120)
CANARY = "sk-ant-canary-0123456789abcdef"


def _without_time(raw: bytes) -> dict[str, object]:
    body: dict[str, object] = orjson.loads(raw)
    body.pop("ts")
    return body


lines_st = st.lists(st.text(max_size=60), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), lines_st), min_size=1, max_size=5),
       task=st.sampled_from([None, "t1", 'q"uote\\d']))  # fmt: skip
def test_append_output_stores_what_append_of_the_output_lines_event_stores(
    tmp_path_factory: pytest.TempPathFactory, batches: list[tuple[str, list[str]]], task: str | None
) -> None:
    """Same lines in the log (any text: quotes, backslashes, control and non-ASCII characters) and
    the same state as the slow path, after a flush and after a fresh rebuild from the file."""
    root = tmp_path_factory.mktemp("out")
    fast, slow = SessionPaths.of(root, "fastpath1"), SessionPaths.of(root, "slowpath1")
    with EventWriter.open(fast) as fw, EventWriter.open(slow) as sw:
        for stream, lines in batches:
            last = fw.append_output("codex-t1", task, stream, lines)  # type: ignore[arg-type]
            sw.append(EventDraft.of("codex-t1", OutputLines(stream=stream, lines=lines), task))  # type: ignore[arg-type]
            assert last == sw.pending + sw.last_seq
        fw.flush()
        sw.flush()
        fast_lines, slow_lines = fast.events.read_bytes().splitlines(), slow.events.read_bytes().splitlines()
        assert [_without_time(x) for x in fast_lines] == [
            {**_without_time(x), "session_id": "fastpath1"} for x in slow_lines
        ]
        dumped = fw.state.model_dump(exclude={"session_id"})
        folded = replay(EventReader(fast).read()).model_dump(exclude={"session_id"})
        assert dumped == folded
        worker = fw.state.workers["codex-t1"]
        assert (worker.stdout_lines, worker.stderr_lines) == (
            sum(len(ls) for s, ls in batches if s == "stdout"),
            sum(len(ls) for s, ls in batches if s == "stderr"),
        )


def test_output_lines_and_other_events_keep_one_gap_free_order(tmp_path: Path) -> None:
    """Output runs and single events interleave in the order they were appended, seqs gap-free."""
    paths = SessionPaths.of(tmp_path, "sess0001")
    with EventWriter.open(paths) as writer:
        writer.append_output("claude-t1", "t1", "stdout", ["a", "b"])
        writer.emit("claude-t1", Message(role="assistant", text="hi"), "t1")
        writer.append_output("claude-t1", "t1", "stderr", ["c"])
        assert writer.append_output("claude-t1", "t1", "stderr", []) == 3  # nothing appended
        writer.flush()
        stored = [(e.seq, e.type, getattr(e.data, "lines", None)) for e in EventReader(paths).read()]
        assert stored == [(1, "output_lines", ["a", "b"]), (2, "message", None), (3, "output_lines", ["c"])]
        memory = writer.recent(0)
        assert memory is not None
        assert [s.event.seq for s in memory] == [1, 2, 3]
        assert [writer.json_of(s.event) for s in memory] == paths.events.read_text().splitlines()


def test_every_output_line_is_redacted(tmp_path: Path) -> None:
    """A registered secret and a key-shaped string are masked in every line that holds one."""
    paths = SessionPaths.of(tmp_path, "sess0001")
    with EventWriter.open(paths, redactor=Redactor(["hunter2-secret"])) as writer:
        writer.append_output(
            "codex-t1", "t1", "stdout", ["ok", f"key {CANARY}", "pw=hunter2-secret!", "fine"]
        )
        writer.flush()
    text = paths.events.read_text()
    assert CANARY not in text and "hunter2-secret" not in text
    lines = [e.data.lines for e in EventReader(paths).read()]  # type: ignore[union-attr]
    assert lines == [["ok", f"key {MASK}", f"pw={MASK}!", "fine"]]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40), worker=st.text(min_size=1, max_size=12),
       task=st.one_of(st.none(), st.text(max_size=8)))  # fmt: skip
def test_append_writes_each_event_as_its_own_json(
    tmp_path_factory: pytest.TempPathFactory, text: str, worker: str, task: str | None
) -> None:
    """The line ``append`` stores is ``model_dump_json`` of the event it returns, for any text."""
    paths = SessionPaths.of(tmp_path_factory.mktemp("env"), "envelope1")
    with EventWriter.open(paths, redactor=Redactor()) as writer:
        event = writer.emit(worker, Message(role="assistant", text=text), task)
        writer.flush()
        assert paths.events.read_bytes().decode().split("\n") == [event.model_dump_json(), ""]
        assert AgentEvent.model_validate_json(event.model_dump_json()) == event
