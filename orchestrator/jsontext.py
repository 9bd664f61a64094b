"""Finding JSON objects in an agent's free-text answer (plain, fenced, or embedded in prose)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_MAX_CANDIDATES = 64
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.S)


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """JSON objects in ``text``: the whole text, fenced blocks (last first), then embedded ones."""
    seen = 0
    whole = _loads(text.strip())
    if isinstance(whole, dict):
        yield whole
    for block in reversed(_FENCE.findall(text)):
        parsed = _loads(block.strip())
        if isinstance(parsed, dict):
            yield parsed
    decoder = json.JSONDecoder(parse_constant=_refuse_constant)
    start = text.find("{")
    while start != -1 and seen < _MAX_CANDIDATES:
        seen += 1
        try:
            parsed, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            start = text.find("{", start + 1)
            continue
        if isinstance(parsed, dict):
            yield parsed
        start = text.find("{", end)


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
