"""The final report of a session (``report.json`` and ``report.md``), rebuilt from the event log."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from orchestrator.models import AgentEvent, SessionState, apply
from orchestrator.models import events as ev
from orchestrator.models.common import Model, UtcDatetime

EXIT_CODES = {"succeeded": 0, "failed": 1, "stopped": 3, "paused": 4, "interrupted": 1}


class TaskReport(Model):
    id: str
    title: str
    agent: str
    worker: str
    status: str
    attempts: int = 0
    recoveries: list[str] = Field(default_factory=list, description="kind (cause) of each recovery")
    review: str | None = Field(default=None, description="the last decision on this task: ACTION (rule n)")
    files_changed: list[str] = Field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    branch: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


class Report(Model):
    session_id: str
    status: str
    exit_code: int
    prompt: str
    repo: str
    goal: str | None = None
    branch: str | None = Field(default=None, description="the branch holding the merged work")
    summary: str = ""
    created_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    tasks: list[TaskReport] = Field(default_factory=list)
    decisions: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


def build_report(events: Iterable[AgentEvent]) -> Report:
    """Fold the log into the report: state plus per-task facts the state does not keep."""
    state = SessionState()
    finished: dict[str, ev.TaskFinished] = {}
    recoveries: dict[str, list[str]] = {}
    request_task: dict[str, str] = {}
    task_review: dict[str, str] = {}
    for event in events:
        apply(state, event)
        data = event.data
        if isinstance(data, ev.TaskFinished) and event.task_id:
            finished[event.task_id] = data
        elif isinstance(data, ev.Recovery):
            recoveries.setdefault(event.worker, []).append(f"{data.action.kind} ({data.action.cause})")
        elif isinstance(data, ev.ReviewRequested):
            request_task[data.request.id] = data.request.task_id
        elif isinstance(data, ev.Decision):
            decision = data.decision
            task = request_task.get(decision.request_id)
            if task:
                task_review[task] = f"{decision.action.value} (rule {decision.rule})"
    return _assemble(state, finished, recoveries, task_review)


def _assemble(
    state: SessionState,
    finished: dict[str, ev.TaskFinished],
    recoveries: dict[str, list[str]],
    task_review: dict[str, str],
) -> Report:
    tasks: list[TaskReport] = []
    for task in state.plan.tasks if state.plan else []:
        worker_name = f"{task.agent}-{task.id}"
        worker = state.workers.get(worker_name)
        done = finished.get(task.id)
        tasks.append(
            TaskReport(
                id=task.id,
                title=task.title,
                agent=str(task.agent),
                worker=worker_name,
                status=state.tasks.get(task.id, "pending"),
                attempts=worker.attempt if worker else 0,
                recoveries=recoveries.get(worker_name, []),
                review=task_review.get(task.id),
                files_changed=done.files_changed if done else [],
                insertions=done.insertions if done else 0,
                deletions=done.deletions if done else 0,
                branch=done.branch if done else None,
                input_tokens=worker.input_tokens if worker else 0,
                output_tokens=worker.output_tokens if worker else 0,
                cost_usd=round(worker.cost_usd, 6) if worker else 0.0,
                error=worker.error if worker else None,
            )  # fmt: skip
        )
    decisions = [f"{d.action.value} (rule {d.rule}): {'; '.join(d.reasons)}" for d in state.decisions]
    return Report(
        session_id=state.session_id, status=state.status, exit_code=EXIT_CODES.get(state.status, 1),
        prompt=state.prompt, repo=state.repo, goal=state.plan.goal if state.plan else None,
        branch=state.merged_branch, summary=state.summary, created_at=state.created_at,
        finished_at=state.finished_at, tasks=tasks, decisions=decisions, errors=list(state.errors),
        input_tokens=state.totals.input_tokens, output_tokens=state.totals.output_tokens,
        cost_usd=round(state.totals.cost_usd, 6),
    )  # fmt: skip


def render_markdown(report: Report) -> str:
    """A human-readable report."""
    lines = [
        f"# Session {report.session_id}: {report.status}",
        "",
        f"- Prompt: {report.prompt}",
        f"- Repository: `{report.repo}`",
        f"- Goal: {report.goal or '-'}",
        f"- Merged branch: `{report.branch}`" if report.branch else "- Merged branch: none",
        f"- Tokens: {report.input_tokens} in, {report.output_tokens} out; cost ${report.cost_usd:.4f}",
        f"- Exit code: {report.exit_code}",
    ]
    if report.summary:
        lines += ["", report.summary]
    lines += ["", "| task | agent | status | attempts | recoveries | review | diff | tokens | cost |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for task in report.tasks:
        diff = f"{len(task.files_changed)} files +{task.insertions} -{task.deletions}"
        lines.append(
            f"| {task.id} {task.title} | {task.agent} | {task.status} | {task.attempts} | "
            f"{', '.join(task.recoveries) or '-'} | {task.review or '-'} | {diff} | "
            f"{task.input_tokens}/{task.output_tokens} | ${task.cost_usd:.4f} |"
        )
    if report.decisions:
        lines += ["", "## Decisions", *[f"- {d}" for d in report.decisions]]
    failed = [t for t in report.tasks if t.error]
    if report.errors or failed:
        lines += [
            "",
            "## Errors",
            *[f"- {e}" for e in report.errors],
            *[f"- {t.id}: {t.error}" for t in failed],
        ]
    return "\n".join(lines) + "\n"
