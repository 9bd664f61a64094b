"""Error, hang and cut turns: the vendor error bodies and the broken streams the CLIs were tested with.

Bodies and headers follow what the recorded mock sent (transcripts README, "What the mock
answered"): Anthropic ``{"type": "error", "error": {type, message}, "request_id"}``, OpenAI
``{"error": {message, type, param, code}}``, Gemini ``{"error": {code, message, status, details}}``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.unit.test_modelserver_client import (
    CLAUDE_PATH,
    CODEX_PATH,
    GEMINI_STREAM,
    Response,
    call,
    claude_body,
    codex_body,
    gemini_body,
    serving,
)

REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "claude": (CLAUDE_PATH, claude_body()),
    "codex": (CODEX_PATH, codex_body()),
    "gemini": (GEMINI_STREAM, gemini_body()),
}


def ask(toml: str, family: str, times: int = 1) -> list[Response]:
    path, body = REQUESTS[family]
    with serving(toml) as server:
        return [call(server.url, "POST", path, body) for _ in range(times)]


def shape(family: str, body: dict[str, Any]) -> tuple[Any, ...]:
    """The fields a CLI classifies an API error by."""
    if family == "claude":
        return (body["type"], body["error"]["type"])
    if family == "codex":
        return (body["error"]["type"], body["error"]["code"])
    return (body["error"]["code"], body["error"]["status"])


@pytest.mark.parametrize(
    ("error", "family", "status", "expected"),
    [
        ('"rate_limit"', "claude", 429, ("error", "rate_limit_error")),
        ('"rate_limit"', "codex", 429, ("requests", "rate_limit_exceeded")),
        ('"rate_limit"', "gemini", 429, (429, "RESOURCE_EXHAUSTED")),
        ('"auth"', "claude", 401, ("error", "authentication_error")),
        ('"auth"', "codex", 401, ("invalid_request_error", "invalid_api_key")),
        ('"auth"', "gemini", 401, (401, "UNAUTHENTICATED")),
        ("500", "claude", 500, ("error", "api_error")),
        ("500", "codex", 500, ("server_error", None)),
        ("500", "gemini", 500, (500, "INTERNAL")),
        ('"overloaded"', "claude", 529, ("error", "overloaded_error")),
        ('"overloaded"', "codex", 503, ("server_error", None)),
        ('"overloaded"', "gemini", 503, (503, "UNAVAILABLE")),
        ("400", "gemini", 400, (400, "INVALID_ARGUMENT")),
        ("418", "claude", 418, ("error", "invalid_request_error")),
    ],
)
def test_error_turn_sends_the_vendor_error(
    error: str, family: str, status: int, expected: tuple[Any, ...]
) -> None:
    """Each error name or status becomes that vendor's status and error classification."""
    (response,) = ask(f"[[turn]]\nerror = {error}\n", family)
    assert (status, expected) == (response.status, shape(family, response.json()))


def test_rate_limit_headers_and_body_delays() -> None:
    """retry_after sets Retry-After; retry_after_body is the delay the body names (Codex text, Gemini RetryInfo)."""
    toml = '[[turn]]\nerror = { status = 429, retry_after = 1, retry_after_body = 6 }\nrepeat = "forever"\n'
    claude, codex, gemini = (ask(toml, family)[0] for family in ("claude", "codex", "gemini"))
    assert [r.headers["retry-after"] for r in (claude, codex, gemini)] == ["1", "1", "1"]
    assert "anthropic-ratelimit-requests-limit" in claude.headers
    assert claude.json()["request_id"] == claude.headers["request-id"]
    assert "Please try again in 6s." in codex.json()["error"]["message"]
    assert codex.headers["x-ratelimit-reset-requests"] == "6s"
    retry_info = [d for d in gemini.json()["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert retry_info == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "6s"}]


def test_error_without_retry_after_sends_no_header_and_a_custom_message() -> None:
    """No ``retry_after``: no Retry-After header; ``message`` replaces the vendor's default text."""
    (response,) = ask('[[turn]]\nerror = { status = 500, message = "boom" }\n', "codex")
    assert ("retry-after" in response.headers, response.json()["error"]["message"]) == (False, "boom")


@pytest.mark.parametrize("family", ["claude", "codex", "gemini"])
def test_rate_limited_twice_then_success(family: str) -> None:
    """``repeat = 2`` on a 429 turn: two 429s, then the next turn answers with 200."""
    toml = '[[turn]]\nerror = "rate_limit"\nrepeat = 2\n\n[[turn]]\ntext = "done"\n'
    assert [r.status for r in ask(toml, family, times=3)] == [429, 429, 200]


@pytest.mark.parametrize(
    ("family", "final_event"),
    [("claude", "message_stop"), ("codex", "response.completed"), ("gemini", None)],
)
def test_cut_abort_drops_the_socket_after_half_the_events(family: str, final_event: str | None) -> None:
    """``cut = "abort"``: half the events arrive, then the body ends without its terminating chunk."""
    toml = '[[turn]]\ntext = "I will."\nwrite = { path = "hello.txt", content = "hello\\n" }\ncut = "abort"\n'
    (response,) = ask(toml, family)
    full = {"claude": 9, "codex": 7, "gemini": 2}[family]
    assert (200, False, full // 2) == (response.status, response.complete, len(response.events))
    if final_event is not None:
        assert final_event not in response.names
    else:
        assert all("finishReason" not in e["candidates"][0] for _, e in response.events)


def test_cut_eof_ends_the_body_cleanly_without_the_final_event() -> None:
    """``cut = "eof"`` with ``cut_after = 2``: a complete chunked body holding only the first 2 events."""
    toml = '[[turn]]\ntext = "done"\ncut = "eof"\ncut_after = 2\n'
    (response,) = ask(toml, "codex")
    assert (response.complete, response.names) == (True, ["response.created", "response.output_item.added"])


def test_hang_with_seconds_answers_nothing_then_drops_the_connection() -> None:
    """``hang = 0.4``: no answer for 0.4 s, then the connection closes without a response."""
    with serving("[[turn]]\nhang = 0.4\n") as server:
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            call(server.url, "POST", CODEX_PATH, codex_body())
        elapsed = time.monotonic() - started
        log = call(server.url, "GET", "/_scenario/requests").json()["requests"]
    assert 0.4 <= elapsed < 3
    assert [(e["answer"], e["status"]) for e in log] == [("hang", None)]


def test_hang_forever_is_released_when_the_server_closes() -> None:
    """A ``hang = "forever"`` request stays open until the server stops, which drops it promptly."""
    outcome: list[BaseException] = []
    with serving('[[turn]]\nhang = "forever"\n') as server:

        def client() -> None:
            try:
                call(server.url, "POST", CLAUDE_PATH, claude_body(), timeout=30)
            except (ConnectionError, OSError) as err:
                outcome.append(err)

        thread = threading.Thread(target=client)
        thread.start()
        deadline = time.monotonic() + 5
        while (
            not call(server.url, "GET", "/_scenario/requests").json()["count"] and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert thread.is_alive()
        closed_at = time.monotonic()
    thread.join(timeout=5)
    assert (thread.is_alive(), len(outcome)) == (False, 1)
    assert time.monotonic() - closed_at < 5


def test_delay_postpones_the_answer() -> None:
    """``delay = 0.3`` answers normally, at least 0.3 s later."""
    started = time.monotonic()
    (response,) = ask('[[turn]]\ntext = "late"\ndelay = 0.3\n', "gemini")
    assert (response.status, time.monotonic() - started >= 0.3) == (200, True)
