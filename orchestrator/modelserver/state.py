"""Which turn answers a request: scripts consumed in order, under one lock.

``ScenarioState.pick(request)`` walks the scripts in file order and takes the first one whose
matcher fits the request and which still has turns left; it hands out that script's current turn
and advances after the turn was served ``repeat`` times (never, for ``repeat = "forever"``).
After a tool-call turn with ``retry_failed = N`` the script is *armed*: a matching request that
reports the call failed gets that turn again, at most N times, even when the script has no turns
left; a request that reports it succeeded, or any other turn served, disarms it. The call is
reported on by a request carrying a tool result the request that got the call did not have
(``Incoming.result_ids``): its latest tool result decides (``Incoming.tool_error``; Codex's
``aborted`` for a call a stop cut short is a failure). A request carrying no new result reports the
call failed too: it never came back, which is how a resumed Claude Code or Gemini CLI shows a call a
stop cut short (they leave it out of the conversation); ``Pick.unanswered`` marks that re-issue.
``answer_for`` fills a message turn's placeholders (``${cwd}``, captures) for one request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from orchestrator.modelserver.incoming import Incoming
from orchestrator.modelserver.scenario import (
    PLACEHOLDER,
    RawTool,
    RunShell,
    Scenario,
    Script,
    Turn,
    WriteFile,
)
from orchestrator.modelserver.wire import Answer


@dataclass(frozen=True)
class Pick:
    """The turn chosen for one request; ``attempt`` counts its uses, from 1; ``retry`` its re-issues;
    ``unanswered``: re-issued because the request carries no result for the armed call."""

    script: Script
    turn: Turn
    attempt: int
    retry: int = 0
    unanswered: bool = False


def matches(script: Script, request: Incoming) -> bool:
    """True when every matcher the script states fits the request (no matcher: every request)."""
    if script.agent is not None and script.agent != request.agent:
        return False
    if script.prompt is not None and script.prompt not in request.user_text:
        return False
    return script.system is None or script.system in request.system_text


class ScenarioState:
    """The position of every script; thread-safe (the HTTP server answers in threads)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._lock = threading.Lock()
        self._position = [0] * len(scenario.scripts)
        self._served = [0] * len(scenario.scripts)
        self._armed: list[Turn | None] = [None] * len(scenario.scripts)
        self._known: list[frozenset[str]] = [frozenset()] * len(scenario.scripts)
        self._retried = [0] * len(scenario.scripts)

    def pick(self, request: Incoming) -> Pick | None:
        """The next turn for ``request``, or None when no script with turns left matches it."""
        with self._lock:
            for index, script in enumerate(self.scenario.scripts):
                if not matches(script, request):
                    continue
                armed = self._armed[index]
                answered = not request.result_ids <= self._known[index]
                failed = request.tool_error if answered else True  # no result: the call never came back
                if armed is not None and not failed:
                    self._armed[index] = armed = None  # the call went through: on to the next turn
                if armed is not None and self._retried[index] < armed.retry_failed:
                    self._retried[index] += 1
                    self._known[index] = request.result_ids
                    retry = self._retried[index]
                    return Pick(script, armed, retry + 1, retry, unanswered=not answered)
                position = self._position[index]
                if position >= len(script.turns):
                    continue
                turn = script.turns[position]
                self._served[index] += 1
                attempt = self._served[index]
                if turn.repeat is not None and attempt >= turn.repeat:
                    self._position[index] += 1
                    self._served[index] = 0
                self._armed[index] = turn if turn.retry_failed and turn.tool is not None else None
                self._known[index] = request.result_ids
                self._retried[index] = 0
                return Pick(script, turn, attempt)
        return None

    def reset(self) -> None:
        """Start every script again from its first turn."""
        with self._lock:
            self._position = [0] * len(self.scenario.scripts)
            self._served = [0] * len(self.scenario.scripts)
            self._armed = [None] * len(self.scenario.scripts)
            self._known = [frozenset()] * len(self.scenario.scripts)
            self._retried = [0] * len(self.scenario.scripts)

    def snapshot(self) -> dict[str, Any]:
        """Where each script stands, for ``GET /_scenario/state``."""
        with self._lock:
            scripts = [
                {
                    "name": script.name,
                    "agent": script.agent,
                    "prompt": script.prompt,
                    "system": script.system,
                    "turns": len(script.turns),
                    "next_turn": min(self._position[i], len(script.turns)) + 1,
                    "served_of_next": self._served[i],
                    "retries": self._retried[i],
                    "done": self._position[i] >= len(script.turns),
                }
                for i, script in enumerate(self.scenario.scripts)
            ]
        return {
            "source": self.scenario.source,
            "description": self.scenario.description,
            "scripts": scripts,
            "done": all(s["done"] for s in scripts),
        }


def answer_for(turn: Turn, request: Incoming, default_cwd: str | None) -> tuple[Answer, list[str]]:
    """The turn's message with placeholders filled; also the capture names that found nothing."""
    cwd = request.cwd or default_cwd
    values = {"cwd": cwd or ""}
    missing: list[str] = []
    haystack = request.user_text + "\n" + request.system_text
    for name, pattern in turn.capture.items():
        found = pattern.search(haystack)
        values[name] = found.group(1) if found else ""
        if not found:
            missing.append(name)

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    tool = turn.tool
    if isinstance(tool, WriteFile):
        tool = WriteFile(fill(tool.path), fill(tool.content))
    elif isinstance(tool, RunShell):
        tool = RunShell(fill(tool.command))
    elif isinstance(tool, RawTool):
        tool = RawTool(tool.name, fill(tool.input))
    answer = Answer(
        text=fill(turn.text),
        data=fill(turn.json),
        tool=tool,
        usage=turn.usage,
        chunks=turn.chunks,
        cwd=cwd,
    )
    return answer, missing
