"""The ``orchestrate`` command line: garbage arguments get a clear error and FLOW.md's exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.main import main


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as ended:
        main(argv)
    code = ended.value.code
    return code if isinstance(code, int) else 1


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ORCH_CLAUDE__API_KEY", "ORCH_CODEX__API_KEY", "ORCH_GEMINI__API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ORCH_WORKSPACE", str(tmp_path / "ws"))


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "x", "--agents", "copilot"], "unknown agent"),
        (["run", "x", "--agents", ",,,"], "--agents"),
        (["run", "x", "--on-pause", "explode"], "--on-pause"),
        (["resume", "../etc"], "invalid session id"),
        (["resume", "a" * 100], "invalid session id"),
        (["show", "nosuchsession"], "no session"),
        (["logs", "nosuchsession"], "no session"),
        (["decide", "nosuchsession", "continue"], "no session"),
    ],
)
def test_garbage_arguments_exit_2_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage errors never start anything: exit 2 and a message naming the bad value."""
    assert _run(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["run", "x", "--max-parallel", "0"], ["run"], ["nosuchcommand", "--flag"]])
def test_typer_rejects_malformed_options_with_exit_2(argv: list[str]) -> None:
    """Out-of-range numbers and missing arguments are usage errors too."""
    assert _run(argv) == 2


def test_missing_credentials_exit_5_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A needed agent without a key or login folder: exit 5 naming the variable; no session folder."""
    code = _run(["run", "do it", "--repo", str(_repo(tmp_path)), "--agents", "codex"])
    assert code == 5
    assert "ORCH_CODEX__API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").iterdir())


def test_a_bare_prompt_is_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`orchestrate "prompt"` is `orchestrate run "prompt"`, as the seed shows."""
    assert _run(["do it", "--repo", str(_repo(tmp_path))]) == 5
    assert "no credentials" in capsys.readouterr().err


def test_config_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    """The configuration table names each variable with its meaning."""
    assert _run(["config", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "`ORCH_WORKSPACE`" in out and "`ORCH_CLAUDE__BASE_URL`" in out


def test_logs_prints_each_output_line_of_old_and_new_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``orchestrate logs``: an ``output_lines`` event prints one line per output line, as ``output`` did."""
    from orchestrator.models import Output, OutputLines
    from orchestrator.paths import SessionPaths
    from orchestrator.store import EventWriter

    with EventWriter.open(SessionPaths.of(tmp_path / "ws", "logs0001")) as writer:
        writer.emit("codex-t1", Output(stream="stdout", line="old style"), "t1")
        writer.emit("codex-t1", OutputLines(stream="stderr", lines=["first", "second"]), "t1")
    assert _run(["logs", "logs0001"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "     1 codex-t1 [stdout] old style",
        "     2 codex-t1 [stderr] first",
        "       codex-t1 [stderr] second",
    ]
