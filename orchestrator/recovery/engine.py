"""``PermissionRecoveryEngine``: applies the rules to a worker's events, exits and clock.

The engine decides; the coordinator acts. Every answer is a ``RecoveryAction`` to record before
acting, or ``None``. How to act on one:

- any kind but ``give_up``: stop the current container if it still runs (a stall: kill it), wait
  ``delay_s``, start container number ``attempt`` with the rung flags ``new_flags`` (rung ``rung``)
  and, for ``raise_memory``, the limit ``memory_bytes``; ``resume`` / ``escalate_permissions`` /
  ``backoff_restart`` / ``raise_memory`` continue the CLI's own session when the worker has a
  ``cli_session_id``; ``restart`` starts afresh (the CLI printed no session id, or lost it);
- ``give_up``: stop the container if it still runs and fail the task with ``message``.

A recorded action whose container has not started is ``WorkerView.pending``: after a crash of the
orchestrator itself, resuming the session starts it; until then later lines of the old container
yield None.

The engine is pure apart from a cache of per-run line parsers (raw-line input only). Randomness
(the backoff jitter) is derived from ``seed``, the worker and the backoff count, so replaying the
same events gives the same actions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import TypeVar

from orchestrator.agents import get_adapter
from orchestrator.agents.base import Stream, StreamParser
from orchestrator.log import get_logger
from orchestrator.models import events as ev
from orchestrator.models.common import AgentName
from orchestrator.models.recovery import RecoveryAction
from orchestrator.recovery import rules
from orchestrator.recovery.ladder import rung_flags
from orchestrator.recovery.policy import RecoveryPolicy
from orchestrator.recovery.view import ExitInfo, WorkerView, aware

log = get_logger(__name__)
EVIDENCE_CHARS = 2000
In = TypeVar("In")
ParserFactory = Callable[[AgentName], StreamParser]
StreamInput = str | ev.EventData | ev.AgentEvent | ev.EventDraft


def adapter_parser(agent: AgentName) -> StreamParser:
    """A fresh per-run parser of ``agent``'s adapter: the one place raw lines meet vendor knowledge."""
    return get_adapter(agent).parser()


class PermissionRecoveryEngine:
    """Decides what follows a worker's failure (POLICIES.md §2). Seed name kept."""

    def __init__(
        self,
        policy: RecoveryPolicy | None = None,
        *,
        seed: int = 0,
        parsers: ParserFactory = adapter_parser,
    ) -> None:
        self.policy = policy or RecoveryPolicy()
        self.seed = seed
        self._new_parser = parsers
        self._parsers: dict[tuple[str, int], StreamParser] = {}

    # -- the seed's entry points -------------------------------------------------------------------

    def monitor_stream(self, line_or_event: StreamInput, worker: WorkerView) -> RecoveryAction | None:
        """The action one output line or event of ``worker`` calls for, or None.

        Accepts a normalised payload, an ``AgentEvent``/``EventDraft`` (its payload is used), an
        ``Output`` or ``OutputLines`` payload or a raw ``str`` line; the last three are parsed with the
        worker's adapter, line by line (a ``str`` starting with ``{`` is taken as stdout, anything else
        as stderr). Garbage yields None, never an exception. The first payload of a line that calls for
        an action wins, and the lines after it are not read.
        """
        if isinstance(line_or_event, ev.AgentEvent | ev.EventDraft):
            line_or_event = line_or_event.data
        if isinstance(line_or_event, str):
            stream: Stream = "stdout" if line_or_event.lstrip().startswith("{") else "stderr"
            return self._raw(stream, line_or_event, worker)
        if isinstance(line_or_event, ev.Output | ev.OutputLines):
            stream, texts = line_or_event.stream, ev.lines_of(line_or_event)
            return next(filter(None, (self._raw(stream, text, worker) for text in texts)), None)
        return self._decide(rules.STREAM_RULES, line_or_event, worker, _evidence(line_or_event))

    def on_exit(self, worker: WorkerView, exit_info: ExitInfo | ev.WorkerExited) -> RecoveryAction | None:
        """The action the end of ``worker``'s container calls for, or None.

        When the run's lines came in raw, the adapter's ``finish(exit_code)`` payloads are judged
        first (a stream cut it only sees at the end). A person's stop, a clean finish and an exit
        after an action was already decided give None.
        """
        info = exit_info if isinstance(exit_info, ExitInfo) else ExitInfo.of(exit_info)
        parser = self._parsers.pop((worker.name, worker.attempt), None)
        if parser is not None:
            for data in _safely(lambda: parser.finish(info.exit_code), worker):
                found = self._decide(rules.STREAM_RULES, data, worker, _evidence(data))
                if found is not None:
                    return found
        return self._decide(rules.EXIT_RULES, info, worker, info.evidence or f"exit {info.exit_code}")

    def monitor_transcript(self, line: str, worker: WorkerView) -> RecoveryAction | None:
        """Like ``monitor_stream`` for one line of the CLI's own session log (Codex's rollout file,
        the only place its sandbox denials show); parsed by the same per-run parser, so a denial
        already seen on stdout or stderr is not reported twice. Never raises."""
        return self._raw(None, line, worker)

    def check_stall(self, worker: WorkerView, now: datetime) -> RecoveryAction | None:
        """A ``resume`` (kill first) when ``worker`` printed nothing for ``stall_timeout_s``; once."""
        since = worker.last_output_at or worker.started_at
        evidence = f"no output since {since.isoformat()}" if since else ""
        return self._decide(rules.CLOCK_RULES, aware(now), worker, evidence)

    def start_rung(self, agent: AgentName | str, *, is_writer: bool) -> int:
        """The rung of a task's first container (see ``RecoveryPolicy.start_rung``)."""
        return self.policy.start_rung(agent, is_writer=is_writer)

    def _fix_claude(self, worker: WorkerView) -> tuple[list[str], int]:
        """Flags and rung one step up Claude's ladder (``--permission-mode ...``)."""
        return _next_rung(AgentName.CLAUDE, worker)

    def _fix_gemini(self, worker: WorkerView) -> tuple[list[str], int]:
        """Flags and rung one step up Gemini's ladder (``--approval-mode ...``)."""
        return _next_rung(AgentName.GEMINI, worker)

    def _fix_codex(self, worker: WorkerView) -> tuple[list[str], int]:
        """Flags and rung one step up Codex's ladder (``--sandbox ...``, then no sandbox)."""
        return _next_rung(AgentName.CODEX, worker)

    # -- the machinery -----------------------------------------------------------------------------

    def _raw(self, stream: Stream | None, line: str, worker: WorkerView) -> RecoveryAction | None:
        key = (worker.name, worker.attempt)
        parser = self._parsers.get(key)
        if parser is None:
            parser = self._parsers[key] = self._parser_for(worker)

        def parse() -> list[ev.EventData]:
            return parser.parse_transcript_line(line) if stream is None else parser.parse_line(stream, line)

        for data in _safely(parse, worker):
            found = self._decide(rules.STREAM_RULES, data, worker, line)
            if found is not None:
                return found
        return None

    def _parser_for(self, worker: WorkerView) -> StreamParser:
        try:
            return self._new_parser(worker.agent)
        except Exception as err:  # noqa: BLE001 - without a parser raw lines are skipped, not fatal
            log.warning("recovery.no_parser", worker=worker.name, agent=worker.agent.value, error=repr(err))
            return _NoParser()

    def _decide(
        self, chain: Sequence[rules.Rule[In]], value: In, worker: WorkerView, evidence: str
    ) -> RecoveryAction | None:
        ctx = rules.Context(worker, self.policy, evidence[:EVIDENCE_CHARS], partial(self._rand, worker))
        for guard in rules.GUARDS:
            verdict = guard.fire(value, ctx)
            if verdict is not None:
                return self._action(guard.cause, verdict, ctx)
        for rule in chain:
            verdict = rule.fire(value, ctx)
            if verdict is not None:
                return self._action(rule.cause, verdict, ctx)
        return None

    def _action(self, cause: str, verdict: rules.Verdict, ctx: rules.Context) -> RecoveryAction | None:
        worker = ctx.worker
        if isinstance(verdict, rules.Ignore):
            return None
        if isinstance(verdict, rules.Restart) and worker.attempt + 1 > self.policy.max_attempts:
            verdict = rules.GiveUp(
                f"{worker.agent.value} would need container {worker.attempt + 1} ({cause}: "
                f"{ctx.evidence or 'no detail'}) but a worker gets at most "
                f"ORCH_RECOVERY__MAX_ATTEMPTS={self.policy.max_attempts}; fix the cause, then resume the session"
            )
        if isinstance(verdict, rules.GiveUp):
            return RecoveryAction(
                kind="give_up",
                worker=worker.name,
                cause=cause,
                evidence=ctx.evidence,
                attempt=worker.attempt,
                rung=worker.top_rung,
                message=verdict.message,
            )
        return RecoveryAction(
            kind=verdict.kind,
            worker=worker.name,
            cause=cause,
            evidence=ctx.evidence,
            new_flags=rung_flags(worker.agent, verdict.rung),
            delay_s=verdict.delay_s,
            attempt=worker.attempt + 1,
            rung=verdict.rung,
            memory_bytes=verdict.memory_bytes,
        )

    def _rand(self, worker: WorkerView) -> float:
        # Seeded by string (hashed with SHA-512 by ``random``): stable across processes and replays.
        return random.Random(f"{self.seed}:{worker.name}:{worker.count('rate_limited')}").random()


class _NoParser:
    """Stands in when the agent's adapter cannot build a parser: raw lines then yield nothing."""

    def parse_line(self, stream: Stream, line: str) -> list[ev.EventData]:
        return []

    def parse_lines(self, stream: Stream, lines: Sequence[str]) -> list[tuple[int, list[ev.EventData]]]:
        return []

    def parse_transcript_line(self, line: str) -> list[ev.EventData]:
        return []

    def finish(self, exit_code: int | None) -> list[ev.EventData]:
        return []


def _next_rung(agent: AgentName, worker: WorkerView) -> tuple[list[str], int]:
    if worker.agent is not agent:
        raise ValueError(f"worker {worker.name!r} runs {worker.agent.value}, not {agent.value}")
    rung = worker.top_rung + 1
    return rung_flags(agent, rung), rung


def _safely(parse: Callable[[], list[ev.EventData]], worker: WorkerView) -> list[ev.EventData]:
    try:
        return list(parse())
    except Exception as err:  # noqa: BLE001 - a parser bug must not stop monitoring; it is logged
        log.warning("recovery.parse_failed", worker=worker.name, agent=worker.agent.value, error=repr(err))
        return []


def _evidence(data: ev.EventData) -> str:
    match data:
        case ev.PermissionDenied():
            return f"{data.tool}: {data.detail}" if data.detail else data.tool
        case ev.RateLimited() | ev.AuthFailed() | ev.CliRetry() | ev.CliRefused():
            return data.detail
        case ev.ApiError():
            status = f" {data.status}" if data.status is not None else ""
            return f"{data.kind}{status}: {data.detail}" if data.detail else f"{data.kind}{status}"
        case _:
            return ""
