"""Finding any of several short texts in a long one, ignoring ASCII case, in one pass.

A flood of output is searched for a dozen markers per run of lines (the adapters' loud lines) and
for key shapes and registered secrets (the redactor). One ``str.find`` pass per marker costs ~1 ns
per character each, and ``str.lower`` of a text that holds one non-ASCII character costs more than
all of them; ``Needles`` instead lowers the text's UTF-8 bytes (ASCII letters only, byte for byte)
and runs one multi-pattern automaton over them (``ahocorasick_rs``, leftmost-first: its SIMD
prefilter reads gigabytes a second).

Lowering bytes is exact for ASCII needles, with two exceptions: ``str.lower`` turns U+0130 (İ) and
U+212A (the Kelvin sign) into ASCII letters. Their bytes are needles too, so a text that holds one
is always a hit: ``Needles`` never misses what a ``needle in text.lower()`` test would find.
"""

from __future__ import annotations

from collections.abc import Iterable

from ahocorasick_rs import MATCHKIND_LEFTMOST_FIRST, BytesAhoCorasick

# non-ASCII characters whose ``str.lower`` holds an ASCII letter (all of Unicode, checked by a test)
LOWER_TO_ASCII = ("\u0130", "\u212a")
# Below this many bytes a text is searched one needle at a time: the automaton lets other threads
# run while it searches, and taking the interpreter back costs more than a short search (measured
# in B2: ~10 us of CPU per call on a busy process, against ~1 us of finds for a 300-byte event)
SHORT = 2048


def utf8(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate (from JSON ``\\ud800``) is kept, never an error."""
    return text.encode("utf-8", "surrogatepass")


class Needles:
    """Where any of ``needles`` occurs in a text, case-blind for ASCII (see the module docstring).

    ``needles`` must be ASCII and non-empty; ``exact`` ones (any text, e.g. a secret value) are
    found as they are, after the same byte lowering of both sides.
    """

    def __init__(self, needles: Iterable[str], exact: Iterable[str] = ()) -> None:
        folded = [n.lower() for n in needles]
        if any(not n or not n.isascii() for n in folded):
            raise ValueError(f"needles must be non-empty ASCII: {folded!r}")
        patterns = {n.encode() for n in folded} | {utf8(c) for c in LOWER_TO_ASCII}
        patterns |= {utf8(e).lower() for e in exact if e}
        self._patterns = tuple(sorted(patterns))
        self._automaton = BytesAhoCorasick(self._patterns, matchkind=MATCHKIND_LEFTMOST_FIRST)

    @staticmethod
    def lowered(text: str) -> bytes:
        """What ``starts`` and ``found_in`` search: ``text``'s UTF-8 with ASCII letters lowered."""
        return utf8(text).lower()

    def starts(self, lowered: bytes) -> list[int]:
        """Byte offsets in ``lowered`` where a needle starts: each hit's, or more (never fewer lines).

        The automaton gives leftmost-first hits that do not overlap; a short text is searched needle
        by needle instead (every hit of each), see ``SHORT``.
        """
        if len(lowered) < SHORT:
            found: list[int] = []
            for pattern in self._patterns:
                at = lowered.find(pattern)
                while at >= 0:
                    found.append(at)
                    at = lowered.find(pattern, at + 1)
            return sorted(found)
        return [start for _, start, _ in self._automaton.find_matches_as_indexes(lowered)]

    def found_in(self, text: str) -> bool:
        """Whether any needle occurs in ``text``."""
        return self.found_in_utf8(utf8(text))

    def found_in_utf8(self, data: bytes) -> bool:
        """``found_in`` of the text whose UTF-8 is ``data``."""
        lowered = data.lower()
        if len(lowered) < SHORT:
            return any(pattern in lowered for pattern in self._patterns)
        return bool(self._automaton.find_matches_as_indexes(lowered))
