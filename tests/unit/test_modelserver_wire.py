"""The model server speaks each API family the way the recorded CLIs consumed it.

Each test drives the server over real HTTP on 127.0.0.1 and compares the answer with the shapes
the scripted mock sent to claude-code 2.1.197, codex 0.169.0 and gemini 0.61.0 in the reference
transcripts (event order, tool names and argument shapes, usage fields, error bodies).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.modelserver.scenario import Usage
from orchestrator.modelserver.wire import Answer
from tests.unit.test_modelserver_client import (
    CLAUDE_PATH,
    CODEX_PATH,
    CWD,
    GEMINI_PLAIN,
    GEMINI_STREAM,
    Response,
    call,
    claude_body,
    codex_body,
    gemini_body,
    serving,
)

WRITE = '[[turn]]\ntext = "I will create hello.txt."\nwrite = { path = "hello.txt", content = "hello\\n" }\n'
SHELL = "[[turn]]\nshell = \"printf 'hello\\\\n' > hello.txt\"\n"


def ask(toml: str, family: str, **body: Any) -> Response:
    """One request of ``family`` to a fresh server answering from ``toml``."""
    with serving(toml) as server:
        if family == "claude":
            return call(server.url, "POST", CLAUDE_PATH, claude_body(**body))
        if family == "codex":
            return call(server.url, "POST", CODEX_PATH, codex_body(**body))
        return call(server.url, "POST", GEMINI_STREAM, gemini_body(**body))


def test_claude_write_stream_has_the_recorded_event_sequence() -> None:
    """A text + Write turn streams message_start, two blocks, message_delta(tool_use), message_stop."""
    response = ask(WRITE, "claude")
    expected = [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert expected == response.names
    assert [e["type"] for _, e in response.events] == expected
    start = response.events[0][1]["message"]
    assert {k: start[k] for k in ("role", "model", "content", "stop_reason")} == {
        "role": "assistant",
        "model": "claude-opus-4-8",
        "content": [],
        "stop_reason": None,
    }
    tool_start = response.events[4][1]["content_block"]
    assert (tool_start["type"], tool_start["name"], tool_start["input"]) == ("tool_use", "Write", {})
    tool_input = json.loads(response.events[5][1]["delta"]["partial_json"])
    assert {"file_path": f"{CWD}/hello.txt", "content": "hello\n"} == tool_input
    assert response.events[7][1]["delta"]["stop_reason"] == "tool_use"
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["request-id"].startswith("req_")


def test_codex_write_is_an_apply_patch_custom_tool_call() -> None:
    """Codex gets response.created, a message item with text deltas, a custom apply_patch call, completed."""
    response = ask(WRITE, "codex")
    assert response.names == [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.output_item.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    assert list(range(7)) == [e["sequence_number"] for _, e in response.events]
    call_item = response.events[4][1]["item"]
    assert {k: call_item[k] for k in ("type", "name", "input", "status")} == {
        "type": "custom_tool_call",
        "name": "apply_patch",
        "input": "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n",
        "status": "completed",
    }
    completed = response.events[-1][1]["response"]
    assert (completed["status"], len(completed["output"])) == ("completed", 2)
    assert {k: completed["usage"][k] for k in ("input_tokens", "output_tokens", "total_tokens")} == {
        "input_tokens": 10,
        "output_tokens": 20,
        "total_tokens": 30,
    }


def test_gemini_write_is_a_final_function_call_chunk() -> None:
    """Gemini gets a text chunk, then a write_file functionCall chunk with finishReason STOP and usage."""
    response = ask(WRITE, "gemini")
    assert response.names == [None, None]
    first, last = (e["candidates"][0] for _, e in response.events)
    assert "finishReason" not in first
    assert first["content"]["parts"] == [{"text": "I will create hello.txt."}]
    assert last["content"]["parts"] == [
        {"functionCall": {"name": "write_file", "args": {"file_path": "hello.txt", "content": "hello\n"}}}
    ]
    assert last["finishReason"] == "STOP"
    assert (response.events[-1][1]["usageMetadata"]) == {
        "promptTokenCount": 10,
        "candidatesTokenCount": 20,
        "cachedContentTokenCount": 0,
        "totalTokenCount": 30,
    }


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        (
            "claude",
            ("Bash", {"command": "printf 'hello\\n' > hello.txt", "description": "Run the scripted command"}),
        ),
        ("codex", ("exec_command", {"cmd": "printf 'hello\\n' > hello.txt"})),
        (
            "gemini",
            (
                "run_shell_command",
                {"command": "printf 'hello\\n' > hello.txt", "description": "Run the scripted command"},
            ),
        ),
    ],
)
def test_shell_turn_becomes_each_clis_shell_tool(family: str, expected: tuple[str, dict[str, Any]]) -> None:
    """A generic shell turn is rendered as Bash, exec_command or run_shell_command."""
    response = ask(SHELL, family)
    if family == "claude":
        block = response.events[1][1]["content_block"]
        actual = (block["name"], json.loads(response.events[2][1]["delta"]["partial_json"]))
    elif family == "codex":
        item = response.events[1][1]["item"]
        actual = (item["name"], json.loads(item["arguments"]))
    else:
        fc = response.events[-1][1]["candidates"][0]["content"]["parts"][0]["functionCall"]
        actual = (fc["name"], fc["args"])
    assert expected == actual


@pytest.mark.parametrize(
    ("tools", "expected_type", "expected_name"),
    [
        ([{"type": "function", "name": "exec_command"}], "function_call", "exec_command"),
        ([{"type": "function", "name": "shell"}], "function_call", "shell"),
        ([{"type": "local_shell"}], "local_shell_call", None),
    ],
)
def test_codex_shell_follows_the_declared_tool(
    tools: list[dict[str, Any]], expected_type: str, expected_name: str | None
) -> None:
    """The Codex shell call uses what the request declares: exec_command, a shell function or local_shell."""
    response = ask(SHELL, "codex", tools=tools)
    item = response.events[1][1]["item"]
    assert (expected_type, expected_name) == (item["type"], item.get("name"))


def test_codex_apply_patch_declared_as_function_gets_a_function_call() -> None:
    """When apply_patch is a JSON function (older Codex), the patch goes in its ``input`` argument."""
    response = ask(WRITE, "codex", tools=[{"type": "function", "name": "apply_patch"}])
    item = response.events[4][1]["item"]
    assert (item["type"], item["name"]) == ("function_call", "apply_patch")
    assert json.loads(item["arguments"])["input"].startswith("*** Begin Patch\n*** Add File: hello.txt\n")


JSON_TURN = '[[turn]]\njson = { goal = "g", tasks = [{ id = "t1", agent = "codex" }] }\n'


@pytest.mark.parametrize("family", ["claude", "codex", "gemini"])
def test_json_turn_streams_a_parseable_document(family: str) -> None:
    """A ``json`` turn is text whose concatenated deltas parse back to the scripted document."""
    response = ask(JSON_TURN, family)
    if family == "claude":
        text = "".join(e["delta"]["text"] for n, e in response.events if n == "content_block_delta")
    elif family == "codex":
        text = "".join(e["delta"] for n, e in response.events if n == "response.output_text.delta")
    else:
        text = "".join(p["text"] for _, e in response.events for p in e["candidates"][0]["content"]["parts"])
    assert json.loads(text) == {"goal": "g", "tasks": [{"id": "t1", "agent": "codex"}]}


def test_claude_json_schema_run_gets_the_structured_output_tool_call() -> None:
    """With a declared StructuredOutput tool (claude --json-schema), the document is that tool's input."""
    body = claude_body()
    body["tools"].append({"name": "StructuredOutput", "input_schema": {"type": "object"}})
    with serving(JSON_TURN) as server:
        response = call(server.url, "POST", CLAUDE_PATH, body)
    block = response.events[1][1]["content_block"]
    assert (block["type"], block["name"]) == ("tool_use", "StructuredOutput")
    assert json.loads(response.events[2][1]["delta"]["partial_json"]) == {
        "goal": "g",
        "tasks": [{"id": "t1", "agent": "codex"}],
    }
    assert response.events[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("family", "path"),
    [("claude", CLAUDE_PATH), ("codex", CODEX_PATH), ("gemini", GEMINI_PLAIN)],
)
def test_non_streaming_requests_get_one_json_document(family: str, path: str) -> None:
    """``stream: false`` (and Gemini's generateContent) get the whole answer as one JSON object."""
    bodies = {"claude": claude_body(stream=False), "codex": codex_body(stream=False), "gemini": gemini_body()}
    with serving(WRITE) as server:
        response = call(server.url, "POST", path, bodies[family])
    value = response.json()
    if family == "claude":
        assert (
            [b["type"] for b in value["content"]],
            value["stop_reason"],
        ) == (["text", "tool_use"], "tool_use")
    elif family == "codex":
        assert [i["type"] for i in value["output"]] == ["message", "custom_tool_call"]
    else:
        parts = value["candidates"][0]["content"]["parts"]
        assert [
            parts[0],
            parts[1]["functionCall"]["name"],
        ] == [{"text": "I will create hello.txt."}, "write_file"]


def test_usage_turn_key_sets_the_token_counts() -> None:
    """``usage`` overrides the default token counts in the final usage of the answer."""
    response = ask('[[turn]]\ntext = "ok"\nusage = { input = 9000, output = 60, cached = 8000 }\n', "codex")
    usage = response.events[-1][1]["response"]["usage"]
    assert (
        usage["input_tokens"],
        usage["input_tokens_details"]["cached_tokens"],
        usage["output_tokens"],
    ) == (9000, 8000, 60)


@given(text=st.text(min_size=1, max_size=300), chunks=st.none() | st.integers(min_value=1, max_value=20))
def test_text_pieces_always_concatenate_to_the_text(text: str, chunks: int | None) -> None:
    """For any text and chunk count the streamed deltas join back to the exact text, none empty."""
    pieces = Answer(text=text, data=None, tool=None, usage=Usage(), chunks=chunks).pieces(text)
    assert text == "".join(pieces)
    assert all(pieces)


def test_long_text_streams_in_three_deltas() -> None:
    """Text of 60+ characters is sent as 3 deltas, as the recorded multi-step and planner answers were."""
    response = ask(f'[[turn]]\ntext = "{"x" * 90}"\n', "claude")
    deltas = [e["delta"]["text"] for n, e in response.events if n == "content_block_delta"]
    assert deltas == ["x" * 30] * 3


def test_relative_write_path_uses_the_scenario_cwd_when_the_request_names_none() -> None:
    """Without a working directory in the request, Claude's Write path is joined to the scenario's ``cwd``."""
    toml = 'cwd = "/srv/repo"\n' + WRITE
    body = claude_body()
    body["system"] = "You are Claude."
    with serving(toml) as server:
        response = call(server.url, "POST", CLAUDE_PATH, body)
    assert json.loads(response.events[5][1]["delta"]["partial_json"])["file_path"] == "/srv/repo/hello.txt"
