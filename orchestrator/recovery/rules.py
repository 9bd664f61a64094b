"""The recovery rules: ordered lists of small named functions; the first that fires wins.

A rule reads one input (a normalised event payload, an ``ExitInfo``, or the clock) and the
``Context``, and answers ``None`` (not mine), ``Ignore`` (mine, and nothing is to be done),
``Restart`` (start the next container) or ``GiveUp`` (with what a person must fix). The engine turns
the answer into a ``RecoveryAction`` whose ``cause`` is the rule's cause and applies the per-worker
``max_attempts`` bound. Restart budgets count recorded actions by cause (``WorkerView.count``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Generic, Literal, TypeVar

from orchestrator.models import events as ev
from orchestrator.models.common import AgentName
from orchestrator.recovery.ladder import TOP_RUNG, rung_flags
from orchestrator.recovery.policy import RecoveryPolicy, backoff_delay
from orchestrator.recovery.view import ExitInfo, WorkerView

MIB = 1024**2
LOGIN_DIRS = {AgentName.CLAUDE: "~/.claude", AgentName.CODEX: "~/.codex", AgentName.GEMINI: "~/.gemini"}
# Causes whose restarts share the ``max_restarts`` budget.
RESTART_CAUSES = ("api_failure", "turn_incomplete", "crashed")
# Gemini exits with the HTTP status mod 256 when it gives up on an API error (transcripts README).
GEMINI_AUTH_EXITS = frozenset({41, 145})
GEMINI_RATE_LIMIT_EXIT = 173

RestartKind = Literal["escalate_permissions", "backoff_restart", "restart", "resume", "raise_memory"]


@dataclass(frozen=True)
class Context:
    """What every rule may read besides its input.

    ``rand`` is the jitter of a backoff, in [0, 1): ``draw()`` made once, when a rule asks (most
    judgements, e.g. of each denied tool call in a flood, never do).
    """

    worker: WorkerView
    policy: RecoveryPolicy
    evidence: str = ""
    draw: Callable[[], float] = float

    @cached_property
    def rand(self) -> float:
        return self.draw()


@dataclass(frozen=True)
class Restart:
    """Start the next container on ``rung`` after ``delay_s`` (with ``memory_bytes`` if raised)."""

    kind: RestartKind
    rung: int
    delay_s: float = 0.0
    memory_bytes: int | None = None


@dataclass(frozen=True)
class GiveUp:
    """Stop trying; ``message`` says what happened and what to fix."""

    message: str


@dataclass(frozen=True)
class Ignore:
    """The rule owns the input and decides that nothing is to be done."""

    reason: str


Verdict = Restart | GiveUp | Ignore
In = TypeVar("In")


@dataclass(frozen=True)
class Rule(Generic[In]):
    """A named rule; ``cause`` becomes the action's ``cause`` and keys the restart budgets."""

    cause: str
    fire: Callable[[In, Context], Verdict | None]


def _env(agent: AgentName, field: str) -> str:
    return f"ORCH_{agent.value.upper()}__{field}"


def _describe(agent: AgentName, rung: int) -> str:
    return " ".join(rung_flags(agent, rung)) or "the default mode"


def _again(ctx: Context) -> RestartKind:
    # A CLI that printed its session id is resumed with its conversation; otherwise started afresh.
    return "resume" if ctx.worker.cli_session_id else "restart"


def _restart_budget(ctx: Context, what: str) -> Verdict:
    done, most = ctx.worker.count(*RESTART_CAUSES), ctx.policy.max_restarts
    if done >= most:
        return GiveUp(
            f"{ctx.worker.agent.value} failed again ({what}: {ctx.evidence or 'no detail'}) after {done} "
            f"resume(s), the most ORCH_RECOVERY__MAX_RESTARTS={most} allows; read the worker's output, fix "
            "the cause, then resume the session"
        )
    return Restart(_again(ctx), ctx.worker.top_rung)


# -- guards: apply before every other rule ---------------------------------------------------------


def stopped_by_person(_: object, ctx: Context) -> Verdict | None:
    return (
        Ignore("a person stopped this worker; it is never restarted")
        if ctx.worker.stopped_by_person
        else None
    )


def gave_up(_: object, ctx: Context) -> Verdict | None:
    return Ignore("the worker already gave up") if ctx.worker.gave_up else None


def pending(_: object, ctx: Context) -> Verdict | None:
    found = ctx.worker.pending
    return Ignore(f"{found.kind} for attempt {found.attempt} is already decided") if found else None


GUARDS: tuple[Rule[object], ...] = (
    Rule("stopped_by_person", stopped_by_person),
    Rule("gave_up", gave_up),
    Rule("pending", pending),
)


# -- stream rules: one normalised payload of the running container --------------------------------


def cli_retry(data: ev.EventData, _: Context) -> Verdict | None:
    return (
        Ignore("the CLI retries by itself; act when it gives up") if isinstance(data, ev.CliRetry) else None
    )


def denied_by_policy(data: ev.EventData, _: Context) -> Verdict | None:
    if isinstance(data, ev.PermissionDenied) and data.by_policy:
        return Ignore("denied by the orchestrator's own rule; never escalated")
    return None


def read_only_task(data: ev.EventData, ctx: Context) -> Verdict | None:
    if isinstance(data, ev.PermissionDenied) and not ctx.worker.is_writer:
        return Ignore("a read-only task is meant to be denied writes; the model works around it")
    return None


def permission_denied(data: ev.EventData, ctx: Context) -> Verdict | None:
    if not isinstance(data, ev.PermissionDenied):
        return None
    agent, rung = ctx.worker.agent, ctx.worker.top_rung
    ceiling = ctx.policy.ceiling(agent)
    if rung >= TOP_RUNG:
        return GiveUp(
            f"{agent.value} was denied {data.tool} on its widest rung {rung} ({_describe(agent, rung)}), so no "
            "flag grants more: the CLI's own protection or the container refused it; change the task or "
            "its folders"
        )
    if rung >= ceiling:
        return GiveUp(
            f"{agent.value} was denied {data.tool} on rung {rung} ({_describe(agent, rung)}) and its ladder "
            f"stops there: {_env(agent, 'MAX_RUNG')}={ceiling}; raise it to {rung + 1} to allow "
            f"{_describe(agent, rung + 1)}, or make the task need less"
        )
    return Restart("escalate_permissions", rung + 1)


def auth_failed(data: ev.EventData, ctx: Context) -> Verdict | None:
    return _auth_give_up(ctx) if isinstance(data, ev.AuthFailed) else None


def _auth_give_up(ctx: Context) -> GiveUp:
    agent = ctx.worker.agent
    return GiveUp(
        f"{agent.value} could not authenticate ({ctx.evidence or 'no detail'}); set {_env(agent, 'API_KEY')} "
        f"to a valid key or {_env(agent, 'LOGIN_DIR')} to a logged-in {LOGIN_DIRS[agent]} folder, then "
        "resume the session"
    )


def cli_refused(data: ev.EventData, ctx: Context) -> Verdict | None:
    if not isinstance(data, ev.CliRefused):
        return None
    agent = ctx.worker.agent
    if data.reason == "resume_not_found" and ctx.worker.count("cli_refused") == 0:
        # The CLI lost its session store: start a fresh conversation rather than resume the lost one.
        return Restart("restart", ctx.worker.top_rung)
    fixes = {
        "untrusted_workspace": "its command must trust the task folder (Gemini --skip-trust, Codex "
        "--skip-git-repo-check): this is a bug in the orchestrator's command, please report it",
        "root_bypass": "bypassPermissions is refused as root: run the containers as a non-root user "
        f"(ORCH_UID, ORCH_GID) or set {_env(agent, 'MAX_RUNG')}=1",
        "bad_arguments": f"check {_env(agent, 'MODEL')} and the CLI version in {_env(agent, 'IMAGE')}",
        "resume_not_found": "its session store was lost twice; start the task again",
        "environment": "the container lacks something the CLI needs (a writable TMPDIR or home); rebuild "
        "the image or raise ORCH_LIMITS__TMP_SIZE / ORCH_LIMITS__HOME_SIZE",
    }
    fix = fixes.get(data.reason, "read the worker's output")
    return GiveUp(f"{agent.value} refused to run ({data.reason}: {ctx.evidence or 'no detail'}); {fix}")


def context_overflow(data: ev.EventData, ctx: Context) -> Verdict | None:
    if isinstance(data, ev.ApiError) and data.kind == "context_overflow":
        return GiveUp(
            f"{ctx.worker.agent.value}'s conversation no longer fits the model's context window; the plan "
            "should split this task into smaller ones"
        )
    return None


def rate_limited(data: ev.EventData, ctx: Context) -> Verdict | None:
    return _backoff(data.retry_after_s, ctx) if isinstance(data, ev.RateLimited) else None


def _backoff(retry_after: float | None, ctx: Context) -> Verdict:
    done, most = ctx.worker.count("rate_limited"), ctx.policy.max_backoffs
    if done >= most:
        return GiveUp(
            f"{ctx.worker.agent.value} was still rate limited after {done} backoff(s), the most "
            f"ORCH_RECOVERY__MAX_BACKOFFS={most} allows; wait for the quota to reset (or raise the limit), "
            "then resume the session"
        )
    delay = backoff_delay(done, retry_after, ctx.policy, ctx.rand)
    return Restart("backoff_restart", ctx.worker.top_rung, delay_s=delay)


def api_failure(data: ev.EventData, ctx: Context) -> Verdict | None:
    if isinstance(data, ev.ApiError) and data.kind != "context_overflow":
        return _restart_budget(ctx, f"the model API failed ({data.kind})")
    return None


STREAM_RULES: tuple[Rule[ev.EventData], ...] = (
    Rule("cli_retry", cli_retry),
    Rule("denied_by_policy", denied_by_policy),
    Rule("read_only_task", read_only_task),
    Rule("permission_denied", permission_denied),
    Rule("auth_failed", auth_failed),
    Rule("cli_refused", cli_refused),
    Rule("context_overflow", context_overflow),
    Rule("rate_limited", rate_limited),
    Rule("api_failure", api_failure),
)


# -- exit rules: the container ended and no action is pending ------------------------------------


def finished(info: ExitInfo, _: Context) -> Verdict | None:
    clean = info.reason == "finished" and info.exit_code == 0
    if clean and info.result_ok is not False and not info.turn_incomplete:
        return Ignore("the run finished")
    return None


def stopped(info: ExitInfo, _: Context) -> Verdict | None:
    if info.reason in ("stopped", "killed"):
        return Ignore("stopped on purpose, not by a failure")
    return None


def out_of_memory(info: ExitInfo, ctx: Context) -> Verdict | None:
    if info.reason != "oom":
        return None
    policy, agent = ctx.policy, ctx.worker.agent.value
    current = ctx.worker.memory_bytes or policy.default_memory_bytes
    raised = min(int(current * policy.memory_factor), policy.memory_cap_bytes)
    if ctx.worker.count("out_of_memory") >= policy.max_memory_raises:
        return GiveUp(
            f"{agent} ran out of memory again at {current // MIB} MiB after a raise; raise "
            "ORCH_LIMITS__MEMORY or split the task"
        )
    if raised <= current:
        return GiveUp(
            f"{agent} ran out of memory at {current // MIB} MiB, already at the cap "
            f"ORCH_RECOVERY__MEMORY_CAP ({policy.memory_cap_bytes // MIB} MiB); raise the cap or split the task"
        )
    return Restart("raise_memory", ctx.worker.top_rung, memory_bytes=raised)


def stalled(_: object, ctx: Context) -> Verdict | None:
    done, most = ctx.worker.count("stalled"), ctx.policy.max_stall_resumes
    if done >= most:
        return GiveUp(
            f"{ctx.worker.agent.value} produced no output for {ctx.policy.stall_timeout_s:g} s again after "
            f"{done} resume(s) (ORCH_RECOVERY__STALL_TIMEOUT_S={ctx.policy.stall_timeout_s:g}); read its "
            "output for a hang (network, a prompt waiting for input), fix it, then resume the session"
        )
    return Restart(_again(ctx), ctx.worker.top_rung)


def stalled_exit(info: ExitInfo, ctx: Context) -> Verdict | None:
    return stalled(info, ctx) if info.reason == "stalled" else None


def timed_out(info: ExitInfo, ctx: Context) -> Verdict | None:
    if info.reason != "timeout":
        return None
    return GiveUp(
        f"{ctx.worker.agent.value} ran past the task's wall-clock limit; raise ORCH_TASK_TIMEOUT_S or split "
        "the task"
    )


def gemini_auth_exit(info: ExitInfo, ctx: Context) -> Verdict | None:
    is_auth = ctx.worker.agent is AgentName.GEMINI and info.exit_code in GEMINI_AUTH_EXITS
    return _auth_give_up(ctx) if is_auth else None


def gemini_rate_limit_exit(info: ExitInfo, ctx: Context) -> Verdict | None:
    if ctx.worker.agent is AgentName.GEMINI and info.exit_code == GEMINI_RATE_LIMIT_EXIT:
        return _backoff(None, ctx)
    return None


def turn_incomplete(info: ExitInfo, ctx: Context) -> Verdict | None:
    if info.exit_code == 0 and (info.turn_incomplete or info.result_ok is False):
        return _restart_budget(ctx, "the turn ended without finishing")
    return None


def crashed(info: ExitInfo, ctx: Context) -> Verdict | None:
    return _restart_budget(ctx, f"exit code {info.exit_code}")


EXIT_RULES: tuple[Rule[ExitInfo], ...] = (
    Rule("finished", finished),
    Rule("stopped", stopped),
    Rule("out_of_memory", out_of_memory),
    Rule("stalled", stalled_exit),
    Rule("timeout", timed_out),
    Rule("auth_failed", gemini_auth_exit),
    Rule("rate_limited", gemini_rate_limit_exit),
    Rule("turn_incomplete", turn_incomplete),
    Rule("crashed", crashed),
)


# -- the clock -------------------------------------------------------------------------------------


def stall(now: datetime, ctx: Context) -> Verdict | None:
    worker = ctx.worker
    since = worker.last_output_at or worker.started_at
    if not worker.active or since is None:
        return None
    if (now - since).total_seconds() < ctx.policy.stall_timeout_s:
        return None
    return stalled(now, ctx)


CLOCK_RULES: tuple[Rule[datetime], ...] = (Rule("stalled", stall),)
