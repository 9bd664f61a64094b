"""``orchestrate parse --agent A STDOUT [--stderr F] [--transcript F] [--exit-code N] [--raw]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.main import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """Exit code, the JSON lines printed and stderr of ``orchestrate parse ARGS``."""
    with pytest.raises(SystemExit) as exited:
        main(["parse", *args])
    out, err = capsys.readouterr()
    code = exited.value.code if isinstance(exited.value.code, int) else 0
    return code, [json.loads(line) for line in out.splitlines()], err


def test_prints_normalised_events(capsys: pytest.CaptureFixture[str]) -> None:
    """One {"type", "data"} JSON line per event, in stream order, exit 0."""
    name = "claude-2.1.197-write-default-denied"
    code, events, _ = run(
        capsys, "--agent", "claude", str(FIXTURES / f"{name}.stdout.jsonl"),
        "--stderr", str(FIXTURES / f"{name}.stderr.txt"), "--exit-code", "0",
    )  # fmt: skip
    assert code == 0
    assert [e["type"] for e in events] == [
        "cli_session", "message", "tool_call", "tool_result", "permission_denied", "message", "usage", "agent_result",
    ]  # fmt: skip
    assert events[4]["data"] == {
        "tool": "Write",
        "detail": "Claude requested permissions to write to <WORK>/hello.txt, but you haven't granted it yet.",
        "by_policy": False,
    }


def test_transcript_option_reads_the_codex_rollout(capsys: pytest.CaptureFixture[str]) -> None:
    """--transcript adds what only Codex's rollout file shows (a sandbox-blocked shell write)."""
    name = "codex-0.169.0-shellwrite-default-denied"
    _, events, _ = run(
        capsys, "--agent", "codex", str(FIXTURES / f"{name}.stdout.jsonl"),
        "--transcript", str(FIXTURES / f"{name}.rollout.jsonl"),
    )  # fmt: skip
    assert [e["data"]["tool"] for e in events if e["type"] == "permission_denied"] == ["exec_command"]


def test_without_exit_code_the_run_is_taken_as_stopped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No --exit-code: an output without a final result ends in a failed result ('was stopped')."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _, events, _ = run(capsys, "--agent", "gemini", str(empty))
    assert events == [
        {"type": "agent_result", "data": {"ok": False, "text": "gemini was stopped without a final result",
                                          "subtype": "no_result", "duration_ms": None, "structured": None}}
    ]  # fmt: skip


def test_raw_keeps_lines_that_yield_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--raw prints a line that yields no event as an ``output`` event, as the store keeps it."""
    stdout = tmp_path / "out.txt"
    stdout.write_text('{"type":"turn.started"}\nnot json at all\n')
    _, events, _ = run(capsys, "--agent", "codex", str(stdout), "--raw", "--exit-code", "1")
    assert [(e["type"], e["data"].get("line")) for e in events] == [
        ("output", '{"type":"turn.started"}'),
        ("output", "not json at all"),
        ("agent_result", None),
    ]


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_garbage_file_is_not_a_crash(capsys: pytest.CaptureFixture[str], tmp_path: Path, agent: str) -> None:
    """Binary garbage and torn JSON parse to (almost) nothing, exit 0."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b'\x00\xff\xfe{"type":"result",\n\x89PNG\r\n\x1a\n' + bytes(range(256)))
    code, events, _ = run(
        capsys, "--agent", agent, str(garbage), "--stderr", str(garbage), "--exit-code", "0"
    )
    assert (code, [e["type"] for e in events]) == (0, ["agent_result"])


def test_missing_file_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A missing file exits 2 and names the path."""
    code, events, err = run(capsys, "--agent", "claude", str(tmp_path / "nope.jsonl"))
    assert (code, events) == (2, [])
    assert "nope.jsonl" in err
    assert "is not a readable file" in err


def test_missing_stderr_file_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A missing --stderr file is refused before anything is printed."""
    stdout = FIXTURES / "claude-2.1.197-write-acceptEdits.stdout.jsonl"
    code, events, err = run(capsys, "--agent", "claude", str(stdout), "--stderr", str(tmp_path / "gone.txt"))
    assert (code, events) == (2, [])
    assert "stderr file" in err


def test_unknown_agent_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown agent exits 2 and lists the agents."""
    code, events, err = run(capsys, "--agent", "gpt", str(FIXTURES / "README.md"))
    assert (code, events) == (2, [])
    assert "unknown agent 'gpt': the agents are claude, codex, gemini" in err
