"""Reading the planner's answer: structured output or free text, validated, errors in words."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.models import TaskBreakdown
from orchestrator.planner import PlanAnswerError, build_plan_prompt, parse_plan

PLAN = {
    "goal": "Add a greeting",
    "tasks": [
        {
            "id": "t1",
            "title": "Analyse",
            "description": "read",
            "agent": "gemini",
            "dirs": [{"path": ".", "mode": "ro"}],
        },
        {
            "id": "t2",
            "title": "Change",
            "description": "edit",
            "agent": "codex",
            "dirs": [{"path": "src", "mode": "rw"}],
            "depends_on": ["t1"],
        },
    ],
}


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps(PLAN),
        f"Here is the plan:\n```json\n{json.dumps(PLAN)}\n```\n",
        f"Plan: {json.dumps(PLAN)} done.",
    ],
)
def test_a_plan_is_found_in_plain_fenced_or_embedded_json(answer: str) -> None:
    """The planner may wrap its JSON in prose or a code fence."""
    plan = parse_plan(answer)
    assert isinstance(plan, TaskBreakdown)
    assert [t.id for t in plan.tasks] == ["t1", "t2"]


def test_structured_output_wins_over_the_text() -> None:
    """When the CLI returns structured output, that is the plan."""
    plan = parse_plan("ignored prose", structured=PLAN)
    assert isinstance(plan, TaskBreakdown)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("I cannot plan this.", "no JSON object"),
        (json.dumps({**PLAN, "tasks": [PLAN["tasks"][1]]}), "unknown task(s): t1"),
        (json.dumps({**PLAN, "tasks": []}), "tasks"),
        (json.dumps({"goal": "g", "tasks": [{**PLAN["tasks"][0], "agent": "copilot"}]}), "agent"),
    ],
)
def test_an_invalid_answer_is_an_error_naming_the_problem(answer: str, message: str) -> None:
    """Never an exception: an error the planner can read on its retry."""
    result = parse_plan(answer)
    assert isinstance(result, PlanAnswerError)
    assert message in result.message


@given(st.text(max_size=300))
def test_garbage_never_raises(text: str) -> None:
    """Any text gives a plan or an error."""
    assert isinstance(parse_plan(text), TaskBreakdown | PlanAnswerError)


def test_the_prompt_names_the_request_agents_files_and_schema() -> None:
    """The planner sees what it must plan with."""
    prompt = build_plan_prompt("Add a greeting", ["gemini", "codex"], ["src/app.py"])
    assert all(part in prompt for part in ("Add a greeting", "gemini, codex", "src/app.py", '"depends_on"'))
