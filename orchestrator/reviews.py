"""Running a peer review: the other agents, each in a read-only container, in parallel, with a timeout.

The policy (who reviews, the 4 rules) is ``review_engine``; this module only acts: it records the
``review_requested`` event, runs each reviewer's CLI with the structured-output schema, retries an
invalid answer once with the parse error, counts a second failure (or a timeout) as no answer,
records each ``review_received``, and returns the ``decision`` — recorded before anyone acts on it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.models import AgentName, OrchestratorDecision, ReviewRequest, ReviewResponse
from orchestrator.models import events as ev
from orchestrator.review_engine import ReviewOrchestrator
from orchestrator.review_prompt import (
    ReviewAnswerError,
    build_retry_prompt,
    build_review_prompt,
    parse_review_answer,
    review_response_schema,
)
from orchestrator.supervisor import Job, Supervisor


@dataclass
class ReviewRunner:
    """Runs reviews for one session."""

    supervisor: Supervisor
    policy: ReviewOrchestrator
    timeout_s: float
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_id(self, task_id: str) -> str:
        """``review-<task>-<n>``, never one the session has used (a resumed session counts from 1 again)."""
        state = self.supervisor.writer.state
        used = {d.request_id for d in state.decisions} | {r.request_id for r in state.reviews}
        while True:
            candidate = f"review-{task_id}-{next(self._counter)}"
            if candidate not in used:
                return candidate

    async def review(self, request: ReviewRequest, workdir: Path) -> OrchestratorDecision:
        """Ask every reviewer of ``request``; the decision is stored before it is returned."""
        writer = self.supervisor.writer
        writer.emit("orchestrator", ev.ReviewRequested(request=request), request.task_id)
        await writer.commit()
        answers = await asyncio.gather(*(
            self._one(request, AgentName(agent), n, workdir) for n, agent in enumerate(request.reviewers, 1)
        ))  # fmt: skip
        valid = [a for a in answers if a is not None]
        decision = self.policy.decide(request, valid)
        writer.emit("orchestrator", ev.Decision(decision=decision), request.task_id)
        await writer.commit()
        return decision

    async def _one(
        self, request: ReviewRequest, agent: AgentName, n: int, workdir: Path
    ) -> ReviewResponse | None:
        worker = f"reviewer-{agent.value}-{request.task_id}-{n}"
        prompt = build_review_prompt(request)
        try:
            async with asyncio.timeout(self.timeout_s):
                for _ in range(2):
                    job = Job(worker=worker, agent=agent, prompt=prompt, workdir=workdir, task_id=request.task_id,
                              schema=review_response_schema(), timeout_s=self.timeout_s)  # fmt: skip
                    outcome = await self.supervisor.run(job, rung=0)
                    text = json.dumps(outcome.structured) if outcome.structured else outcome.text
                    answer = parse_review_answer(text, request.id, worker)
                    if isinstance(answer, ReviewResponse):
                        self.supervisor.writer.emit(
                            worker, ev.ReviewReceived(response=answer), request.task_id
                        )
                        return answer
                    self._invalid(worker, request, answer)
                    prompt = build_review_prompt(request) + "\n\n" + build_retry_prompt(answer)
        except TimeoutError:
            await self.supervisor.stop_worker(worker, grace_s=1.0)
            self.supervisor.writer.emit(
                worker, ev.Error(message=f"reviewer {worker} gave no answer within {self.timeout_s:g} s"),
                request.task_id,
            )  # fmt: skip
        return None

    def _invalid(self, worker: str, request: ReviewRequest, answer: ReviewAnswerError) -> None:
        self.supervisor.writer.emit(
            worker, ev.Error(message=f"invalid review answer from {worker}: {answer.message}", detail=answer.excerpt),
            request.task_id,
        )  # fmt: skip
