"""``retry_failed``: a scripted tool call is issued again while the CLI reports that it failed.

Requests are shaped like the recorded ones (reference transcripts): a refused Claude ``Write`` comes
back as a ``tool_result`` with ``is_error``, a refused Codex ``apply_patch`` as a
``custom_tool_call_output`` saying "patch rejected", a Gemini tool not offered as a
``functionResponse`` with an ``error``. A resumed CLI sends the whole conversation and then its new
prompt, so the failed result is no longer the last item; it still counts.

A Codex stopped while a call ran, or just as it arrived, resumes with the output ``aborted`` for that
call (recorded below, reproduced in ``tests/integration/test_modelserver_interrupted_call.py``): the
call never ran, so it counts as failed and is issued again. What Claude Code and Gemini CLI send for
such a call (nothing: they leave it out) is in ``test_modelserver_cut_short.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from orchestrator.modelserver import ModelServer, ScenarioError, load_scenario, parse_scenario
from orchestrator.modelserver.incoming import Incoming, output_failed
from orchestrator.modelserver.state import ScenarioState
from tests.unit.test_modelserver_client import (
    CLAUDE_PATH,
    CODEX_PATH,
    GEMINI_STREAM,
    call,
    claude_body,
    codex_body,
    gemini_body,
    serving,
)

RETRY = """
[[turn]]
text = "Writing hello.txt."
write = { path = "hello.txt", content = "hello\\n" }
retry_failed = 2

[[turn]]
text = "done"
"""
CONTINUE = "Continue the task where you left off."
CLAUDE_DENIED = (
    "Claude requested permissions to write to /workspace/hello.txt, but you haven't granted it yet."
)
CODEX_DENIED = "patch rejected: writing is blocked by read-only sandbox; rejected by user approval settings"
CODEX_WRITTEN = (
    "Exit code: 0\nWall time: 0 seconds\nOutput:\nSuccess. Updated the following files:\nA hello.txt\n"
)
GEMINI_DENIED = {"error": 'Tool "write_file" not found. Did you mean one of: "read_file"?'}
GEMINI_WRITTEN = {"output": "Successfully created and wrote to new file: /workspace/hello.txt."}
CODEX_CUT_SHORT = "aborted"  # Codex 0.169's output for a call it never finished, sent on resume
SCENARIOS = Path(__file__).resolve().parents[2] / "orchestrator" / "scenarios"
# Recorded: the request of `codex exec resume` (0.169) after the rung-0 Codex was stopped just as the
# re-issued write arrived (write-retry.toml). Its items after the first prompt, as sent, but for the
# resume's long permission and environment messages; the second call is the one the stop cut short.
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"
SAID = {"type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": "I will create hello.txt.", "annotations": []}]}  # fmt: skip
RECORDED_RESUME = [
    SAID | {"id": "msg_6af8e7782880"},
    {"type": "custom_tool_call", "id": "ctc_818ef35e5794", "status": "completed",
     "call_id": "call_3222423f02a8", "name": "apply_patch", "input": PATCH},
    {"type": "custom_tool_call_output", "id": "ctco_01a21717-3061-7213-bd8c-4067c66f4163",
     "call_id": "call_3222423f02a8", "output": CODEX_DENIED},
    SAID | {"id": "msg_09f81d438486"},
    {"type": "custom_tool_call", "id": "ctc_06a0029fb7f3", "status": "completed",
     "call_id": "call_dac80e242214", "name": "apply_patch", "input": PATCH},
    {"type": "custom_tool_call_output", "id": "ctco_230fb67a-4a7e-524f-8ce5-aba635acd4b7",
     "call_id": "call_dac80e242214", "output": CODEX_CUT_SHORT},
    {"type": "message", "id": "msg_01a21717-3821-78f3-81f4-b374338c5c5b", "role": "user",
     "content": [{"type": "input_text", "text": "make hello.txt"}]},
]  # fmt: skip


def claude_after(*results: tuple[str, bool], resumed: bool = False) -> dict[str, Any]:
    """A Claude request after one ``Write`` per result ``(text, is_error)``; ``resumed`` adds the new prompt."""
    body = claude_body()
    for n, (text, is_error) in enumerate(results):
        use = {"type": "tool_use", "id": f"toolu_{n}", "name": "Write", "input": {}}
        body["messages"].append({"role": "assistant", "content": [use]})
        result = {"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": text, "is_error": is_error}
        body["messages"].append({"role": "user", "content": [result]})
    if resumed:
        body["messages"].append({"role": "user", "content": [{"type": "text", "text": CONTINUE}]})
    return body


def codex_after(*outputs: str, resumed: bool = False) -> dict[str, Any]:
    """A Codex request after one ``apply_patch`` per output text; ``resumed`` adds the new prompt."""
    body = codex_body()
    for n, output in enumerate(outputs):
        call_id = f"call_{n}"
        body["input"].append(
            {"type": "custom_tool_call", "call_id": call_id, "name": "apply_patch", "input": "*"}
        )
        body["input"].append({"type": "custom_tool_call_output", "call_id": call_id, "output": output})
    if resumed:
        prompt = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": CONTINUE}]}
        body["input"].append(prompt)
    return body


def gemini_after(*responses: dict[str, str], resumed: bool = False) -> dict[str, Any]:
    """A Gemini request after one ``write_file`` per response; ``resumed`` adds the new prompt."""
    body = gemini_body()
    for n, response in enumerate(responses):
        function_call = {"functionCall": {"name": "write_file", "args": {}, "id": f"write_file_{n}"}}
        body["contents"].append({"role": "model", "parts": [function_call]})
        answer = {"functionResponse": {"name": "write_file", "response": response, "id": f"write_file_{n}"}}
        body["contents"].append({"role": "user", "parts": [answer]})
    if resumed:
        body["contents"].append({"role": "user", "parts": [{"text": CONTINUE}]})
    return body


def after(agent: str, failures: int, *, written: bool = False, resumed: bool = False) -> dict[str, Any]:
    """``agent``'s request after ``failures`` refused writes (then one that went through if ``written``)."""
    if agent == "claude":
        results = [(CLAUDE_DENIED, True)] * failures + [("File created", False)] * written
        return claude_after(*results, resumed=resumed)
    if agent == "codex":
        return codex_after(*[CODEX_DENIED] * failures, *[CODEX_WRITTEN] * written, resumed=resumed)
    return gemini_after(*[GEMINI_DENIED] * failures, *[GEMINI_WRITTEN] * written, resumed=resumed)


PATHS = {"claude": CLAUDE_PATH, "codex": CODEX_PATH, "gemini": GEMINI_STREAM}


def answers(server: ModelServer) -> list[tuple[str, int]]:
    """(answer kind, retry count) of every request the server logged."""
    return [(entry["answer"], entry.get("retry", 0)) for entry in server.log.entries()]


@pytest.mark.parametrize("agent", sorted(PATHS))
def test_a_failed_write_is_issued_again_then_the_script_goes_on(agent: str) -> None:
    """Denied, denied again after a resume, then written: the write is served 3 times, then "done"."""
    path = PATHS[agent]
    with serving(RETRY) as server:
        first = call(server.url, "POST", path, after(agent, 0))
        call(server.url, "POST", path, after(agent, 1))
        call(server.url, "POST", path, after(agent, 2, resumed=True))
        last = call(server.url, "POST", path, after(agent, 2, written=True))
        state = call(server.url, "GET", "/_scenario/state").json()
    expected = [("tool:write", 0), ("tool:write", 1), ("tool:write", 2), ("text", 0)]
    assert expected == answers(server)
    assert (first.status, last.status, state["done"]) == (200, 200, True)


@pytest.mark.parametrize("agent", sorted(PATHS))
def test_the_retry_budget_is_a_ceiling(agent: str) -> None:
    """``retry_failed = 2``: a third failure in a row gets the next turn, not a fourth write."""
    with serving(RETRY) as server:
        for failures in range(4):
            call(server.url, "POST", PATHS[agent], after(agent, failures))
    assert answers(server) == [("tool:write", 0), ("tool:write", 1), ("tool:write", 2), ("text", 0)]


def test_the_request_log_says_whether_the_latest_tool_result_failed() -> None:
    """``tool_error`` is logged for requests that carry a tool result, true for a failure."""
    with serving(RETRY) as server:
        call(server.url, "POST", CODEX_PATH, codex_body())
        call(server.url, "POST", CODEX_PATH, codex_after(CODEX_DENIED, resumed=True))
        call(server.url, "POST", CODEX_PATH, codex_after(CODEX_DENIED, CODEX_WRITTEN))
        log = call(server.url, "GET", "/_scenario/requests").json()["requests"]
    assert [entry.get("tool_error") for entry in log] == [None, True, False]
    assert [entry.get("tool_result") for entry in log] == [None, None, CODEX_WRITTEN]


def test_without_retry_failed_a_failure_moves_on() -> None:
    """A tool-call turn without the modifier is served once, whatever the CLI reports."""
    toml = '[[turn]]\nwrite = { path = "a", content = "" }\n[[turn]]\ntext = "done"\n'
    with serving(toml) as server:
        call(server.url, "POST", CLAUDE_PATH, claude_body())
        call(server.url, "POST", CLAUDE_PATH, claude_after((CLAUDE_DENIED, True)))
    assert answers(server) == [("tool:write", 0), ("text", 0)]


def test_a_success_disarms_an_exhausted_script() -> None:
    """After a successful call a later failure is not answered by the old write: no turn is left."""
    toml = '[[turn]]\nwrite = { path = "a", content = "" }\nretry_failed = 3\n'
    with serving(toml) as server:
        call(server.url, "POST", GEMINI_STREAM, gemini_body())
        call(server.url, "POST", GEMINI_STREAM, gemini_after(GEMINI_WRITTEN))
        call(server.url, "POST", GEMINI_STREAM, gemini_after(GEMINI_WRITTEN, GEMINI_DENIED))
    assert answers(server) == [("tool:write", 0), ("no_turn", 0), ("no_turn", 0)]


def test_the_retried_call_is_a_real_tool_call_with_a_new_id() -> None:
    """The re-issued Claude ``Write`` is a full ``tool_use`` block, with an id of its own."""
    resumed = claude_after((CLAUDE_DENIED, True), resumed=True) | {"stream": False}
    with serving(RETRY) as server:
        first = call(server.url, "POST", CLAUDE_PATH, claude_body(stream=False)).json()
        again = call(server.url, "POST", CLAUDE_PATH, resumed).json()
    one, two = (next(b for b in m["content"] if b["type"] == "tool_use") for m in (first, again))
    assert (two["name"], two["input"]) == (one["name"], one["input"])
    assert (two["name"], two["input"]["file_path"]) == ("Write", "/workspace/hello.txt")
    assert one["id"] != two["id"]


@pytest.mark.parametrize(
    ("text", "failed"),
    [
        (CODEX_DENIED, True),
        (CODEX_WRITTEN, False),
        (
            "Chunk ID: 7a0165\nProcess exited with code 1\nOutput:\n/bin/bash: hello.txt: Read-only file system\n",
            True,
        ),
        ("Chunk ID: 485d08\nProcess exited with code 0\nOutput:\nfailed tests: none\n", False),
        ("approval policy is Never; reject command — you cannot ask for escalated permissions", True),
        ('exec_command failed: CreateProcess { message: "Rejected(...)" }', True),
        ("Exit code: 2\nOutput:\nbwrap: No permissions to create a new namespace", True),
        ("Success. Updated the following files:\nA hello.txt", False),
        ("", False),
        (CODEX_CUT_SHORT, True),
        ("Aborted\n", True),
        ("Process exited with code 0\nOutput:\nretry aborted, then succeeded\n", False),
        ("Process exited with code 130\nOutput:\n", True),
        ("unaborted abortedly", False),
        ("\x00\ufffd{]\\ aborted? \u202e", True),
        ("\x00\ufffd{]\\ garbage \u202e", False),
    ],
)
def test_codex_tool_outputs_are_read_as_failed_or_not(text: str, failed: bool) -> None:
    """A stated exit code decides; without one, rejected/denied/blocked/failed/aborted mean a failure."""
    assert failed == output_failed(text)


@pytest.mark.parametrize(
    ("family", "body", "expected"),
    [
        ("anthropic", claude_body(), None),
        ("anthropic", claude_after(("ok", False), (CLAUDE_DENIED, True), resumed=True), True),
        ("anthropic", claude_after((CLAUDE_DENIED, True), ("File created", False)), False),
        ("openai", codex_after(CODEX_DENIED, resumed=True), True),
        ("openai", codex_after(CODEX_WRITTEN), False),
        ("gemini", gemini_after(GEMINI_DENIED, resumed=True), True),
        ("gemini", gemini_after({"output": "Command: false\nExit Code: 1"}), True),
        ("gemini", gemini_after(GEMINI_WRITTEN), False),
        ("gemini", gemini_body(), None),
    ],
)
def test_the_latest_tool_result_of_the_whole_conversation_decides(
    family: str, body: dict[str, Any], expected: bool | None
) -> None:
    """``tool_error`` is None without a tool result, else whether the latest one (anywhere) failed."""
    assert expected == Incoming.of(family, "m", body).tool_error  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[[turn]]\ntext = "x"\nretry_failed = 2\n', "'retry_failed' re-issues a tool call"),
        ('[[turn]]\nshell = "ls"\nretry_failed = -1\n', "'retry_failed' must be an integer >= 0"),
        ('[[turn]]\nshell = "ls"\nretry_failed = true\n', "'retry_failed' must be an integer >= 0"),
        ("[[turn]]\nerror = 429\nretry_failed = 1\n", "'retry_failed' re-issues a tool call"),
        ('[[turn]]\nshell = "ls"\nretry_delay = 1\n', "'retry_delay' is the wait before a re-issue"),
        ('[[turn]]\nshell = "ls"\nretry_failed = 1\nretry_delay = -1\n', "'retry_delay' must be a number"),
    ],
)
def test_bad_retry_failed_values_are_refused(toml: str, expected: str) -> None:
    """``retry_failed`` needs a tool call in its turn and a count >= 0; ``retry_delay`` needs it."""
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(toml, source="bad.toml")
    assert "scenario bad.toml: top-level turns, turn 1: " in str(caught.value)
    assert expected in str(caught.value)


@given(st.lists(st.sampled_from([None, True, False]), max_size=12), st.integers(0, 4))
def test_retries_never_exceed_the_budget_and_a_success_moves_on(
    outcomes: list[bool | None], budget: int
) -> None:
    """For any sequence of what the CLI reports on the call (True: failed, False: succeeded, None: no
    new result, as from a resumed CLI that left a call cut short out): while the budget lasts, a
    failure or a missing result gets the write again; a success, or a spent budget, moves on for good."""
    toml = f'[[turn]]\nwrite = {{ path = "a", content = "" }}\nretry_failed = {budget}\n[[turn]]\ntext = "done"\nrepeat = "forever"\n'
    state = ScenarioState(parse_scenario(toml))
    body = codex_body()
    first = state.pick(Incoming.of("openai", "m", body))
    armed, used = budget > 0, 0
    served, expected = [], []
    for n, outcome in enumerate(outcomes):
        if outcome is not None:
            body["input"] += [
                {"type": "custom_tool_call", "call_id": f"call_{n}", "name": "apply_patch", "input": "*"},
                {"type": "custom_tool_call_output", "call_id": f"call_{n}",
                 "output": CODEX_DENIED if outcome else CODEX_WRITTEN},
            ]  # fmt: skip
        pick = state.pick(Incoming.of("openai", "m", body))
        served.append((pick.turn.kind, pick.retry) if pick else None)
        if armed and outcome is not False and used < budget:
            used += 1
            expected.append(("tool:write", used))
        else:
            armed = False
            expected.append(("text", 0))
    assert first is not None and first.turn.kind == "tool:write"
    assert served == expected


def test_retry_delay_is_read_and_spares_the_first_answer() -> None:
    """``retry_delay`` is kept on the turn; the first answer of the turn is not delayed by it."""
    toml = '[[turn]]\nwrite = { path = "a", content = "" }\nretry_failed = 1\nretry_delay = 120\n'
    (turn,) = parse_scenario(toml).scripts[0].turns
    with serving(toml) as server:
        first = call(server.url, "POST", CODEX_PATH, codex_body(), timeout=30)
    assert (turn.retry_failed, turn.retry_delay, first.status) == (1, 120.0, 200)


def test_the_recorded_resume_after_a_call_cut_short_reports_a_failure() -> None:
    """Codex's ``aborted`` for the interrupted call is the latest tool result: a failure, not a success."""
    body = codex_body()
    body["input"] += RECORDED_RESUME
    incoming = Incoming.of("openai", "m", body)
    assert (incoming.tool_error, incoming.tool_result) == (True, None)


def test_a_resumed_codex_whose_call_was_cut_short_gets_the_write_again() -> None:
    """Written, refused, re-issued, cut short by the stop, resumed: the write again, not "done"."""
    resumed = codex_body()
    resumed["input"] += RECORDED_RESUME
    with serving(RETRY) as server:
        call(server.url, "POST", CODEX_PATH, codex_body())
        call(server.url, "POST", CODEX_PATH, codex_after(CODEX_DENIED))
        again = call(server.url, "POST", CODEX_PATH, resumed)
        log = call(server.url, "GET", "/_scenario/requests").json()["requests"]
    assert answers(server) == [("tool:write", 0), ("tool:write", 1), ("tool:write", 2)]
    assert (again.status, log[-1]["tool_error"]) == (200, True)


def test_the_demo_codex_writer_gets_its_write_again_after_a_call_cut_short() -> None:
    """The demo's t2 script, as the demo meets it: rung 0 refused, the re-issue cut short by the stop,
    rung 1 resumed (write again), rung 1 refused, rung 2 resumed (write again), written, then the
    closing text."""
    demo = load_scenario(SCENARIOS / "demo.toml")
    state = ScenarioState(demo)
    prompt = "Create greeting.py with a function greet(name) that returns 'hello, <name>'."

    def request(*outputs: str, resumed: bool = False) -> Incoming:
        body = codex_body(prompt)
        for n, output in enumerate(outputs):
            body["input"] += [
                {"type": "custom_tool_call", "call_id": f"call_{n}", "name": "apply_patch", "input": "*"},
                {"type": "custom_tool_call_output", "call_id": f"call_{n}", "output": output},
            ]
        if resumed:
            body["input"].append(
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]}
            )
        return Incoming.of("openai", "m", body)

    rung1_refused = (
        "Exit code: 1\nWall time: 0 seconds\nOutput:\nFailed to write file /workspace/greeting.py\n"
    )
    conversation = [
        request(),
        request(CODEX_DENIED),
        request(CODEX_DENIED, CODEX_CUT_SHORT, resumed=True),
        request(CODEX_DENIED, CODEX_CUT_SHORT, rung1_refused, resumed=True),
        request(CODEX_DENIED, CODEX_CUT_SHORT, rung1_refused, CODEX_WRITTEN),
    ]
    picks = [state.pick(r) for r in conversation]
    served = [(p.script.name, p.turn.kind, p.retry) if p else None for p in picks]
    t2 = "t2-codex-greeting"
    assert served == [(t2, "tool:write", 0), (t2, "tool:write", 1), (t2, "tool:write", 2),
                      (t2, "tool:write", 3), (t2, "text", 0)]  # fmt: skip


GARBAGE_OUTPUTS = [
    None,
    7,
    True,
    {"unexpected": "aborted"},
    [],
    ["aborted", 3, None],
    [{"type": "input_text", "text": CODEX_CUT_SHORT}],
    [{"type": "input_image", "image_url": "data:,"}],
    "\x00" * 3,
    "x" * 100_000,
]


@pytest.mark.parametrize("output", GARBAGE_OUTPUTS)
def test_garbage_tool_outputs_never_break_the_reading(output: Any) -> None:
    """Whatever a ``*_call_output`` carries, ``tool_error`` is a bool and ``tool_result`` at most 500
    characters; a content list is read for its text (``aborted`` there is a failure too)."""
    body = codex_body()
    body["input"] += [
        {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": output},
    ]
    incoming = Incoming.of("openai", "m", body)
    assert isinstance(incoming.tool_error, bool)
    assert incoming.tool_result is not None and len(incoming.tool_result) <= 500
    if output == [{"type": "input_text", "text": CODEX_CUT_SHORT}]:
        assert incoming.tool_error is True


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ("aborted", None),  # a bare string is the user's text
        ([{"type": 5, "output": "aborted"}], None),
        ([{"output": "aborted"}], None),  # no type: a message, not an output
        ([{"type": "custom_tool_call_output"}], False),  # an output without text reports nothing
        ([{"type": "custom_tool_call_output", "output": "aborted"}], True),
        (["aborted", None, 3], None),
    ],
)
def test_garbage_input_items_never_break_the_reading(items: Any, expected: bool | None) -> None:
    """An ``input`` that is no list of items, or items without a type or output, is read without error."""
    assert expected == Incoming.of("openai", "m", {"model": "m", "input": items}).tool_error


@given(st.text(max_size=200))
def test_aborted_is_a_failure_whatever_text_precedes_it_without_an_exit_code(prefix: str) -> None:
    """Text that states no exit code and says ``aborted`` as a word is read as a failure."""
    assume("exit" not in prefix.lower())
    assert output_failed(f"{prefix} aborted")
