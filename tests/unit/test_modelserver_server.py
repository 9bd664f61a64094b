"""Routing, script matching, the request log and the control endpoints of the model server."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import ConfigError
from orchestrator.main import main as orchestrate
from orchestrator.modelserver import ModelServer, parse_scenario
from orchestrator.modelserver.incoming import Incoming
from tests.unit.test_modelserver_client import (
    CLAUDE_PATH,
    CODEX_PATH,
    GEMINI_PLAIN,
    GEMINI_STREAM,
    call,
    claude_body,
    codex_body,
    gemini_body,
    serving,
)

ROOT = Path(__file__).resolve().parents[2]
MULTI = """
[[script]]
name = "reviewer"
agent = "claude"
prompt = "You are reviewing"
[[script.turn]]
text = "approve"
repeat = "forever"

[[script]]
name = "worker-a"
agent = "claude"
prompt = "task A"
[[script.turn]]
text = "a1"
[[script.turn]]
text = "a2"

[[script]]
name = "codex-dev"
agent = "codex"
system = "You are Codex"
[[script.turn]]
text = "c1"

[[turn]]
text = "fallback"
"""


def text_of(events: list[tuple[str | None, Any]]) -> str:
    """The streamed text of an Anthropic or OpenAI answer."""
    out = []
    for name, event in events:
        if name == "content_block_delta":
            out.append(event["delta"].get("text", ""))
        elif name == "response.output_text.delta":
            out.append(event["delta"])
    return "".join(out)


def test_requests_go_to_the_first_matching_script_with_turns_left() -> None:
    """Agent, prompt and system matchers pick the script; used-up scripts fall through to later ones."""
    with serving(MULTI) as server:
        answers = [
            text_of(call(server.url, "POST", CLAUDE_PATH, claude_body(prompt=p)).events)
            for p in (
                "do task A",
                "You are reviewing task A",
                "do task A",
                "do task A",
                "You are reviewing x",
            )
        ]
        codex = [text_of(call(server.url, "POST", CODEX_PATH, codex_body()).events) for _ in range(2)]
    assert answers == ["a1", "approve", "a2", "fallback", "approve"]
    assert [codex[0], "no turn" if codex[1] == "" else codex[1]] == ["c1", "no turn"]


def test_no_turn_left_is_a_clear_vendor_shaped_400() -> None:
    """Once every matching script is used up, the request gets a 400 that says so, and is logged."""
    with serving('[[turn]]\ntext = "once"\n') as server:
        call(server.url, "POST", CODEX_PATH, codex_body())
        response = call(server.url, "POST", CODEX_PATH, codex_body())
        log = call(server.url, "GET", "/_scenario/requests").json()["requests"]
    assert response.status == 400
    assert response.json()["error"]["message"].startswith(
        "modelserver: no scenario turn left for this codex request"
    )
    assert [e["answer"] for e in log] == ["text", "no_turn"]


def test_state_shows_positions_and_reset_starts_over() -> None:
    """/_scenario/state reports each script's next turn; POST /_scenario/reset rewinds and clears the log."""
    with serving(MULTI) as server:
        call(server.url, "POST", CLAUDE_PATH, claude_body(prompt="task A"))
        state = call(server.url, "GET", "/_scenario/state").json()
        reset = call(server.url, "POST", "/_scenario/reset")
        after = call(server.url, "GET", "/_scenario/state").json()
        again = text_of(call(server.url, "POST", CLAUDE_PATH, claude_body(prompt="task A")).events)
    worker = next(s for s in state["scripts"] if s["name"] == "worker-a")
    assert (worker["next_turn"], worker["turns"], worker["done"], state["requests"]) == (2, 2, False, 1)
    assert (reset.status, after["requests"], again) == (200, 0, "a1")


def test_request_log_records_each_request_with_a_body_digest_and_tool_result(tmp_path: Path) -> None:
    """Every request is logged with family, turn, status and sha256; --log also keeps masked headers and body."""
    body = claude_body()
    body["messages"].append(
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Write", "input": {}}]}
    )
    body["messages"].append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "File created"}]}
    )
    full_log = tmp_path / "requests.jsonl"
    with serving('[[turn]]\ntext = "done"\n', log_path=full_log) as server:
        raw = json.dumps(body).encode()
        call(server.url, "POST", CLAUDE_PATH, raw, headers={"x-api-key": "sk-ant-secret-value"})
        entries = call(server.url, "GET", "/_scenario/requests").json()["requests"]
    (entry,) = entries
    expected = {
        "seq": 1,
        "method": "POST",
        "path": "/v1/messages",
        "family": "anthropic",
        "model": "claude-opus-4-8",
        "stream": True,
        "script": "main",
        "turn": 1,
        "attempt": 1,
        "answer": "text",
        "status": 200,
        "tool_result": "File created",
        "body_sha256": hashlib.sha256(raw).hexdigest(),
        "body_bytes": len(raw),
    }
    assert expected == {k: entry[k] for k in expected}
    (record,) = [json.loads(line) for line in full_log.read_text().splitlines()]
    assert (body, "<masked>") == (record["body"], record["headers"]["x-api-key"])


def test_gemini_side_requests_are_answered_without_using_a_turn() -> None:
    """A classifier request (generateContent asking for JSON) gets the side answer; the turn stays."""
    side = gemini_body(generationConfig={"responseMimeType": "application/json", "responseJsonSchema": {}})
    with serving('[[turn]]\ntext = "main answer"\n') as server:
        first = call(server.url, "POST", "/v1beta/models/gemini-3.5-flash-lite:generateContent", side).json()
        main = call(server.url, "POST", GEMINI_STREAM, gemini_body())
    decision = json.loads(first["candidates"][0]["content"]["parts"][0]["text"])
    assert (decision["next_speaker"], decision["complexity_score"]) == ("user", 1)
    assert main.events[-1][1]["candidates"][0]["content"]["parts"][0]["text"] == "main answer"


def test_side_requests_can_be_scripted() -> None:
    """``auto_side_requests = false`` routes classifier requests through the scenario like any other."""
    side = gemini_body(generationConfig={"responseMimeType": "application/json"})
    with serving("auto_side_requests = false\n[[turn]]\nerror = 503\n") as server:
        response = call(server.url, "POST", GEMINI_PLAIN, side)
    assert (response.status, response.json()["error"]["status"]) == (503, "UNAVAILABLE")


@pytest.mark.parametrize(
    ("method", "path", "status", "answer"),
    [
        ("HEAD", "/", 200, "probe"),
        ("GET", "/", 200, "probe"),
        ("POST", "/v2/chat", 404, "not_found"),
        ("GET", "/v1/messages", 404, "not_found"),
        ("DELETE", "/_scenario/state", 404, "not_found"),
        ("POST", "/v1beta/models/m:streamGenerateContent", 400, "bad_request"),
        ("POST", "/v1/messages/count_tokens", 200, "count_tokens"),
        ("POST", "/responses", 200, "text"),
        ("POST", "/v1beta/models/m:countTokens", 200, "count_tokens"),
    ],
)
def test_routes(method: str, path: str, status: int, answer: str) -> None:
    """Probes answer 200, unknown routes a logged 404 naming the known ones, token counts a number."""
    with serving('[[turn]]\ntext = "x"\n') as server:
        response = call(server.url, method, path, {} if method == "POST" else None)
        log = call(server.url, "GET", "/_scenario/requests").json()["requests"]
    assert (status, answer) == (response.status, log[-1]["answer"])
    if status == 404:
        assert "known routes: HEAD /" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (CLAUDE_PATH, b"{not json", "not JSON"),
        (CODEX_PATH, b"[1, 2]", "must be a JSON object"),
        (GEMINI_STREAM, b"\xff\xfe", "not JSON"),
        (CLAUDE_PATH, b"", "not JSON"),
    ],
)
def test_garbage_bodies_get_a_clear_400(path: str, body: bytes, expected: str) -> None:
    """A body that is not a JSON object is refused with a vendor-shaped 400 naming the problem."""
    with serving('[[turn]]\ntext = "x"\n') as server:
        response = call(server.url, "POST", path, body)
        state = call(server.url, "GET", "/_scenario/state").json()
    assert response.status == 400
    assert expected in json.dumps(response.json())
    assert state["scripts"][0]["next_turn"] == 1


def test_odd_but_valid_bodies_are_answered() -> None:
    """Missing or mistyped optional fields (no messages, a string system, null tools) never crash the server."""
    bodies = [
        {},
        {"messages": "x", "system": 5, "tools": None},
        {"messages": [None, {"role": "user", "content": 3}]},
    ]
    with serving('[[turn]]\ntext = "ok"\nrepeat = "forever"\n') as server:
        statuses = [call(server.url, "POST", CLAUDE_PATH, b).status for b in bodies]
        codex = call(server.url, "POST", CODEX_PATH, {"input": "plain string", "tools": [1, "x"]}).status
        gemini = call(server.url, "POST", GEMINI_STREAM, {"contents": {"role": "user"}}).status
    assert [*statuses, codex, gemini] == [200, 200, 200, 200, 200]


def test_keep_alive_connection_serves_several_requests() -> None:
    """Streams end with a terminating chunk, so one connection carries the whole conversation (as in the CLIs)."""
    with serving('[[turn]]\ntext = "one"\n[[turn]]\ntext = "two"\n') as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        first = call(server.url, "POST", CODEX_PATH, codex_body(), connection=conn)
        second = call(server.url, "POST", CODEX_PATH, codex_body(), connection=conn)
        conn.close()
    assert [text_of(first.events), text_of(second.events)] == ["one", "two"]


def test_chunked_and_gzip_request_bodies_are_read() -> None:
    """Request bodies sent chunked or gzip-encoded are decoded before matching."""
    with serving(
        '[[script]]\nprompt = "zipped"\n[[script.turn]]\ntext = "z"\n[[turn]]\ntext = "c"\n'
    ) as server:
        zipped = gzip.compress(json.dumps(claude_body(prompt="zipped")).encode())
        z = call(server.url, "POST", CLAUDE_PATH, zipped, headers={"Content-Encoding": "gzip"})
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        chunks = iter([json.dumps(claude_body(prompt="plain")).encode()])
        conn.request(
            "POST",
            CLAUDE_PATH,
            body=chunks,
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        c = conn.getresponse().read()
        conn.close()
    assert (text_of(z.events), b'"text": "c"' in c) == ("z", True)


def test_concurrent_agents_each_get_their_own_script() -> None:
    """Claude and Codex requests in parallel threads are answered from their own scripts."""
    results: dict[str, str] = {}
    with serving(MULTI) as server:

        def ask(name: str, path: str, body: dict[str, Any]) -> None:
            results[name] = text_of(call(server.url, "POST", path, body).events)

        threads = [
            threading.Thread(target=ask, args=("claude", CLAUDE_PATH, claude_body(prompt="task A"))),
            threading.Thread(target=ask, args=("codex", CODEX_PATH, codex_body())),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert results == {"claude": "a1", "codex": "c1"}


def test_python_m_entry_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """``python3 -m orchestrator.modelserver`` logs its URL as JSON, serves, and exits 0 on SIGTERM."""
    scenario = tmp_path / "s.toml"
    scenario.write_text('[[turn]]\ntext = "hi"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "orchestrator.modelserver", "--scenario", str(scenario), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stderr is not None
            started = json.loads(proc.stderr.readline())
            response = call(started["url"], "POST", CODEX_PATH, codex_body())
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10)
        finally:
            proc.kill()
    assert (
        started["event"],
        response.status,
        text_of(response.events),
        code,
    ) == ("modelserver.listening", 200, "hi", 0)


@pytest.mark.parametrize(
    ("content", "args", "expected"),
    [
        ("[[turn]\ntext = 1", [], "not valid TOML"),
        ('[[turn]]\ntxt = "x"\n', [], "turn 1: unknown key 'txt'"),
        ('[[turn]]\ntext = "x"\n', ["--port", "70000"], "not a port number"),
    ],
)
def test_python_m_entry_refuses_bad_input_with_exit_2(
    tmp_path: Path, content: str, args: list[str], expected: str
) -> None:
    """A bad scenario or port exits 2 with a message that names the problem."""
    scenario = tmp_path / "bad.toml"
    scenario.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.modelserver", "--scenario", str(scenario), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
        check=False,
    )
    assert (proc.returncode, expected in proc.stderr) == (2, True)


def test_orchestrate_modelserver_turns_a_bad_scenario_into_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``orchestrate modelserver`` reports a bad scenario as a ConfigError (exit 2) naming file and key."""
    scenario = tmp_path / "bad.toml"
    scenario.write_text('[[turn]]\nrepeat = "twice"\ntext = "x"\n')
    with pytest.raises(SystemExit) as exited:
        orchestrate(["modelserver", "--scenario", str(scenario), "--port", "0"])
    assert ConfigError.exit_code == exited.value.code
    err = capsys.readouterr().err
    assert "bad.toml: top-level turns, turn 1: 'repeat' must be an integer >= 1" in err
    assert "shipped scenarios: authfail, demo" in err


def test_orchestrate_modelserver_resolves_shipped_scenario_names() -> None:
    """A bare name means the shipped scenario file of that name."""
    from orchestrator.commands.modelserver import SCENARIOS, resolve_scenario

    assert (SCENARIOS / "write-hello.toml", Path("x/y.toml")) == (
        resolve_scenario("write-hello"),
        resolve_scenario("x/y.toml"),
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "messages",
        "system",
        "tools",
        "input",
        "instructions",
        "contents",
        "systemInstruction",
        "generationConfig",
        "stream",
        "model",
    ]
)


@given(
    family=st.sampled_from(["anthropic", "openai", "gemini"]), body=st.dictionaries(KEYS, JSON, max_size=6)
)
def test_any_json_object_body_is_read_without_error(family: str, body: dict[str, Any]) -> None:
    """Whatever JSON object a client sends, reading it for matching never raises."""
    request = Incoming.of(family, "m", body)  # type: ignore[arg-type]
    assert (request.family, isinstance(request.user_text, str)) == (family, True)


def test_closing_a_server_that_never_started_returns() -> None:
    """close() on a server whose serve loop never ran releases the port instead of waiting forever."""
    server = ModelServer(parse_scenario('[[turn]]\ntext = "x"\n'))
    server.close()
    assert server.stopping.is_set()
