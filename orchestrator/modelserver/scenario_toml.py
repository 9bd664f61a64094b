"""Reading scenario TOML: ``load_scenario(path)`` and ``parse_scenario(text)``, strictly validated.

Every problem raises ``ScenarioError`` with the file, the place (top level, script, turn, key) and
what would be accepted, so a scenario author can fix it without reading this code.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.modelserver.scenario import (
    AGENTS,
    BUILTIN_VARS,
    ERROR_NAMES,
    PLACEHOLDER,
    ErrorReply,
    RawTool,
    RunShell,
    Scenario,
    ScenarioError,
    Script,
    ToolCall,
    Turn,
    Usage,
    WriteFile,
)

_TOP_KEYS = ("description", "cwd", "auto_side_requests", "script", "turn")
_SCRIPT_KEYS = ("name", "agent", "prompt", "system", "turn")
_TURN_KEYS = (
    "text",
    "json",
    "write",
    "shell",
    "tool",
    "error",
    "hang",
    "delay",
    "cut",
    "cut_after",
    "repeat",
    "chunks",
    "usage",
    "capture",
    "retry_failed",
    "retry_delay",
)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise ``ScenarioError`` on anything unusable."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as err:
        raise ScenarioError(f"cannot read scenario file {str(source)!r}: {err.strerror or err}") from err
    return parse_scenario(raw, source=str(source))


def parse_scenario(raw: bytes | str, source: str = "<memory>") -> Scenario:
    """Parse TOML text into a ``Scenario``; every problem names ``source`` and the place in it."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"scenario {source}: not valid TOML: {err}") from err
    return _Parser(source).scenario(doc)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ScenarioError:
        return ScenarioError(f"scenario {self.source}: {where}: {problem}")

    def keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(where, f"unknown key {key!r} (expected one of: {', '.join(allowed)})")

    def scenario(self, doc: Mapping[str, Any]) -> Scenario:
        self.keys(doc, _TOP_KEYS, "top level")
        description = self.string(doc, "description", "top level", default="")
        cwd = self.string(doc, "cwd", "top level", default=None)
        auto = doc.get("auto_side_requests", True)
        if not isinstance(auto, bool):
            raise self.fail("top level", f"'auto_side_requests' must be true or false, not {auto!r}")
        scripts = [self.script(t, i) for i, t in enumerate(self.tables(doc, "script", "top level"), 1)]
        if "turn" in doc:
            turns = self.turns(doc, "top-level turns")
            scripts.append(Script(name="main", turns=turns))
        if not scripts:
            raise self.fail("top level", "no turns: add [[turn]] tables or [[script]] tables with turns")
        names = [s.name for s in scripts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise self.fail("top level", f"script names must be unique; repeated: {', '.join(dupes)}")
        return Scenario(tuple(scripts), description, cwd, auto, self.source)

    def tables(self, doc: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise self.fail(where, f"'{key}' must be an array of tables ([[{key}]]), not {value!r}")
        return value

    def script(self, table: Mapping[str, Any], index: int) -> Script:
        name = table.get("name", f"script{index}")
        where = f"script {name!r}" if isinstance(name, str) else f"script #{index}"
        self.keys(table, _SCRIPT_KEYS, where)
        name = self.string(table, "name", where, default=f"script{index}")
        agent = self.string(table, "agent", where, default=None)
        if agent is not None and agent not in AGENTS:
            raise self.fail(where, f"'agent' must be one of {', '.join(AGENTS)}, not {agent!r}")
        prompt = self.string(table, "prompt", where, default=None)
        system = self.string(table, "system", where, default=None)
        return Script(name, self.turns(table, where), agent, prompt, system)

    def turns(self, table: Mapping[str, Any], where: str) -> tuple[Turn, ...]:
        tables = self.tables(table, "turn", where)
        if not tables:
            raise self.fail(where, "has no turns: add at least one [[turn]] (or [[script.turn]])")
        return tuple(self.turn(t, f"{where}, turn {i}", i) for i, t in enumerate(tables, 1))

    def turn(self, table: Mapping[str, Any], where: str, number: int) -> Turn:
        self.keys(table, _TURN_KEYS, where)
        capture = self.capture(table.get("capture", {}), where)
        text = self.string(table, "text", where, default=None)
        json_value = table.get("json")
        if "json" in table and not isinstance(json_value, dict | list):
            raise self.fail(where, f"'json' must be a table or an array, not {json_value!r}")
        tool = self.tool(table, where)
        error = self.error(table["error"], where) if "error" in table else None
        hang = self.hang(table["hang"], where) if "hang" in table else None
        has_message = text is not None or json_value is not None or tool is not None
        if error is not None and (has_message or hang is not None):
            raise self.fail(where, "'error' replaces the answer: remove text/json/write/shell/tool/hang")
        if hang is not None and has_message:
            raise self.fail(where, "'hang' replaces the answer: remove text/json/write/shell/tool")
        if text is not None and json_value is not None:
            raise self.fail(where, "give either 'text' or 'json', not both ('json' is sent as the text)")
        cut = table.get("cut")
        if cut is not None and cut not in ("abort", "eof"):
            raise self.fail(where, f'\'cut\' must be "abort" or "eof", not {cut!r}')
        if cut is not None and not has_message:
            raise self.fail(where, "'cut' needs an answer to cut: add text, json, write, shell or tool")
        if not has_message and error is None and hang is None:
            raise self.fail(where, "says nothing: give one of text, json, write, shell, tool, error, hang")
        cut_after = self.integer(table, "cut_after", where, minimum=0)
        if cut_after is not None and cut is None:
            raise self.fail(where, "'cut_after' needs 'cut' (\"abort\" or \"eof\")")
        retry_failed = self.integer(table, "retry_failed", where, minimum=0) or 0
        if retry_failed and tool is None:
            raise self.fail(where, "'retry_failed' re-issues a tool call: add write, shell or tool")
        if "retry_delay" in table and not retry_failed:
            raise self.fail(where, "'retry_delay' is the wait before a re-issue: add 'retry_failed' >= 1")
        turn = Turn(
            number=number,
            text=text,
            json=json_value,
            tool=tool,
            error=error,
            hang=hang,
            cut=cut,
            cut_after=cut_after,
            delay=self.seconds(table, "delay", where, default=0.0),
            repeat=self.repeat(table.get("repeat", 1), where),
            chunks=self.integer(table, "chunks", where, minimum=1),
            usage=self.usage(table.get("usage", {}), where),
            capture=capture,
            retry_failed=retry_failed,
            retry_delay=self.seconds(table, "retry_delay", where, default=0.0),
        )
        self.placeholders(turn, where)
        return turn

    def string(self, table: Mapping[str, Any], key: str, where: str, default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, str):
            raise self.fail(where, f"{key!r} must be a string, not {value!r}")
        return value

    def integer(self, table: Mapping[str, Any], key: str, where: str, minimum: int) -> int | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"{key!r} must be an integer >= {minimum}, not {value!r}")
        return value

    def seconds(self, table: Mapping[str, Any], key: str, where: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise self.fail(where, f"{key!r} must be a number of seconds >= 0, not {value!r}")
        return float(value)

    def repeat(self, value: Any, where: str) -> int | None:
        if value == "forever":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(where, f"'repeat' must be an integer >= 1 or \"forever\", not {value!r}")
        return value

    def hang(self, value: Any, where: str) -> float:
        if value == "forever":
            return math.inf
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise self.fail(where, f"'hang' must be seconds > 0 or \"forever\", not {value!r}")
        return float(value)

    def tool(self, table: Mapping[str, Any], where: str) -> ToolCall | None:
        given = [k for k in ("write", "shell", "tool") if k in table]
        if len(given) > 1:
            raise self.fail(where, f"one tool call per turn: got {', '.join(given)}")
        if not given:
            return None
        key = given[0]
        value = table[key]
        if key == "shell":
            if not isinstance(value, str) or not value.strip():
                raise self.fail(where, f"'shell' must be a non-empty command string, not {value!r}")
            return RunShell(value)
        if not isinstance(value, dict):
            raise self.fail(where, f"{key!r} must be a table, not {value!r}")
        inner = f"{where}, {key}"
        if key == "write":
            self.keys(value, ("path", "content"), inner)
            path = self.string(value, "path", inner, default="")
            if not path:
                raise self.fail(inner, "'path' is required and must not be empty")
            return WriteFile(path, self.string(value, "content", inner, default=""))
        self.keys(value, ("name", "input"), inner)
        name = self.string(value, "name", inner, default="")
        if not name:
            raise self.fail(inner, "'name' is required and must not be empty")
        args = value.get("input", {})
        if not isinstance(args, dict | str):
            raise self.fail(inner, f"'input' must be a table or a string, not {args!r}")
        return RawTool(name, args)

    def error(self, value: Any, where: str) -> ErrorReply:
        table: Mapping[str, Any] = value if isinstance(value, dict) else {"status": value}
        inner = f"{where}, error"
        self.keys(table, ("status", "retry_after", "retry_after_body", "message"), inner)
        status = table.get("status")
        if isinstance(status, str) and status in ERROR_NAMES:
            status = ERROR_NAMES[status]
        elif isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            names = ", ".join(ERROR_NAMES)
            raise self.fail(inner, f"status must be an HTTP status 400-599 or one of {names}; got {status!r}")
        after, body = (
            self.seconds(table, key, inner, default=0.0) if key in table else None
            for key in ("retry_after", "retry_after_body")
        )
        return ErrorReply(status, after, body, self.string(table, "message", inner, default=None))

    def usage(self, value: Any, where: str) -> Usage:
        if not isinstance(value, dict):
            raise self.fail(where, f"'usage' must be a table {{input, output, cached}}, not {value!r}")
        inner = f"{where}, usage"
        self.keys(value, ("input", "output", "cached"), inner)
        got = {k: self.integer(value, k, inner, minimum=0) for k in ("input", "output", "cached")}
        return Usage(**{k: v for k, v in got.items() if v is not None})

    def capture(self, value: Any, where: str) -> dict[str, re.Pattern[str]]:
        if not isinstance(value, dict):
            raise self.fail(where, f"'capture' must be a table of name = regex, not {value!r}")
        out: dict[str, re.Pattern[str]] = {}
        for name, pattern in value.items():
            inner = f"{where}, capture {name!r}"
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in BUILTIN_VARS:
                raise self.fail(inner, f"name must be an identifier other than {', '.join(BUILTIN_VARS)}")
            if not isinstance(pattern, str):
                raise self.fail(inner, f"must be a regular expression string, not {pattern!r}")
            try:
                compiled = re.compile(pattern)
            except re.error as err:
                raise self.fail(inner, f"bad regular expression {pattern!r}: {err}") from err
            if compiled.groups < 1:
                raise self.fail(
                    inner, f"regex {pattern!r} needs a group '(...)': its first group is the value"
                )
            out[name] = compiled
        return out

    def placeholders(self, turn: Turn, where: str) -> None:
        known = set(BUILTIN_VARS) | set(turn.capture)
        for text in _strings(turn):
            for name in PLACEHOLDER.findall(text):
                if name not in known:
                    raise self.fail(where, f"placeholder ${{{name}}} is neither 'cwd' nor a 'capture' name")


def _strings(turn: Turn) -> list[str]:
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(turn.text)
    walk(turn.json)
    if isinstance(turn.tool, WriteFile):
        walk([turn.tool.path, turn.tool.content])
    elif isinstance(turn.tool, RunShell):
        walk(turn.tool.command)
    elif isinstance(turn.tool, RawTool):
        walk(turn.tool.input)
    return found
