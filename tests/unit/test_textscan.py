"""``textscan.Needles``: one pass for many short texts, never missing what ``needle in text.lower()`` finds."""

from __future__ import annotations

import string
import sys
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.textscan import LOWER_TO_ASCII, SHORT, Needles

NEEDLES = ("error: ", "codex_core::", "invalid api key", "sk-", "\x1b")


def test_the_characters_that_lower_to_ascii_letters_are_all_listed() -> None:
    """Byte lowering is exact except for these; the whole of Unicode is checked."""
    found = [
        chr(c)
        for c in range(0x80, sys.maxunicode + 1)
        if any(ch in string.ascii_letters for ch in chr(c).lower())
    ]
    assert tuple(found) == LOWER_TO_ASCII


@given(
    text=st.text(
        alphabet=st.one_of(st.characters(), st.sampled_from("ErOR:cdx_KİK\u212a\nsk-\x1b ")), max_size=80
    ),
    pieces=st.lists(st.sampled_from(NEEDLES), max_size=3),
    cases=st.sampled_from([str.lower, str.upper, str.title, str.swapcase]),
    pad=st.sampled_from(["", "y" * SHORT]),
)
def test_never_misses_what_a_lowered_search_finds(
    text: str, pieces: list[str], cases: Callable[[str], str], pad: str
) -> None:
    """Any text (non-ASCII, the two odd characters) with needles in any case, short or long (the
    automaton), found in each line that holds one."""
    haystack = pad + text + "".join(cases(p) for p in pieces) + text
    scan = Needles(NEEDLES)
    expected = any(n.lower() in haystack.lower() for n in NEEDLES)
    assert scan.found_in(haystack) or not expected
    data = Needles.lowered(haystack)
    hit_lines = {data.count(b"\n", 0, at) for at in scan.starts(data)}
    for number, line in enumerate(haystack.split("\n")):
        if any(n.lower() in line.lower() for n in NEEDLES):
            assert number in hit_lines


def test_starts_are_byte_offsets_of_each_hit() -> None:
    scan = Needles(["error: ", "codex_core::"])
    text = "ok\nERROR: no\n«é» Codex_Core::x\n"
    data = Needles.lowered(text)
    assert [data[s : s + 5] for s in scan.starts(data)] == [b"error", b"codex"]
    assert not scan.found_in("all fine\nnothing here")


def test_exact_texts_are_found_as_written_and_a_lone_surrogate_is_no_error() -> None:
    scan = Needles(["bearer"], exact=["Pässwörd-42"])
    assert scan.found_in("the password is Pässwörd-42.")
    assert scan.found_in("\ud800 BEARER x")
    assert not scan.found_in("\ud800 nothing")


@pytest.mark.parametrize("bad", [[""], ["caf\u00e9"]])
def test_needles_must_be_non_empty_ascii(bad: list[str]) -> None:
    with pytest.raises(ValueError, match="non-empty ASCII"):
        Needles(bad)
