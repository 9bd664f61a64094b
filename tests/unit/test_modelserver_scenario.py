"""Scenario files: strict validation with messages that name the place, and the shipped scenarios."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.models.plan import TaskBreakdown
from orchestrator.models.review import ReviewRequest, ReviewResponse
from orchestrator.modelserver import ScenarioError, load_scenario, parse_scenario
from orchestrator.modelserver.incoming import Incoming
from orchestrator.modelserver.scenario import ErrorReply, RawTool, RunShell, WriteFile
from orchestrator.modelserver.state import ScenarioState, answer_for
from orchestrator.review_prompt import build_review_prompt

SCENARIOS = Path(__file__).resolve().parents[2] / "orchestrator" / "scenarios"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[[turn]\ntext = 1", "scenario bad.toml: not valid TOML: "),
        ("", "top level: no turns"),
        (
            'title = "x"\n[[turn]]\ntext = "a"',
            "top level: unknown key 'title' (expected one of: description, cwd,",
        ),
        ('[[turn]]\ntxt = "a"', "top-level turns, turn 1: unknown key 'txt'"),
        (
            '[[script]]\nname = "p"\nagnt = "claude"\n[[script.turn]]\ntext = "a"',
            "script 'p': unknown key 'agnt'",
        ),
        (
            '[[script]]\nname = "p"\nagent = "gpt"\n[[script.turn]]\ntext = "a"',
            "script 'p': 'agent' must be one of claude, codex, gemini",
        ),
        ('[[script]]\nname = "p"', "script 'p': has no turns"),
        (
            '[[script]]\nname = "p"\n[[script.turn]]\ntext = "a"\n[[script]]\nname = "p"\n[[script.turn]]\ntext = "b"',
            "repeated: p",
        ),
        ("[[turn]]\ntext = 5", "turn 1: 'text' must be a string, not 5"),
        ('[[turn]]\njson = "x"', "turn 1: 'json' must be a table or an array"),
        ('[[turn]]\ntext = "a"\njson = { a = 1 }', "give either 'text' or 'json'"),
        ("[[turn]]\ndelay = 1", "turn 1: says nothing"),
        (
            '[[turn]]\ntext = "a"\nrepeat = "twice"',
            "'repeat' must be an integer >= 1 or \"forever\", not 'twice'",
        ),
        ('[[turn]]\ntext = "a"\nrepeat = 0', "'repeat' must be an integer >= 1"),
        ('[[turn]]\ntext = "a"\nrepeat = true', "'repeat' must be an integer >= 1"),
        ("[[turn]]\nhang = -1", "'hang' must be seconds > 0 or \"forever\", not -1"),
        ("[[turn]]\nhang = true", "'hang' must be seconds > 0"),
        ('[[turn]]\nhang = 1\ntext = "a"', "'hang' replaces the answer"),
        ('[[turn]]\nerror = 429\ntext = "a"', "'error' replaces the answer"),
        (
            "[[turn]]\nerror = 200",
            "error: status must be an HTTP status 400-599 or one of bad_request, auth,",
        ),
        ('[[turn]]\nerror = "teapot"', "error: status must be an HTTP status"),
        ("[[turn]]\nerror = { status = 429, after = 3 }", "turn 1, error: unknown key 'after'"),
        (
            '[[turn]]\nerror = { status = 429, retry_after = "3" }',
            "'retry_after' must be a number of seconds >= 0",
        ),
        ('[[turn]]\nwrite = { path = "" }', "turn 1, write: 'path' is required"),
        ('[[turn]]\nwrite = { path = "a", mode = "rw" }', "turn 1, write: unknown key 'mode'"),
        ('[[turn]]\nwrite = "a.txt"', "'write' must be a table"),
        ('[[turn]]\nshell = ""', "'shell' must be a non-empty command string"),
        ('[[turn]]\nshell = "ls"\nwrite = { path = "a" }', "one tool call per turn: got write, shell"),
        ("[[turn]]\ntool = { input = {} }", "turn 1, tool: 'name' is required"),
        ('[[turn]]\ntool = { name = "Edit", input = 3 }', "'input' must be a table or a string"),
        ('[[turn]]\ncut = "abort"', "'cut' needs an answer to cut"),
        ('[[turn]]\ntext = "a"\ncut = "half"', '\'cut\' must be "abort" or "eof"'),
        ('[[turn]]\ntext = "a"\ncut_after = 2', "'cut_after' needs 'cut'"),
        ('[[turn]]\ntext = "a"\nchunks = 0', "'chunks' must be an integer >= 1"),
        ('[[turn]]\ntext = "a"\nusage = { input = -1 }', "usage: 'input' must be an integer >= 0"),
        ('[[turn]]\ntext = "a"\nusage = { tokens = 1 }', "usage: unknown key 'tokens'"),
        ('[[turn]]\ntext = "a"\ndelay = "soon"', "'delay' must be a number of seconds >= 0"),
        ('[[turn]]\ntext = "${nope}"', "placeholder ${nope} is neither 'cwd' nor a 'capture' name"),
        ("[[turn]]\ntext = \"a\"\ncapture = { id = '(' }", "capture 'id': bad regular expression"),
        ("[[turn]]\ntext = \"a\"\ncapture = { id = 'x' }", "needs a group '(...)'"),
        ("[[turn]]\ntext = \"a\"\ncapture = { cwd = '(x)' }", "name must be an identifier other than cwd"),
        ('cwd = 1\n[[turn]]\ntext = "a"', "top level: 'cwd' must be a string"),
        ('auto_side_requests = "yes"\n[[turn]]\ntext = "a"', "'auto_side_requests' must be true or false"),
        ('turn = "x"', "'turn' must be an array of tables"),
    ],
)
def test_bad_scenarios_are_refused_with_the_place_and_the_key(toml: str, expected: str) -> None:
    """Every kind of mistake raises ScenarioError whose message names the file, the turn and the key."""
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(toml, source="bad.toml")
    assert expected in str(caught.value)
    assert str(caught.value).startswith("scenario bad.toml")


@given(st.text(max_size=400))
def test_any_text_parses_or_gives_a_scenario_error(text: str) -> None:
    """Garbage never crashes the loader: the result is a Scenario or a ScenarioError, nothing else."""
    try:
        scenario = parse_scenario(text)
    except ScenarioError as err:
        assert str(err).startswith("scenario <memory>")
    else:
        assert scenario.scripts


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_give_a_scenario_error(raw: bytes) -> None:
    """Undecodable bytes are read with replacement characters and refused or accepted, never a crash."""
    try:
        scenario = parse_scenario(raw)
    except ScenarioError as err:
        assert str(err).startswith("scenario <memory>")
    else:
        assert scenario.scripts


def test_unreadable_file_is_a_scenario_error(tmp_path: Path) -> None:
    """A missing file is reported with its path."""
    with pytest.raises(ScenarioError, match=r"cannot read scenario file '.*missing\.toml'"):
        load_scenario(tmp_path / "missing.toml")


def test_a_full_turn_is_read_into_typed_values() -> None:
    """Each turn key becomes its typed value; names resolve to statuses; ``forever`` is unbounded."""
    scenario = parse_scenario(
        """
description = "d"
cwd = "/w"
[[script]]
name = "s"
agent = "codex"
prompt = "p"
system = "sy"
[[script.turn]]
error = { status = "overloaded", retry_after = 2.5 }
repeat = 3
[[script.turn]]
hang = "forever"
[[script.turn]]
shell = "ls"
text = "t"
cut = "eof"
cut_after = 1
chunks = 2
delay = 0.5
usage = { input = 1, output = 2, cached = 3 }
repeat = "forever"
[[script.turn]]
tool = { name = "apply_patch", input = "*** Begin Patch" }
"""
    )
    (script,) = scenario.scripts
    error, hang, shell, raw = script.turns
    assert (
        script.name,
        script.agent,
        script.prompt,
        script.system,
        scenario.cwd,
    ) == ("s", "codex", "p", "sy", "/w")
    assert (ErrorReply(0, 2.5, None, None), 3, "error:overloaded") == (error.error, error.repeat, error.kind)
    assert (math.inf, "hang") == (hang.hang, hang.kind)
    assert (RunShell("ls"), "eof", 1, 2, 0.5, None, "tool:shell:cut-eof") == (
        shell.tool,
        shell.cut,
        shell.cut_after,
        shell.chunks,
        shell.delay,
        shell.repeat,
        shell.kind,
    )
    assert (RawTool("apply_patch", "*** Begin Patch"), "tool:apply_patch") == (raw.tool, raw.kind)


def test_repeat_consumes_a_turn_that_many_times_then_moves_on() -> None:
    """``repeat = 2`` serves the turn twice (attempts 1 and 2), then the next turn; then nothing."""
    state = ScenarioState(parse_scenario('[[turn]]\nerror = 429\nrepeat = 2\n[[turn]]\ntext = "ok"\n'))
    request = Incoming.of("openai", "", {"input": "x"})
    picks = [state.pick(request) for _ in range(4)]
    assert [(p.turn.number, p.attempt) if p else None for p in picks] == [(1, 1), (1, 2), (2, 1), None]


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_load(path: Path) -> None:
    """Every shipped scenario is valid and says what it is for."""
    scenario = load_scenario(path)
    assert scenario.description
    assert scenario.scripts


def test_shipped_single_agent_scenarios_have_the_expected_turns() -> None:
    """The per-CLI scenarios: write, 429 twice then write, 401, 500 and hang (each for any CLI)."""
    kinds = {
        name: [(t.kind, t.repeat) for s in load_scenario(SCENARIOS / f"{name}.toml").scripts for t in s.turns]
        for name in ("write-hello", "ratelimit-twice", "authfail", "servererror", "hang")
    }
    assert kinds == {
        "write-hello": [("tool:write", 1), ("text", 1)],
        "ratelimit-twice": [("error:429", 2), ("tool:write", 1), ("text", 1)],
        "authfail": [("error:401", None)],
        "servererror": [("error:500", None)],
        "hang": [("hang", None)],
    }
    write = load_scenario(SCENARIOS / "write-hello.toml").scripts[0].turns[0].tool
    assert WriteFile("hello.txt", "hello\n") == write


def test_demo_plan_is_a_valid_task_breakdown() -> None:
    """The demo planner's answer validates as a TaskBreakdown: t1 gemini read-only, t2 codex, t3 claude after t1."""
    demo = load_scenario(SCENARIOS / "demo.toml")
    planner = next(s for s in demo.scripts if s.name == "planner")
    plan = TaskBreakdown.model_validate(planner.turns[0].json)
    summary = [(t.id, t.agent.value, t.writes, t.depends_on) for t in plan.tasks]
    assert summary == [("t1", "gemini", False, []), ("t2", "codex", True, []), ("t3", "claude", True, ["t1"])]


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_demo_reviewers_answer_a_real_review_prompt_with_its_request_id(agent: str) -> None:
    """A prompt built by review_prompt reaches the agent's reviewer script, whose answer is a valid ReviewResponse."""
    demo = load_scenario(SCENARIOS / "demo.toml")
    request = ReviewRequest.model_validate(
        {
            "id": "rev-42",
            "session_id": "s1",
            "task_id": "t2",
            "author": "codex-t2",
            "reviewers": [agent],
            "trigger": "task_finished",
            "subject": {"diff": "+def greet(name): ...", "files_changed": ["greeting.py"]},
            "context": {
                "task": "Create greeting.py with a function greet(name) that returns 'hello, <name>'."
            },
        }
    )
    prompt = build_review_prompt(request)
    family = {"claude": "anthropic", "codex": "openai", "gemini": "gemini"}[agent]
    body = {
        "anthropic": {"messages": [{"role": "user", "content": prompt}]},
        "openai": {
            "input": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]}
            ]
        },
        "gemini": {"contents": [{"role": "user", "parts": [{"text": prompt}]}]},
    }[family]
    incoming = Incoming.of(family, "m", body)  # type: ignore[arg-type]
    pick = ScenarioState(demo).pick(incoming)
    assert pick is not None
    answer, missing = answer_for(pick.turn, incoming, demo.cwd)
    review = ReviewResponse.model_validate(answer.data)
    assert (f"review-{agent}", [], "rev-42", agent, "approve") == (
        pick.script.name,
        missing,
        review.request_id,
        review.reviewer,
        review.verdict,
    )
