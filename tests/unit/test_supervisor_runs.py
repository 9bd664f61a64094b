"""The supervisor stores a batch of lines as runs of one stream each, in the order they came."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.runtime.spec import LogLine
from orchestrator.supervisor import _runs

line_st = st.builds(LogLine, st.sampled_from(["stdout", "stderr"]), st.text(max_size=5), st.integers(0, 9))


def test_a_batch_splits_where_the_stream_changes() -> None:
    batch = [LogLine("stdout", "a", 1), LogLine("stdout", "b", 1), LogLine("stderr", "c", 2),
             LogLine("stdout", "d", 3)]  # fmt: skip
    assert list(_runs(batch)) == [("stdout", ["a", "b"]), ("stderr", ["c"]), ("stdout", ["d"])]
    assert list(_runs([])) == []


@given(st.lists(line_st, max_size=30))
def test_runs_hold_every_line_once_in_order_and_alternate(batch: list[LogLine]) -> None:
    runs = list(_runs(batch))
    assert [(s, t) for s, texts in runs for t in texts] == [(line.stream, line.text) for line in batch]
    assert all(texts for _, texts in runs)
    assert all(a[0] != b[0] for a, b in itertools.pairwise(runs))
