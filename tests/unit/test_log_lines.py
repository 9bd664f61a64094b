"""Frames to lines (``orchestrator/runtime/lines.py``): any framing gives the same lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.runtime.lines import LineAssembler, TimestampError, parse_timestamp_ns

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def expected_lines(data: bytes) -> list[str]:
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "replace") for p in parts]


@given(st.lists(TEXT, max_size=8), st.booleans(), st.lists(st.integers(1, 64), max_size=20))
def test_any_framing_gives_the_lines_of_the_whole(
    lines: list[str], newline_at_end: bool, cuts: list[int]
) -> None:
    """Cut the bytes anywhere (even inside a UTF-8 character): the lines are those of the whole stream."""
    data = "\n".join(lines).encode() + (b"\n" if newline_at_end and lines else b"")
    frames, rest = [], data
    for size in cuts:
        frames.append(rest[:size])
        rest = rest[size:]
    frames.append(rest)
    assembler = LineAssembler("stdout")
    actual = [line.text for i, frame in enumerate(frames) for line in assembler.feed(i + 1, frame)]
    actual += [line.text for line in assembler.flush()]
    assert expected_lines(data) == actual


def test_a_long_line_split_in_frames_keeps_its_first_time() -> None:
    """Three 16 KiB fragments become one line stamped with the time its first fragment had."""
    assembler = LineAssembler("stderr")
    assert assembler.feed(10, b"a" * 16384) == []
    assert assembler.feed(10, b"a" * 16384) == []
    [line] = assembler.feed(11, b"a" * 100 + b"\nnext")
    assert (line.stream, len(line.text), line.time_ns) == ("stderr", 32868, 10)
    [tail] = assembler.flush()
    assert (tail.text, tail.time_ns) == ("next", 11)
    assert assembler.flush() == []


def test_invalid_utf8_is_replaced_not_raised() -> None:
    """Bytes that are not UTF-8 become U+FFFD."""
    assembler = LineAssembler("stdout")
    [line] = assembler.feed(1, b"ok \xff\xfe end\n")
    assert line.text == "ok \ufffd\ufffd end"


def test_timestamped_frames_are_split_and_parsed() -> None:
    """Docker's ``<RFC3339Nano> <payload>`` frames give nanosecond times."""
    assembler = LineAssembler("stdout")
    [line] = assembler.feed_timestamped(b"2026-11-26T03:19:55.476754729Z hello\n")
    assert (line.text, line.time_ns) == ("hello", 1795663195476754729)
    assert line.timestamp.isoformat() == "2026-11-26T03:19:55.476754+00:00"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"1970-01-01T00:00:00Z", 0),
        (b"1970-01-01T00:00:01.5Z", 1_500_000_000),
        (b"2000-01-01T00:00:00.000000001Z", 946_684_800_000_000_001),
    ],
)
def test_timestamps_of_any_precision(raw: bytes, expected: int) -> None:
    """Fractions of any length up to nanoseconds."""
    assert expected == parse_timestamp_ns(raw)


@pytest.mark.parametrize("raw", [b"", b"hello", b"2026-11-26T03:19:55", b"2026-11-26T03:19:55.12x4Z",
                                 b"2026-13-26T03:19:55Z", b"2026-11-26T03:19:55.1234567890Z", b"\xff" * 25])  # fmt: skip
def test_garbage_timestamps_are_a_clear_error(raw: bytes) -> None:
    """A frame without a timestamp raises ``TimestampError`` (a ``ValueError``), never anything else."""
    with pytest.raises(TimestampError):
        parse_timestamp_ns(raw)


def test_docker_local_driver_framing_ends_lines_without_their_newline() -> None:
    """Docker's ``local`` driver drops the newline after a split line: a short fragment ends it."""
    assembler = LineAssembler("stdout", fragment_size=16384)
    frames = [(5, b"before\n"), (7, b"a" * 16384), (7, b"a" * 16384), (7, b"a" * 10), (9, b"after\n")]
    actual = [
        (line.text[:3], len(line.text), line.time_ns) for ns, p in frames for line in assembler.feed(ns, p)
    ]
    assert actual == [("bef", 6, 5), ("aaa", 32778, 7), ("aft", 5, 9)]
    assert assembler.flush() == []


def test_an_exact_multiple_of_the_fragment_size_ends_at_the_next_message() -> None:
    """A line of exactly two fragments ends when a frame with a new time arrives (or at the end)."""
    assembler = LineAssembler("stdout", fragment_size=16384)
    assert assembler.feed(7, b"b" * 16384) + assembler.feed(7, b"b" * 16384) == []
    [line, after] = assembler.feed(8, b"after\n")
    assert ((len(line.text), line.time_ns), (after.text, after.time_ns)) == ((32768, 7), ("after", 8))
    assert assembler.feed(9, b"c" * 16384) == []
    assert [len(line.text) for line in assembler.flush()] == [16384]
