"""Request and response bodies of the HTTP API (``../shared/spec/API_SPEC.md``).

Session state and events are served as the models of ``orchestrator.models`` unchanged; these are
the API's own envelopes around them. Inbound bodies refuse unknown fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.runner import HumanAction
from orchestrator.models import AgentEvent
from orchestrator.models.common import UtcDatetime
from orchestrator.models.state import SessionStatus

MAX_NOTE = 10_000


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. not_found, invalid_id")
    message: str = Field(description="what happened, the bad value and the fix")


class ErrorBody(BaseModel):
    """Every error the API answers: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class Health(BaseModel):
    status: str = "ok"
    docker: bool = Field(description="the container engine answers")
    version: str


class SessionSummary(BaseModel):
    """One line of the session list."""

    id: str
    prompt: str = Field(description="the prompt, cut to 200 characters")
    status: SessionStatus
    created_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    workers: int = Field(description="number of workers (planned or started)")
    cost_usd: float
    input_tokens: int
    output_tokens: int
    last_seq: int


class SessionPage(BaseModel):
    sessions: list[SessionSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class EventPage(BaseModel):
    events: list[AgentEvent]
    next_after: int | None = Field(
        description="pass as ?after= for the next page; null when this page was not full"
    )


class SessionAccepted(BaseModel):
    session_id: str
    status: SessionStatus | None = Field(default=None, description="the status when the answer was made")


class DecisionBody(BaseModel):
    """A person's decision on a paused session."""

    model_config = ConfigDict(extra="forbid")

    action: HumanAction
    note: str = Field(default="", max_length=MAX_NOTE)


class Report(BaseModel):
    """``report.json`` of a finished session, as the coordinator wrote it."""

    model_config = ConfigDict(extra="allow")


def error_responses(*statuses: int, by_ref: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given error statuses, all with the JSON error body.

    ``by_ref`` names the schema by reference, for routes whose own media type is not JSON.
    """
    described = {
        400: "bad input: an invalid id, a malformed body or parameter",
        401: "no bearer token, or a wrong one",
        404: "no such session (or worker)",
        409: "the session is in a state that does not allow this",
        422: "the body or a parameter failed validation",
        503: "the server cannot do this now (no session runner, no container engine)",
    }
    if by_ref:
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        return {s: {"description": described[s], "content": content} for s in statuses}
    return {s: {"model": ErrorBody, "description": described[s]} for s in statuses}
