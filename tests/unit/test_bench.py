"""The benchmarks' own logic: statistics, targets, the table, the command line, the SSE reader's parsing.

Timings are never asserted here: benchmarks print figures (``python -m bench``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.__main__ import BENCHES, LATEST, output_path, parse_args
from bench.report import (
    README_END,
    README_START,
    Figure,
    Target,
    render_markdown,
    render_text,
    rows,
    update_readme,
)
from bench.sse_clients import ChunkedBody, Reader
from bench.stats import Dist, percentile, slope
from orchestrator.runtime.batches import BATCH

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 75, 3.0),
        ([3.0, 1.0, 2.0], 100, 3.0),
        ([float(i) for i in range(1, 31)], 99, 30.0),  # nearest rank: p99 of 30 is the largest
        ([float(i) for i in range(1, 101)], 90, 90.0),
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], p: float, expected: float) -> None:
    """Percentiles never interpolate: they are values that were measured."""
    assert expected == percentile(values, p)


@given(st.lists(finite, min_size=1, max_size=50), st.floats(min_value=0.5, max_value=100))
def test_percentile_is_a_measured_value_between_min_and_max(values: list[float], p: float) -> None:
    """For every sample and every p, the percentile is one of the values, within their range."""
    found = percentile(values, p)
    assert found in values
    assert min(values) <= found <= max(values)


@pytest.mark.parametrize(("values", "p"), [([], 50), ([1.0], 0), ([1.0], 101), ([1.0], float("nan"))])
def test_percentile_refuses_garbage(values: list[float], p: float) -> None:
    """No values or a p outside (0, 100] is a clear ValueError, not a wrong number."""
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, p)


def test_dist_scales_every_figure() -> None:
    """``Dist.scaled`` converts units without changing n."""
    dist = Dist.of([0.001, 0.002, 0.003]).scaled(1000)
    assert (dist.n, round(dist.p50, 9), round(dist.p90, 9), dist.p99, dist.max) == (3, 2.0, 3.0, 3.0, 3.0)


def test_slope_of_a_line_is_its_gradient() -> None:
    """The least-squares slope of points on y = 3x + 7 is 3."""
    assert pytest.approx(slope([1, 10, 32], [10, 37, 103])) == 3.0


@pytest.mark.parametrize(("xs", "ys"), [([1, 1], [2, 3]), ([1, 2], [1]), ([], [])])
def test_slope_refuses_what_has_no_slope(xs: list[float], ys: list[float]) -> None:
    """One distinct x, or xs and ys of different lengths, raise ValueError."""
    with pytest.raises(ValueError, match="slope"):
        slope(xs, ys)


@pytest.mark.parametrize(
    ("target", "ours", "baseline", "expected"),
    [
        (Target("ratio_max", 1.10), 105.0, 100.0, True),
        (Target("ratio_max", 1.10), 120.0, 100.0, False),
        (Target("ratio_min", 0.6), 70.0, 100.0, True),
        (Target("ratio_min", 0.6), 50.0, 100.0, False),
        (Target("max", 10.0), 10.0, None, True),
        (Target("max", 10.0), 10.5, 1.0, False),
        (Target("min", 5.0), 6.0, None, True),
        (Target("ratio_max", 1.10), 1.0, None, None),  # no baseline: the ratio cannot be judged
        (Target("max", 1.0), None, 1.0, None),
    ],
)
def test_target_judges_the_ratio_or_the_value(
    target: Target, ours: float | None, baseline: float | None, expected: bool | None
) -> None:
    """``met`` is computed from the target's kind; a number that was not measured is not judged."""
    assert expected == Figure("B0", "x", "ms", ours, baseline, target).met


def test_figure_without_target_is_informative() -> None:
    """A figure without a target has a ratio but no verdict."""
    figure = Figure("B0", "x", "ms", 3.0, 2.0)
    assert (figure.ratio, figure.met) == (1.5, None)


def test_table_has_one_row_per_figure_and_six_columns() -> None:
    """The text table: a header, a rule, one aligned row per figure."""
    figures = [
        Figure("B1", "p50", "ms", 110.0, 100.0, Target("ratio_max", 1.1)),
        Figure("B4", "t", "s", None),
    ]
    table = rows(figures)
    assert [len(row) for row in table] == [6, 6, 6]
    assert table[1] == ["B1 p50", "110 ms", "100 ms", "1.10×", "ratio ≤ 1.1", "yes"]  # noqa: RUF001
    assert table[2] == ["B4 t", "—", "—", "—", "—", "—"]
    assert len(render_text(figures).splitlines()) == 4


def test_markdown_names_the_machine() -> None:
    """The README table starts with the machine it ran on."""
    machine = {"cpu_model": "Xeon", "cores": 2, "ram_gib": 23.4, "docker_version": "20.10.24"}
    text = render_markdown([Figure("B1", "p50", "ms", 1.0)], machine, "today", "full")
    assert text.startswith("Run of today (full) on: Xeon, 2 cores, 23.4 GiB RAM, Docker 20.10.24")
    assert "| B1 p50 | 1.00 ms |" in text


def test_update_readme_replaces_only_between_the_markers(tmp_path: Path) -> None:
    """The text around the markers stays; a README without markers is left alone."""
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold\n{README_END}\noutro\n")
    assert update_readme(readme, "new table")
    assert f"intro\n{README_START}\nnew table\n{README_END}\noutro\n" == readme.read_text()
    readme.write_text("no markers\n")
    assert not update_readme(readme, "new table")
    assert readme.read_text() == "no markers\n"


def test_command_line_runs_all_by_default_and_writes_latest_only_for_a_full_run() -> None:
    """No names = all five in order; only the full run of all five replaces the committed results."""
    args = parse_args([])
    assert (list(BENCHES), False, LATEST) == (args.names, args.quick, output_path(args))
    quick = parse_args(["--quick"])
    assert output_path(quick).name == "quick.json"
    one = parse_args(["B3", "b1"])
    assert (one.names, output_path(one).name) == (["b1", "b3"], "partial.json")


@pytest.mark.parametrize("argv", [["b9"], ["--fast"], ["b1", "../etc"], ["--out"]])
def test_command_line_refuses_garbage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown benchmarks or options exit 2 with a message, never a traceback."""
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert "python -m bench" in capsys.readouterr().err


def test_reader_counts_events_gaps_and_latency() -> None:
    """An SSE reader counts per type, notices a gap in the ids and reads the ``t=`` stamp."""
    reader = Reader()
    assert not reader.take(b'id: 5\nevent: output\ndata: {"line": "t=100.000000 x"}\n\n', 100.5)
    assert not reader.take(b"event: ping\ndata: {}\n\nid: 7\nevent: output\ndata: {}\n\n", 100.7)
    assert reader.take(
        b"id: 8\nevent: session_finished\ndata: {}\n\nid: 9\nevent: output\ndata: {}\n\n", 100.8
    )
    assert (reader.count, reader.first_id, reader.last_id, reader.gaps) == (3, 5, 8, 1)
    assert dict(reader.types) == {"output": 2, "session_finished": 1}  # nothing after the end counts
    assert (reader.last_at["output"], [round(ms, 6) for ms in reader.latencies_ms]) == (100.7, [500.0])


def test_reader_takes_a_chunk_of_a_flood_at_once() -> None:
    """Thousands of messages in one chunk: counted, gap-free, the last id kept."""
    reader = Reader()
    chunk = b"".join(b"id: %d\nevent: output\ndata: {}\n\n" % seq for seq in range(1, 5001))
    assert not reader.take(chunk, 1.0)
    assert (reader.count, reader.first_id, reader.last_id, reader.gaps) == (5000, 1, 5000, 0)


@given(st.binary(max_size=300))
def test_reader_survives_garbage(block: bytes) -> None:
    """Any bytes are counted or ignored, never a crash; only messages with data count; a bad id is a gap."""
    reader = Reader()
    reader.take(block, 1.0)
    assert 0 <= reader.count <= block.count(b"data:")
    assert reader.gaps <= block.count(b"id:")


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=8), st.lists(st.integers(1, 9), min_size=1))
def test_a_chunked_body_cut_anywhere_gives_its_bytes_and_ends_at_the_last_chunk(
    chunks: list[bytes], cuts: list[int]
) -> None:
    """HTTP/1.1 chunked coding (sizes in hex, an extension ignored) decoded from pieces of any size."""
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\nignored"
    body, got, at = ChunkedBody(), b"", 0
    for step in itertools.cycle(cuts):
        if at >= len(wire):
            break
        got += body.feed(wire[at : at + step])
        at += step
    assert (got, body.done) == (b"".join(chunks), True)


def test_a_chunk_size_that_is_not_hexadecimal_is_refused() -> None:
    with pytest.raises(ValueError):
        ChunkedBody().feed(b"zz\r\nabc")


def test_the_stage_timer_prints_one_figure_per_stage(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bench.stages`` times every stage of B2's per-line path on the real functions."""
    from bench import stages

    stages.main(3000)
    rows = capsys.readouterr().out.splitlines()
    assert [row.split("  ")[0] for row in rows] == [
        "raw attach reader: split 64 KiB chunks", "runtime: attach frames -> runs of lines",
        "adapter: Codex parse_line, plain line", f"adapter: Codex parse_lines, batches of {BATCH} plain lines",
        "store: append_output + group commit + fold",
        "SSE: the messages of stored lines, a run at once",
    ]  # fmt: skip
    assert all(float(row.split()[-2]) > 0 for row in rows)
