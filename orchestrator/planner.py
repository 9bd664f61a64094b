"""Planning: the prompt that asks Claude Code for a ``TaskBreakdown``, and reading its answer.

Pure: the coordinator runs the planner container; this module writes the prompt, gives the JSON
schema for the CLI's structured-output option, and turns the answer (structured output or free
text) into a validated ``TaskBreakdown`` — or a ``PlanAnswerError`` naming what is wrong, which the
coordinator sends back once before failing the session.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from orchestrator.jsontext import json_objects
from orchestrator.models import TaskBreakdown
from orchestrator.models.common import Model

MAX_LISTING = 200


class PlanAnswerError(Model):
    """Why a planner answer is not a valid plan, in words the planner can act on."""

    message: str
    excerpt: str = ""


def plan_schema() -> dict[str, Any]:
    """The JSON schema of ``TaskBreakdown``, for the CLI's structured-output option."""
    return TaskBreakdown.model_json_schema()


def build_plan_prompt(prompt: str, agents: Sequence[str], files: Sequence[str] = ()) -> str:
    """Ask for a TaskBreakdown: the user's request, the agents to use, the repository's files."""
    listing = "\n".join(f"- {f}" for f in files[:MAX_LISTING])
    if len(files) > MAX_LISTING:
        listing += f"\n- ... and {len(files) - MAX_LISTING} more files"
    schema = json.dumps(plan_schema(), separators=(",", ":"))
    return (
        "You are the planner of a team of coding agents. Break the request below into a few small, "
        "independent tasks, each done by one agent in its own sandbox.\n\n"
        f"Request:\n{prompt}\n\n"
        f"Agents you may assign: {', '.join(agents)}. Use gemini for read-only analysis, codex and "
        "claude for changes. A task that changes files lists the directories it changes with mode "
        '"rw"; a read-only task lists only "ro" directories. Paths are relative to the repository '
        'root ("." is the root). Task ids are t1, t2, ...; depends_on names tasks that must finish '
        "first; acceptance lists checks a reviewer can verify.\n\n"
        f"Repository files:\n{listing or '- (empty)'}\n\n"
        "Answer with one JSON object and nothing else, matching this JSON schema:\n"
        f"{schema}\n"
    )


def build_plan_retry_prompt(error: PlanAnswerError) -> str:
    """The second and last try: what was wrong with the first answer."""
    return (
        f"Your plan was not valid: {error.message}\n"
        "Answer again with one corrected JSON object for the same schema, and nothing else."
    )


def parse_plan(answer: object, structured: dict[str, Any] | None = None) -> TaskBreakdown | PlanAnswerError:
    """The plan in ``structured`` (the CLI's structured output) or in the text ``answer``."""
    candidates: list[dict[str, Any]] = []
    if isinstance(structured, dict):
        candidates.append(structured)
    text = answer if isinstance(answer, str) else ""
    candidates.extend(json_objects(text))
    if not candidates:
        return PlanAnswerError(
            message="no JSON object found; answer with one JSON object", excerpt=text[:200]
        )
    first_error = ""
    for candidate in candidates:
        try:
            return TaskBreakdown.model_validate(candidate)
        except ValidationError as exc:
            first_error = first_error or _describe(exc)
    return PlanAnswerError(message=first_error, excerpt=text[:200])


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "plan"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
