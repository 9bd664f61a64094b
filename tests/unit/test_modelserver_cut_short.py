"""A tool call cut short by a stop, as each resumed CLI sends it, is issued again (``retry_failed``).

Recorded with the real CLIs (``tests/integration/test_modelserver_interrupted_call.py``): the
scenario runs a quick step (``echo ready``), then a step that blocks; the CLI is stopped inside the
blocking call and its session resumed with the same prompt. The resumed request, as sent (items
after the first prompt; long system texts left out):

- Codex 0.169 (``codex exec resume``) sends the call with the output ``aborted``: a failed result.
- Claude Code 2.1.197 (``claude --resume``) drops the ``tool_use`` it had logged: only the text said
  with the call remains, the latest tool result is the quick step's success.
- Gemini CLI 0.61 (``gemini --resume``) never logged the ``functionCall`` (it logs a call once it has
  finished): only the text remains, and the quick step's ``functionResponse`` comes twice (same id).

So for Claude and Gemini no result for the cut call comes back at all; a request carrying no tool
result that the request answered with the call did not carry counts as a failure (``unanswered``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from orchestrator.modelserver.incoming import Family, Incoming
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

# a call that never ends the first time it runs (shared with the other half of these tests)
SCENARIO = (
    Path(__file__).resolve().parents[1] / "fixtures" / "scenarios" / "interrupted-call.toml"
).read_text()
PROMPT = "run the step"
BLOCKING = "if [ -e started ]; then echo finished; else touch started; sleep 120; fi"
FAMILY: dict[str, Family] = {"claude": "anthropic", "codex": "openai", "gemini": "gemini"}
PATHS = {"claude": CLAUDE_PATH, "codex": CODEX_PATH, "gemini": GEMINI_STREAM}

# Claude Code 2.1.197, the request of `claude --resume` (messages after the first prompt).
CLAUDE_READY: list[dict[str, Any]] = [
    {"role": "assistant", "content": [
        {"type": "text", "text": "Checking first."},
        {"type": "tool_use", "id": "toolu_3122a8b4c4ea", "name": "Bash",
         "input": {"command": "echo ready", "description": "Run the scripted command"}}]},
    {"role": "user", "content": [
        {"tool_use_id": "toolu_3122a8b4c4ea", "type": "tool_result", "content": "ready", "is_error": False}]},
]  # fmt: skip
CLAUDE_RESUMED: list[dict[str, Any]] = [
    *CLAUDE_READY,
    {"role": "assistant", "content": [{"type": "text", "text": "Running the step."}]},
    {"role": "user", "content": [{"type": "text", "text": PROMPT, "cache_control": {"type": "ephemeral"}}]},
]
# Gemini CLI 0.61, the request of `gemini --resume` (contents after the first prompt).
GEMINI_OUTPUT = {"output": "<untrusted_context>\nOutput: ready\nProcess Group PGID: 19\n</untrusted_context>"}
GEMINI_RESPONSE = {
    "functionResponse": {
        "name": "run_shell_command",
        "response": GEMINI_OUTPUT,
        "id": "run_shell_command_1795687648897_0",
    }
}
GEMINI_CALL = {
    "functionCall": {"id": "run_shell_command_1795687648897_0", "name": "run_shell_command",
                     "args": {"command": "echo ready", "description": "Run the scripted command"}}
}  # fmt: skip
GEMINI_READY: list[dict[str, Any]] = [
    {"role": "model", "parts": [{"text": "Checking first."}, GEMINI_CALL]},
    {"role": "user", "parts": [GEMINI_RESPONSE]},
]
GEMINI_RESUMED: list[dict[str, Any]] = [
    {"role": "model", "parts": [{"text": "Checking first."}, GEMINI_CALL]},
    {"role": "user", "parts": [GEMINI_RESPONSE, GEMINI_RESPONSE]},
    {"role": "model", "parts": [{"text": "Running the step."}]},
    {"role": "user", "parts": [{"text": PROMPT}]},
]
# Codex 0.169, the request of `codex exec resume` (input items after the first prompt).
CODEX_OUTPUT = "Chunk ID: a116b9\nWall time: 0.0000 seconds\nProcess exited with code 0\nOriginal token count: 2\nOutput:\nready\n"
CODEX_READY: list[dict[str, Any]] = [
    {"type": "message", "status": "completed", "id": "msg_5f880f852532", "role": "assistant",
     "content": [{"type": "output_text", "text": "Checking first.", "annotations": []}]},
    {"type": "function_call", "status": "completed", "id": "fc_8f18972309ea", "name": "exec_command",
     "arguments": '{"cmd": "echo ready"}', "call_id": "call_a51442cad1b5"},
    {"type": "function_call_output", "id": "fco_01a21754-0277-75d3-a2aa-abaa5a8bcb2c",
     "call_id": "call_a51442cad1b5", "output": CODEX_OUTPUT},
]  # fmt: skip
CODEX_RESUMED: list[dict[str, Any]] = [
    *CODEX_READY,
    {"type": "message", "status": "completed", "id": "msg_78662cfece28", "role": "assistant",
     "content": [{"type": "output_text", "text": "Running the step.", "annotations": []}]},
    {"type": "function_call", "status": "completed", "id": "fc_2eeaf7378ad6", "name": "exec_command",
     "arguments": '{"cmd": "' + BLOCKING + '"}', "call_id": "call_ed7c96172f5c"},
    {"type": "function_call_output", "id": "fco_369df7ce-c3f6-576d-b822-6d658332b0bd",
     "call_id": "call_ed7c96172f5c", "output": "aborted"},
    {"type": "message", "id": "msg_01a21754-057f-7390-aaca-b0cda484dd29", "role": "user",
     "content": [{"type": "input_text", "text": PROMPT}]},
]  # fmt: skip
READY: dict[str, list[dict[str, Any]]] = {
    "claude": CLAUDE_READY,
    "codex": CODEX_READY,
    "gemini": GEMINI_READY,
}
RESUMED: dict[str, list[dict[str, Any]]] = {
    "claude": CLAUDE_RESUMED,
    "codex": CODEX_RESUMED,
    "gemini": GEMINI_RESUMED,
}


def request(agent: str, *items: dict[str, Any]) -> dict[str, Any]:
    """``agent``'s request: the first prompt, then ``items`` (messages, input items or contents)."""
    if agent == "claude":
        body = claude_body(PROMPT)
        body["messages"] += copy.deepcopy(list(items))
    elif agent == "codex":
        body = codex_body(PROMPT)
        body["input"] += copy.deepcopy(list(items))
    else:
        body = gemini_body(PROMPT)
        body["contents"] += copy.deepcopy(list(items))
    return body


def finished(agent: str) -> list[dict[str, Any]]:
    """The re-issued blocking call and its result ``finished``, in ``agent``'s shape."""
    if agent == "claude":
        use = {"type": "tool_use", "id": "toolu_again", "name": "Bash", "input": {"command": BLOCKING}}
        result = {
            "type": "tool_result",
            "tool_use_id": "toolu_again",
            "content": "finished",
            "is_error": False,
        }
        return [{"role": "assistant", "content": [use]}, {"role": "user", "content": [result]}]
    if agent == "codex":
        output = "Chunk ID: 2e48c0\nProcess exited with code 0\nOutput:\nfinished\n"
        return [
            {"type": "function_call", "name": "exec_command", "arguments": "{}", "call_id": "call_again"},
            {"type": "function_call_output", "call_id": "call_again", "output": output},
        ]
    response = {"name": "run_shell_command", "response": {"output": "Output: finished"}, "id": "again"}
    return [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "run_shell_command", "args": {}, "id": "again"}}],
        },
        {"role": "user", "parts": [{"functionResponse": response}]},
    ]


@pytest.mark.parametrize(
    ("agent", "latest_failed", "results"),
    [
        ("claude", False, {"toolu_3122a8b4c4ea"}),
        ("gemini", False, {"run_shell_command_1795687648897_0"}),
        ("codex", True, {"call_a51442cad1b5", "call_ed7c96172f5c"}),
    ],
)
def test_what_each_resumed_cli_sends_for_a_call_cut_short(
    agent: str, latest_failed: bool, results: set[str]
) -> None:
    """Claude and Gemini leave the call out (their latest result is the earlier success); Codex sends it
    with ``aborted``, a failure."""
    body = request(agent, *RESUMED[agent])
    incoming = Incoming.of(FAMILY[agent], "m", body)
    conversation = str(body.get("messages") or body.get("input") or body.get("contents"))
    assert (incoming.tool_error, set(incoming.result_ids)) == (latest_failed, results)
    assert ("touch started" in conversation) == (agent == "codex")


@pytest.mark.parametrize("agent", sorted(PATHS))
def test_a_call_cut_short_is_issued_again_to_each_resumed_cli(agent: str) -> None:
    """Step done, blocking call served, stopped, resumed: the blocking call again, then "done" once it
    finished. For Claude and Gemini the re-issue is logged ``unanswered``."""
    ready = request(agent, *READY[agent])
    resumed = request(agent, *RESUMED[agent])
    done = request(agent, *RESUMED[agent], *finished(agent))
    with serving(SCENARIO) as server:
        replies = [
            call(server.url, "POST", PATHS[agent], body) for body in (request(agent), ready, resumed, done)
        ]
        log = call(server.url, "GET", "/_scenario/requests").json()["requests"]
    served = [(e["turn"], e["answer"], e.get("retry"), e.get("unanswered")) for e in log]
    cut_short = None if agent == "codex" else True
    assert served == [(1, "tool:shell", None, None), (2, "tool:shell", None, None),
                      (2, "tool:shell", 1, cut_short), (3, "text", None, None)]  # fmt: skip
    assert [r.status for r in replies] == [200] * 4
    assert log[2].get("tool_error") is (agent == "codex")


@pytest.mark.parametrize("agent", ["claude", "gemini"])
def test_a_first_call_cut_short_leaves_no_result_at_all_and_is_issued_again(agent: str) -> None:
    """Cut short before any call finished, the resumed Claude or Gemini conversation holds the prompt,
    the text said with the call and the prompt again (recorded): no tool result, the call again."""
    blocking_first = SCENARIO[SCENARIO.index('[[turn]]\ntext = "Running') :]
    said = (
        {"role": "assistant", "content": [{"type": "text", "text": "Running the step."}]}
        if agent == "claude"
        else {"role": "model", "parts": [{"text": "Running the step."}]}
    )
    again = (
        {"role": "user", "content": [{"type": "text", "text": PROMPT}]}
        if agent == "claude"
        else {"role": "user", "parts": [{"text": PROMPT}]}
    )
    resumed = request(agent, said, again)
    with serving(blocking_first) as server:
        call(server.url, "POST", PATHS[agent], request(agent))
        call(server.url, "POST", PATHS[agent], resumed)
        log = call(server.url, "GET", "/_scenario/requests").json()["requests"]
    assert Incoming.of(FAMILY[agent], "m", resumed).tool_error is None
    assert [(e["turn"], e["answer"], e.get("retry"), e.get("unanswered")) for e in log] == [
        (1, "tool:shell", None, None),
        (1, "tool:shell", 1, True),
    ]


def test_an_older_result_sent_again_is_no_answer() -> None:
    """Gemini repeats the quick step's response on resume: two results, one id, nothing new, so the
    cut call counts as failed although the latest result is a success (a count would be fooled)."""
    with serving(SCENARIO) as server:
        for items in ([], GEMINI_READY, GEMINI_RESUMED):
            call(server.url, "POST", GEMINI_STREAM, request("gemini", *items))
        log = call(server.url, "GET", "/_scenario/requests").json()["requests"]
    assert [(e["turn"], e.get("tool_error"), e.get("retry")) for e in log] == [
        (1, None, None),
        (2, False, None),
        (2, False, 1),
    ]


@pytest.mark.parametrize(
    ("family", "body", "expected"),
    [
        ("anthropic", {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, {"#0"}),
        (
            "anthropic",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": 7},
                            {"type": "tool_result", "tool_use_id": ""},
                            {"type": "tool_result", "tool_use_id": "toolu_1"},
                        ],
                    }
                ]
            },
            {"#0", "#1", "toolu_1"},
        ),  # fmt: skip
        ("openai", {"input": [{"type": "function_call_output", "output": "ok"}]}, {"#0"}),
        ("openai", {"input": "just text"}, set()),
        ("gemini", {"contents": [{"role": "user", "parts": [{"functionResponse": {"id": None}}]}]}, {"#0"}),
        ("gemini", {"contents": [{"parts": [{"functionResponse": "x"}]}]}, set()),
    ],
)
def test_results_without_a_usable_id_are_known_by_their_position(
    family: Family, body: dict[str, Any], expected: set[str]
) -> None:
    """A result whose id is missing, empty or not a string is named ``#n`` (its place among the results)."""
    assert set(Incoming.of(family, "m", body).result_ids) == expected
