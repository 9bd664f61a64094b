"""Runs of lines (``orchestrator/runtime/runs.py``): lines grouped by stream and time, and back.

A runtime hands a flood out as runs (``stream_runs``); the supervisor stores and parses a run at
once. Grouping, regrouping, cutting into batches and the stored-log filter never lose, repeat or
reorder a line, and never give a line another stream or time.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.runtime.pipe import keep_after
from orchestrator.runtime.runs import by_stream, cut, lines_of, runs_of, size
from orchestrator.runtime.spec import LineRun, LogLine

line_st = st.builds(LogLine, st.sampled_from(["stdout", "stderr"]), st.text(max_size=5), st.integers(0, 3))


def test_a_new_run_starts_where_the_stream_or_the_time_changes() -> None:
    lines = [LogLine("stdout", "a", 1), LogLine("stdout", "b", 1), LogLine("stderr", "c", 1),
             LogLine("stdout", "d", 1), LogLine("stdout", "e", 2)]  # fmt: skip
    assert runs_of(lines) == [LineRun("stdout", ["a", "b"], 1), LineRun("stderr", ["c"], 1),
                              LineRun("stdout", ["d"], 1), LineRun("stdout", ["e"], 2)]  # fmt: skip
    assert runs_of([]) == []


@given(st.lists(line_st, max_size=40))
def test_runs_give_every_line_back_exactly_and_neighbours_differ(lines: list[LogLine]) -> None:
    runs = runs_of(lines)
    assert lines_of(runs) == lines
    assert size(runs) == len(lines)
    assert all(run.texts for run in runs)
    assert all((a.stream, a.time_ns) != (b.stream, b.time_ns) for a, b in itertools.pairwise(runs))


def test_a_stored_log_s_one_line_runs_are_stored_by_stretch_of_one_stream() -> None:
    """A stored log stamps each line apart: the consumer still takes one stream's lines together."""
    lines = [LogLine("stdout", "a", 1), LogLine("stdout", "b", 2), LogLine("stderr", "c", 3),
             LogLine("stderr", "d", 4), LogLine("stdout", "e", 5)]  # fmt: skip
    assert by_stream(runs_of(lines)) == [("stdout", ["a", "b"]), ("stderr", ["c", "d"]), ("stdout", ["e"])]
    assert by_stream([]) == []


@given(st.lists(line_st, max_size=40))
def test_stretches_hold_every_line_once_in_order_and_alternate(lines: list[LogLine]) -> None:
    runs = runs_of(lines)
    stretches = by_stream(runs)
    assert [(s, t) for s, texts in stretches for t in texts] == [(line.stream, line.text) for line in lines]
    assert all(a[0] != b[0] for a, b in itertools.pairwise(stretches))
    assert lines_of(runs) == lines  # the runs themselves are left as they were


def test_a_run_longer_than_a_batch_is_split_and_batches_fill_up() -> None:
    runs = [
        LineRun("stdout", ["a", "b", "c"], 1),
        LineRun("stderr", ["d"], 2),
        LineRun("stdout", ["e", "f"], 3),
    ]
    assert list(cut(runs, 2)) == [
        [LineRun("stdout", ["a", "b"], 1)],
        [LineRun("stdout", ["c"], 1), LineRun("stderr", ["d"], 2)],
        [LineRun("stdout", ["e", "f"], 3)],
    ]
    assert list(cut([], 2)) == []


@given(st.lists(line_st, max_size=40), st.integers(1, 7))
def test_batches_hold_at_most_the_bound_never_none_and_every_line_in_order(
    lines: list[LogLine], most: int
) -> None:
    batches = list(cut(runs_of(lines), most))
    assert all(0 < size(batch) <= most for batch in batches)
    assert [line for batch in batches for line in lines_of(batch)] == lines


@given(st.lists(line_st, max_size=40), st.none() | st.integers(0, 3), st.integers(0, 5), st.integers(0, 5))
def test_the_stored_log_filter_keeps_what_the_line_by_line_rule_keeps(
    lines: list[LogLine], since_ns: int | None, skip_out: int, skip_err: int
) -> None:
    """Past ``skip`` lines of each stream, the lines strictly after ``since_ns``: as one line at a time would."""
    keep = keep_after(since_ns, {"stdout": skip_out, "stderr": skip_err})
    assert keep is not None
    left = {"stdout": skip_out, "stderr": skip_err}
    expected = []
    for line in lines:
        if left[line.stream] > 0:
            left[line.stream] -= 1
        elif since_ns is None or line.time_ns > since_ns:
            expected.append(line)
    half = len(lines) // 2  # in two batches: the filter remembers what it skipped
    assert lines_of(keep(runs_of(lines[:half])) + keep(runs_of(lines[half:]))) == expected


def test_no_filter_when_there_is_nothing_to_filter() -> None:
    assert keep_after(None, None) is None
    assert keep_after(None, {}) is None
