"""Scripted agent CLIs for the FakeRuntime: each container prints what the real CLI would print.

``FakeAgents`` answers by worker name (the container's ``orchestrator.worker`` label): the planner
prints a plan, workers print a result (and may write files into their mounted worktree), reviewers
print a review. Lines follow the stream formats the adapters parse (see tests/fixtures/transcripts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.runtime import FakeLine, FakeProcess
from orchestrator.runtime.spec import ContainerSpec


def claude_lines(text: str, session: str = "claude-session") -> list[str]:
    return [
        json.dumps({"type": "system", "subtype": "init", "session_id": session}),
        json.dumps(
            {"type": "result", "subtype": "success", "is_error": False, "result": text, "session_id": session}
        ),
    ]


def codex_lines(text: str, thread: str = "codex-thread") -> list[str]:
    return [
        json.dumps({"type": "thread.started", "thread_id": thread}),
        json.dumps({"type": "item.completed", "item": {"id": "i1", "type": "agent_message", "text": text}}),
        json.dumps(
            {
                "type": "turn.completed",
                "usage": {"input_tokens": 10, "cached_input_tokens": 0, "output_tokens": 5},
            }
        ),
    ]


def gemini_lines(text: str, session: str = "gemini-session") -> list[str]:
    stamp = "2026-01-01T00:00:00Z"
    return [
        json.dumps({"type": "init", "timestamp": stamp, "session_id": session, "model": "m"}),
        json.dumps({"type": "message", "timestamp": stamp, "role": "assistant", "content": text, "delta": True}),
        json.dumps({"type": "result", "timestamp": stamp, "status": "success",
                    "stats": {"total_tokens": 3, "input_tokens": 2, "output_tokens": 1, "duration_ms": 5, "tool_calls": 0}}),
    ]  # fmt: skip


LINES: dict[str, Callable[[str], list[str]]] = {
    "claude": claude_lines,
    "codex": codex_lines,
    "gemini": gemini_lines,
}


def plan(*tasks: dict[str, Any], goal: str = "a goal") -> str:
    return json.dumps({"goal": goal, "tasks": list(tasks), "rationale": "r"})


def task(tid: str, agent: str, writes: bool = True, deps: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"id": tid, "title": f"task {tid}", "description": f"do {tid}", "agent": agent,
            "dirs": [{"path": ".", "mode": "rw" if writes else "ro"}], "depends_on": list(deps), "acceptance": []}  # fmt: skip


def review(
    verdict: str = "approve", severity: str = "none", findings: list[dict[str, Any]] | None = None
) -> str:
    return json.dumps({"request_id": "x", "reviewer": "x", "verdict": verdict, "severity": severity,
                       "confidence": 0.9, "findings": findings or [], "summary": "ok"})  # fmt: skip


@dataclass
class FakeAgents:
    """What each worker does; ``started`` records (worker, attempt) in start order."""

    plan_answers: list[str]
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # worker -> {path: content}
    fail: dict[str, FakeProcess] = field(default_factory=dict)  # worker -> what it does instead
    review_answer: str = field(default_factory=review)
    review_by: dict[str, str] = field(default_factory=dict)  # reviewing agent -> its answer
    run_s: float = 0.05
    started: list[str] = field(default_factory=list)

    def __call__(self, spec: ContainerSpec) -> FakeProcess:
        worker = spec.labels["orchestrator.worker"]
        agent = spec.labels.get("orchestrator.agent", "claude")
        self.started.append(worker)
        if worker in self.fail:
            return self.fail[worker]
        if worker == "planner":
            answer = self.plan_answers[min(self.started.count("planner"), len(self.plan_answers)) - 1]
            return FakeProcess(lines=claude_lines(answer))
        if worker.startswith("reviewer-"):
            return FakeProcess(lines=LINES[agent](self.review_by.get(agent, self.review_answer)))
        workdir = next(m.source for m in spec.mounts if m.target == "/workspace")
        for path, content in self.files.get(worker, {}).items():
            (Path(workdir) / path).write_text(content)
        lines = [FakeLine(line, after_s=self.run_s / 3) for line in LINES[agent](f"{worker} done")]
        return FakeProcess(lines=lines)
