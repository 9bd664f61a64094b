"""Session paths: ids are validated before any path is joined."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import InvalidIdentifier
from orchestrator.paths import SessionPaths, new_session_id, validate_session_id


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "../../etc/passwd",
        "/etc/passwd",
        "abc\x00defgh",
        "a" * 65,
        "short",
        "",
        "has space1",
        "dot.dot.dot",
        "tab\tinside1",
        "üñíçødé-id",
        None,
        12345678,
    ],  # fmt: skip
)
def test_unsafe_session_ids_are_refused_with_a_clear_error(bad: object) -> None:
    """Traversal, absolute paths, NUL bytes, over-long or short ids never become paths."""
    with pytest.raises(InvalidIdentifier, match="invalid session id"):
        SessionPaths.of("/tmp/ws", bad)  # type: ignore[arg-type]


@given(st.text(max_size=80))
def test_any_accepted_id_is_a_single_path_segment(text: str) -> None:
    """Whatever string is accepted stays one segment directly under the workspace."""
    try:
        paths = SessionPaths.of("/ws", text)
    except InvalidIdentifier:
        return
    assert paths.root.parent == Path("/ws")
    assert paths.root.name == text


def test_the_layout_of_a_session() -> None:
    """The files of DATA_MODELS.md live under workspace/<id>/."""
    paths = SessionPaths.of("/ws", "sess0001")
    expected = ["/ws/sess0001/events.jsonl", "/ws/sess0001/session.json", "/ws/sess0001/report.md",
                "/ws/sess0001/report.json", "/ws/sess0001/tasks/t2"]  # fmt: skip
    actual = [
        str(p)
        for p in (paths.events, paths.session_json, paths.report_md, paths.report_json, paths.task_dir("t2"))
    ]
    assert expected == actual


@pytest.mark.parametrize("bad", ["../t1", "t1/x", "", "t" * 33])
def test_unsafe_task_ids_are_refused(bad: str) -> None:
    """Task ids are path segments too."""
    with pytest.raises(InvalidIdentifier, match="invalid task id"):
        SessionPaths.of("/ws", "sess0001").task_dir(bad)


def test_new_session_ids_are_valid_unique_and_sortable() -> None:
    """Generated ids pass validation and sort by creation time."""
    ids = [new_session_id(now=1_700_000_000 + i) for i in range(5)]
    assert [validate_session_id(i) for i in ids] == ids
    assert sorted(ids) == ids
    assert len({new_session_id() for _ in range(100)}) == 100
