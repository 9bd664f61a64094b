"""Attach bytes to lines (``orchestrator/runtime/lines.py``): ``Demuxer``, ``ChunkLines``, ``AttachLines``.

Docker's attach stream is the container's bytes in multiplexed frames cut anywhere by the socket;
whatever the cuts, the lines are those of each stream's whole output, and no line grows past the cap.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.runtime.lines import AttachLines, ChunkLines, Demuxer
from orchestrator.runtime.spec import LineRun

BYTES = st.binary(max_size=60) | st.text(max_size=20).map(str.encode)
CUTS = st.lists(st.integers(1, 40), max_size=30)


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">B3xL", kind, len(payload)) + payload


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks = []
    for size in sizes:
        chunks.append(data[:size])
        data = data[size:]
    return [*chunks, data]


def reference(data: bytes) -> list[str]:
    """The lines of a whole stream, each decoded on its own."""
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return [part.decode("utf-8", "replace") for part in parts]


def lines_of(chunks: list[bytes], max_line: int = 1024 * 1024) -> list[str]:
    assembler = ChunkLines("stdout", max_line=max_line)
    texts = [text for chunk in chunks for text in assembler.feed(chunk)]
    return texts + assembler.flush()


@given(st.lists(st.tuples(st.sampled_from([1, 2]), BYTES), max_size=12), CUTS)
def test_frames_cut_anywhere_give_each_streams_bytes_in_order(
    writes: list[tuple[int, bytes]], sizes: list[int]
) -> None:
    """Frames of both streams, cut at any byte: each stream's bytes come out whole and in order."""
    demuxer = Demuxer()
    got = {"stdout": b"", "stderr": b""}
    for chunk in cut(b"".join(frame(kind, payload) for kind, payload in writes), sizes):
        for stream, payload in demuxer.feed(chunk):
            got[stream] += payload
    expected = {
        "stdout": b"".join(p for k, p in writes if k == 1),
        "stderr": b"".join(p for k, p in writes if k == 2),
    }
    assert (expected, 0) == (got, demuxer.pending)


def test_a_frame_is_held_back_until_whole_and_neighbours_of_one_stream_are_joined() -> None:
    """Half a frame waits; two stdout frames in a row are one piece; stderr stays apart."""
    demuxer = Demuxer()
    data = frame(1, b"ab") + frame(1, b"cd") + frame(2, b"err") + frame(1, b"tail")
    assert demuxer.feed(data[:-2]) == [("stdout", b"abcd"), ("stderr", b"err")]
    assert demuxer.pending == 10
    assert demuxer.feed(data[-2:]) == [("stdout", b"tail")]


@given(st.lists(BYTES, max_size=10), CUTS)
def test_any_chunking_gives_the_lines_of_the_whole_stream(parts: list[bytes], sizes: list[int]) -> None:
    """Cut anywhere, even inside a UTF-8 character or an invalid sequence: the same lines, decoded whole."""
    data = b"\n".join(parts)
    assert reference(data) == lines_of(cut(data, sizes))


@given(
    st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=30).map(
        str.encode
    ),
    st.integers(4, 12),
    CUTS,
)
def test_a_line_over_the_cap_comes_in_pieces_that_rejoin_to_it(
    line: bytes, cap: int, sizes: list[int]
) -> None:
    """No piece is over the cap, none but the last is cut short of it by more than a character, and
    the pieces rejoin to the line (no character cut in two)."""
    pieces = [piece.encode() for piece in lines_of(cut(line + b"\n", sizes), max_line=cap)]
    assert line == b"".join(pieces)
    assert all(len(piece) <= cap for piece in pieces)
    assert all(len(piece) > cap - 4 for piece in pieces[:-1])


def test_a_forty_kib_line_is_whole_and_a_character_cut_between_chunks_is_intact() -> None:
    """Attach has no 16 KiB messages: a 40 KiB line of two-byte characters, cut mid-character, is one line."""
    line = ("x" + "é" * 20480).encode()
    assert [line.decode()] == lines_of(cut(line + b"\n", [16384, 16384]))


def test_every_line_of_a_chunk_gets_its_time_and_the_last_one_without_newline_is_flushed() -> None:
    """A stream's lines completed by one read are one run with that read's time; the flush gives the
    tails their own time, stdout's first."""
    attach = AttachLines()
    assert attach.feed(frame(2, b"par") + frame(1, b"out"), 5) == []
    assert attach.feed(frame(2, b"tial\nnext\nta") + frame(1, b"put\n"), 7) == [
        LineRun("stderr", ["partial", "next"], 7),
        LineRun("stdout", ["output"], 7),
    ]
    assert attach.feed(frame(1, b"x\n") + frame(2, b"") + frame(1, b"y\nz"), 8) == [
        LineRun("stdout", ["x", "y"], 8)
    ]
    assert attach.flush(9) == [LineRun("stdout", ["z"], 9), LineRun("stderr", ["ta"], 9)]
    assert attach.flush(10) == []
    assert attach.counts == {"stdout": 4, "stderr": 3}


def test_an_endless_line_keeps_memory_bounded() -> None:
    """4 MiB without a newline and a cap of 1 MiB: four pieces handed out as they fill, none held longer."""
    assembler = ChunkLines("stdout", max_line=1024 * 1024)
    handed = [text for _ in range(64) for text in assembler.feed(b"z" * 65536)]
    assert [len(text) for text in handed] == [1024 * 1024] * 3
    assert [len(text) for text in assembler.flush()] == [1024 * 1024]


def test_a_cap_too_small_for_a_character_is_refused() -> None:
    """A cap under 4 bytes could not hold one UTF-8 character."""
    with pytest.raises(ValueError, match="max_line"):
        ChunkLines("stdout", max_line=3)
