"""Settings from the environment, the error tree, and redaction."""

from __future__ import annotations

import json

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator import errors
from orchestrator.config import Settings
from orchestrator.log import MASK, Redactor


def test_settings_read_nested_orch_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ORCH_`` variables, nested with ``__``, configure every part."""
    monkeypatch.setenv("ORCH_MAX_PARALLEL", "2")
    monkeypatch.setenv("ORCH_CLAUDE__BASE_URL", "http://gateway:8080")
    monkeypatch.setenv("ORCH_CLAUDE__API_KEY", "sk-ant-test-value-123456")
    monkeypatch.setenv("ORCH_RECOVERY__MAX_ATTEMPTS", "3")
    settings = Settings()
    assert (settings.max_parallel, settings.claude.base_url, settings.recovery.max_attempts) == (
        2, "http://gateway:8080", 3)  # fmt: skip
    assert "sk-ant-test-value-123456" not in repr(settings)
    assert settings.secret_values() == ["sk-ant-test-value-123456"]


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("ORCH_MAX_PARALLEL", "0", "max_parallel"),
        ("ORCH_MAX_PARALLEL", "many", "max_parallel"),
        ("ORCH_RUNTIME", "podman", "runtime"),
        ("ORCH_RECOVERY__MAX_ATTEMPTS", "-1", "max_attempts"),
    ],  # fmt: skip
)
def test_bad_settings_are_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    """A bad value in the environment fails at start with the field's name."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_every_field_of_the_settings_is_described() -> None:
    """The configuration table in the README comes from these descriptions: none may be missing."""
    undocumented = [name for name, info in Settings.model_fields.items() if not info.description]
    assert undocumented == []


@pytest.mark.parametrize(
    ("error", "exit_code", "status"),
    [
        (errors.UsageError("x"), 2, 400),
        (errors.UnsafeMount("/etc", "denied path"), 2, 400),
        (errors.SessionNotFound("x"), 2, 404),
        (errors.SessionLocked("x"), 2, 409),
        (errors.CredentialsMissing("x"), 5, 503),
        (errors.DockerUnavailable("x"), 5, 503),
        (errors.SessionStopped("x"), 3, 409),
        (errors.SessionPausedExit("x"), 4, 409),
        (errors.SessionFailed("x"), 1, 500),
        (errors.StoreFull("x"), 1, 507),
    ],  # fmt: skip
)
def test_each_error_maps_to_an_exit_code_and_an_http_status(
    error: errors.OrchestratorError, exit_code: int, status: int
) -> None:
    """FLOW.md's exit codes and API_SPEC.md's statuses come from the error's class."""
    assert (error.exit_code, error.http_status) == (exit_code, status)
    assert error.to_body()["error"]["message"] == error.message


def test_unsafe_mount_names_the_path_and_the_rule() -> None:
    """The refusal says which path and which rule."""
    err = errors.UnsafeMount("/home/me/.ssh", "a denied path (~/.ssh)")
    assert str(err) == "refused to mount '/home/me/.ssh': a denied path (~/.ssh)"


@pytest.mark.parametrize(
    "secret",
    [
        "sk-ant-api03-AbCdEf0123456789",
        "sk-proj-abcdefghijklmnop1234",
        "AIzaSyA-1234567890abcdefghijklmnopqrstu",
        "Bearer abcdefghijklmnopqrstuvwxyz",
    ],  # fmt: skip
)
def test_common_key_shapes_are_redacted(secret: str) -> None:
    """Anthropic, OpenAI and Google key shapes and bearer tokens are masked without registration."""
    assert secret not in Redactor()(f"token={secret} end")


def test_registered_values_are_redacted_in_logs_too(capsys: pytest.CaptureFixture[str]) -> None:
    """The same redaction runs on structured log lines."""
    from orchestrator.log import REDACTOR, configure_logging

    REDACTOR.register("plain-secret-987")
    configure_logging("info", json=True)
    try:
        structlog.get_logger("t").info("hello", detail={"key": "plain-secret-987"})
    finally:
        structlog.reset_defaults()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["detail"]["key"] == MASK


_KEYS = [
    "sk-ant-api03-abcdefgh",
    "sk-proj-0123456789abcdefXYZ",
    "AIza" + "B" * 32,
    "BeArEr abcdefghij0123456789",
]


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.one_of(st.text(max_size=30), st.sampled_from([*_KEYS, "hunter2-pw", "sk-", "bearer x"]))
    ),
)
def test_the_quick_secret_check_never_misses_what_redaction_would_replace(parts: list[str]) -> None:
    """``finds`` is False only when redacting changes nothing: it may skip the regex, never a secret."""
    redactor = Redactor(["hunter2-pw"])
    text = "".join(parts)
    assert redactor.finds(text) == (redactor(text) != text)
