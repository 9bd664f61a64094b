"""``parse_lines``: a batch of output lines parsed at once is exactly ``parse_line`` on each line.

A parser hands only its *loud* lines to ``parse_line`` (``LoudLines``: a line starting with '{',
one with a colour code, one holding a text its plain-text path looks for, in any case) and skips
the quiet rest, which can neither yield a payload nor change its state (``parse_batch``). While a
Gemini ``-o json`` document is open, every line is read. These tests hold the batch path to the
per-line one: the same (index, payloads) and the same parser state afterwards, for random mixes of
every text the parsers look for, for every recorded run, and for garbage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from structlog.testing import capture_logs

from orchestrator.agents import ADAPTERS, StreamParser, get_adapter
from orchestrator.agents import claude_stream as claude
from orchestrator.agents import codex_stream as codex
from orchestrator.agents import gemini_stream as gemini
from orchestrator.agents.base import Stream
from orchestrator.agents.parsing import LoudLines
from orchestrator.models.events import EventData

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts"
RUNS = sorted(p.name.removesuffix(".meta.json") for p in FIXTURES.glob("*.meta.json"))
AGENTS = [a.value for a in ADAPTERS]

Batch = tuple[Stream, list[str]]
Found = list[tuple[int, list[EventData]]]


def recorded(path: Path) -> list[str]:
    """A recorded stream's lines as the runtime gives them (undecodable bytes replaced)."""
    if not path.exists():
        return []
    return [raw.decode("utf-8", "replace").rstrip("\r\n") for raw in path.read_bytes().splitlines(True)]


# -- what the lines are made of --------------------------------------------------------------------

# Every text a parser's plain-text path looks for (all three parsers get all of them).
MARKERS = sorted(
    {
        *(m for m, _ in codex._REFUSALS),
        *(m for m, _ in codex._REFUSED_TOOL),
        *codex._SANDBOX,
        "failed to write file",
        "2026-11-26T01:22:44Z ERROR codex_core::tools::router: error=patch rejected: writing is blocked",
        "codex_core::exec: error bwrap: setting up uid map: Permission denied",
        "ERROR: Reconnecting... 2/5 (stream disconnected before completion)",
        "ERROR: unexpected status 401 Unauthorized",
        "Error: rate limit reached, try again in 3s",
        *(m for m, _ in claude._REFUSALS),
        *claude._TEXT_ERRORS,
        "API Error: 529 Overloaded",
        "Attempt 2 failed with status 429. Retrying with backoff...",
        'Error executing tool write_file: Tool "write_file" not found in registry',
        "Error executing tool run_shell_command: denied by policy",
        "Error executing tool read_file: path not in workspace",
        *gemini._AUTH_TEXTS,
        *(m for m, _ in gemini._REFUSALS),
        *gemini._BAD_ARGUMENTS,
    }
)
PLAIN = ["00000042 line of output " + "y" * 80, "compiling src/main.rs", "done.", "ok: 3 passed", "", " ",
         "error", "failed", "api", "attempt", "unknown", "café ünïcödé ✓ 日本語 🙂", "x" * 300, "\r",
         "Σίσυφος ΣΊΣΥΦΟΣ", "İstanbul", "\x00\x00", "[1/3] {not json"]  # fmt: skip
JSON_LINES = sorted(
    {line for path in FIXTURES.glob("*.stdout.jsonl") for line in recorded(path) if line.startswith("{")}
    - {"{"}
)
DOCUMENT = recorded(FIXTURES / "gemini-0.61.0-write-default-json-denied.stdout.jsonl")
DOCUMENT_LINES = ["{", "}", "  }", '  "response": "done",', '\t"error": {', "  ", " {", "{  "]
BLANKS = ["", " ", "  ", "\t", "\u3000", "\x0b"]  # what str.strip() removes, ideographic space too
ANSI = ["\x1b[31m", "\x1b[0m", "\x1b[1;33m", "\x1b[?25l"]


def cased(marker: str, how: int, flips: list[bool]) -> str:
    """``marker`` in one of the cases a CLI may print it in, or spelled with look-alike capitals."""
    if how == 0:
        return marker.upper()
    if how == 1:
        return marker.title()
    if how == 2:
        return marker.swapcase()
    if how == 3:  # KELVIN SIGN lowers to 'k', DOTTED CAPITAL I to 'i' + a combining dot
        return marker.replace("k", "\u212a").replace("i", "\u0130")
    if how == 4:
        return "".join(c.upper() if flip else c for c, flip in zip(marker, flips, strict=False))
    return marker


def coloured(marker: str, at: int, code: str) -> str:
    """A colour code inside ``marker`` (``plain`` joins the marker again)."""
    cut = at % (len(marker) + 1)
    return f"{code}{marker[:cut]}{code}{marker[cut:]}\x1b[0m"


markers = st.sampled_from(MARKERS)
fragments = st.one_of(
    st.sampled_from(PLAIN),
    markers,
    st.builds(cased, markers, st.integers(0, 5), st.lists(st.booleans(), max_size=60)),
    st.builds(coloured, markers, st.integers(0, 80), st.sampled_from(ANSI)),
    st.sampled_from(JSON_LINES),
    st.sampled_from(DOCUMENT_LINES),
    st.text(max_size=12),
)
one_line = st.builds(
    lambda blank, parts, tail: blank + " ".join(parts) + tail,
    st.sampled_from(BLANKS),
    st.lists(fragments, max_size=3),
    st.sampled_from(["", "", " ", "\t"]),
)
whole_json = st.builds(str.__add__, st.sampled_from(BLANKS), st.sampled_from(JSON_LINES))
# a Gemini -o json document: whole, cut short, or with a foreign line in it
documents = st.builds(
    lambda cut, stray, at: DOCUMENT[:cut][:at] + stray + DOCUMENT[:cut][at:],
    st.integers(1, len(DOCUMENT)),
    st.lists(one_line, max_size=1),
    st.integers(0, len(DOCUMENT)),
)
blocks = st.one_of(one_line.map(lambda line: [line]), whole_json.map(lambda line: [line]), documents)


@st.composite
def batches(draw: st.DrawFn) -> list[Batch]:
    """Lines in runs of batches of random sizes, each batch from one stream."""
    lines = [line for block in draw(st.lists(blocks, max_size=12)) for line in block]
    out: list[Batch] = []
    while lines:
        size = draw(st.integers(1, max(1, len(lines))))
        out.append((draw(st.sampled_from(["stdout", "stderr"])), lines[:size]))
        lines = lines[size:]
    return out


# -- the two ways of reading, and what a parser holds ----------------------------------------------


def line_by_line(parser: StreamParser, runs: Sequence[Batch]) -> Found:
    found: Found = []
    index = 0
    for stream, lines in runs:
        for line in lines:
            if payloads := parser.parse_line(stream, line):
                found.append((index, payloads))
            index += 1
    return found


def by_batches(parser: StreamParser, runs: Sequence[Batch]) -> Found:
    found: Found = []
    base = 0
    for stream, lines in runs:
        found += [(base + index, payloads) for index, payloads in parser.parse_lines(stream, lines)]
        base += len(lines)
    return found


def state(value: Any) -> Any:
    """Everything a parser holds, as comparable data (ledgers, sightings, documents, maps ...)."""
    if isinstance(value, BaseModel | str | int | float | bool | frozenset | set) or value is None:
        return value
    if isinstance(value, dict):
        return {key: state(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [state(item) for item in value]
    if callable(value):
        return value
    return type(value).__name__, state(vars(value))


AFTERWARDS = [
    "}",
    '{"type":"turn.completed","usage":{"input_tokens":5,"output_tokens":2}}',
    '{"type":"message","role":"assistant","content":"the end","delta":false}',
    '{"type":"result","subtype":"success","is_error":false,"result":"ok","stop_reason":"end_turn"}',
]


def assert_same(agent: str, runs: Sequence[Batch], exit_code: int | None = 0) -> None:
    """Batches give what single lines give, and leave the parser in the same state."""
    one, batched = get_adapter(agent).parser(), get_adapter(agent).parser()
    assert line_by_line(one, runs) == by_batches(batched, runs)
    assert state(vars(one)) == state(vars(batched))
    for stream in ("stdout", "stderr"):
        assert [one.parse_line(stream, x) for x in AFTERWARDS] == [
            batched.parse_line(stream, x) for x in AFTERWARDS
        ]
    assert one.finish(exit_code) == batched.finish(exit_code)


# -- (a) random mixes of everything the parsers look for -------------------------------------------


@pytest.mark.parametrize("agent", AGENTS)
@settings(max_examples=300, deadline=None)
@given(runs=batches())
def test_batches_equal_single_lines(agent: str, runs: list[Batch]) -> None:
    """Markers in any case or colour, JSON, documents, blanks, unicode: batches == line by line."""
    assert_same(agent, runs)


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("marker", MARKERS)
def test_every_marker_alone_and_in_a_crowd(agent: str, marker: str) -> None:
    """Each marker, upper-cased, coloured or mid-line among quiet lines, is read as a single line would be."""
    quiet = ["00000001 line of output " + "y" * 80] * 50
    lines = [*quiet, marker, *quiet, f"  ... {marker.upper()} ...", coloured(marker, 3, "\x1b[1m"), *quiet]
    assert_same(agent, [("stderr", lines), ("stdout", lines)])


# -- (b) every recorded run ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 64, 100_000])
@pytest.mark.parametrize("run", RUNS)
def test_recorded_runs_by_batches(run: str, size: int) -> None:
    """Each recorded run's stdout, then stderr, in batches of ``size``: the same payloads and end."""
    runs: list[Batch] = []
    sources: list[tuple[Stream, str]] = [("stdout", f"{run}.stdout.jsonl"), ("stderr", f"{run}.stderr.txt")]
    for stream, path in sources:
        lines = recorded(FIXTURES / path)
        runs += [(stream, lines[start : start + size]) for start in range(0, len(lines), size)]
    assert_same(run.split("-", maxsplit=1)[0], runs, exit_code=3)


# -- (c) garbage -----------------------------------------------------------------------------------

HUGE = "x" * (16 * 1024 * 1024)
GARBAGE = [
    HUGE,
    "{" + HUGE,
    HUGE + " erofs",
    "\x00" * 1000,
    "error: unexpected argument\x00 '--bad'",
    '{"type": "item.completed", "item": {',
    '{"type": "result", "subtype": "success"',
    "{]",
    "\ud800",
    "erofs \udfff",
    '{"type": "\ud800"}',
    "\x1b",
    "\x1b[",
    "a line\nwith a newline inside: not inside a trusted directory",
    "{\n}",
    "\n",
]


@pytest.mark.parametrize("agent", AGENTS)
def test_garbage_never_raises(agent: str) -> None:
    """Huge lines, NULs, broken JSON, lone surrogates, newlines inside a line: kept raw or parsed, as one by one."""
    with capture_logs() as logs:
        assert_same(agent, [("stdout", GARBAGE), ("stderr", GARBAGE[::-1]), ("stdout", [])])
    assert [entry for entry in logs if entry.get("event") == "agent_parser_failed"] == []


@pytest.mark.parametrize("agent", AGENTS)
@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(
        st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"]), max_size=60)
        | st.sampled_from(GARBAGE[3:]),
        max_size=20,
    )
)
def test_random_text_by_batches_never_raises(agent: str, lines: list[str]) -> None:
    """Any characters at all (surrogates and control codes too): batches equal single lines."""
    assert_same(agent, [("stderr", lines), ("stdout", lines[::-1])])


# -- how the batch path gets its speed -------------------------------------------------------------


def counting(parser: StreamParser) -> list[str]:
    """Records every line that reaches ``parser.parse_line`` from now on."""
    seen: list[str] = []
    inner: Callable[[Stream, str], list[EventData]] = parser.parse_line

    def spy(stream: Stream, line: str) -> list[EventData]:
        seen.append(line)
        return inner(stream, line)

    parser.parse_line = spy  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("agent", AGENTS)
def test_quiet_lines_never_reach_parse_line(agent: str) -> None:
    """Of 1000 plain lines and two loud ones, only the loud ones are read."""
    parser = get_adapter(agent).parser()
    seen = counting(parser)
    lines = [f"{i:08d} line of output " + "y" * 80 for i in range(1000)]
    lines[10], lines[900] = '{"type":"x"}', "\x1b[31mcolour\x1b[0m"
    assert parser.parse_lines("stdout", lines) == []
    assert seen == [lines[10], lines[900]]


def test_an_open_gemini_document_takes_every_line() -> None:
    """Between a lone '{' and its '}', every line goes to the parser; the document's payloads come at '}'."""
    parser = get_adapter("gemini").parser()
    seen = counting(parser)
    lines = ["plain", *DOCUMENT, "plain again", "and again"]
    found = parser.parse_lines("stdout", lines)
    assert seen == DOCUMENT
    assert [index for index, _ in found] == [len(DOCUMENT)]


def test_loud_lines_of_a_text() -> None:
    """Markers in any case, a '{' after blanks, an ESC: those lines, by index; the rest are quiet."""
    loud = LoudLines("erofs", "API Error:")
    lines = ["quiet", "EROFS: read-only", "  {json", "a { b", "\x1b[0m", "api error: 500", "quiet"]
    assert loud.indexes(lines) == [1, 2, 4, 5]
    assert LoudLines().indexes(["{", "x", " {"]) == [0, 2]
    # a line that holds a newline itself: the numbers of hits are unknown, so every line is loud
    assert loud.indexes(["quiet", "a newline\ninside", "erofs"]) == range(3)
    assert LoudLines().indexes(["quiet", "a newline\ninside", " {"]) == range(3)
    assert loud.indexes(["quiet", "a newline\ninside", "quiet"]) == []  # nothing to find: nothing loud


def test_a_marker_is_one_line() -> None:
    """A marker that spans lines could never be found in a line: refused when the parser is defined."""
    with pytest.raises(ValueError, match="one non-empty line"):
        LoudLines("two\nlines")


def test_lowering_keeps_newlines_blanks_and_braces() -> None:
    """What ``LoudLines`` relies on: ``str.lower`` never makes or removes a newline, a blank or a '{'."""
    broken = []
    for code in range(0x110000):
        char, low = chr(code), chr(code).lower()
        if (("\n" in low) != (char == "\n") or ("{" in low) != (char == "{")
                or any(c.isspace() for c in low) != char.isspace()):  # fmt: skip
            broken.append(hex(code))
    assert broken == []
