"""The recovery knobs (``RecoveryPolicy``), the backoff formula and the permission ladders."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.models.common import AgentName
from orchestrator.recovery import LADDERS, TOP_RUNG, RecoveryPolicy, backoff_delay, parse_size, rung_flags

GIB = 1024**3
POLICY = RecoveryPolicy()


def test_defaults_are_the_documented_policy() -> None:
    """The defaults are POLICIES.md §2: 4 containers, 30 s..900 s backoff x5, 2 resumes, 600 s stall."""
    expected = (4, 30.0, 900.0, 5, 2, 600.0, 1.5, 4 * GIB)
    actual = (
        POLICY.max_attempts,
        POLICY.backoff_base_s,
        POLICY.backoff_cap_s,
        POLICY.max_backoffs,
        POLICY.max_restarts,
        POLICY.stall_timeout_s,
        POLICY.memory_factor,
        POLICY.memory_cap_bytes,
    )
    assert expected == actual


def test_policy_is_frozen() -> None:
    """A policy cannot be changed once built: the engine's knobs stay what was recorded."""
    with pytest.raises(ValidationError):
        POLICY.max_attempts = 9  # type: ignore[misc]


def test_from_settings_reads_recovery_limits_and_ceilings(settings: Settings) -> None:
    """``from_settings`` takes the recovery knobs, each agent's max_rung and the memory limit."""
    settings.recovery.max_attempts = 3
    settings.recovery.memory_cap = "6g"
    settings.limits.memory = "512m"
    settings.codex.max_rung = 1
    policy = RecoveryPolicy.from_settings(settings)
    expected = (3, 6 * GIB, 512 * 1024**2, 1, 2)
    actual = (
        policy.max_attempts,
        policy.memory_cap_bytes,
        policy.default_memory_bytes,
        policy.ceiling("codex"),
        policy.ceiling(AgentName.CLAUDE),
    )
    assert expected == actual


def test_from_settings_refuses_a_cap_below_the_base(settings: Settings) -> None:
    """A backoff cap below the first backoff is a configuration error naming both settings."""
    settings.recovery.backoff_cap_s = 10.0
    with pytest.raises(ConfigError) as caught:
        RecoveryPolicy.from_settings(settings)
    assert "ORCH_RECOVERY__BACKOFF_CAP_S" in str(caught.value)
    assert "ORCH_RECOVERY__BACKOFF_BASE_S" in str(caught.value)


@pytest.mark.parametrize("garbage", ["", "lots", "-1g", "0", "4 gigabytes", "1e9", "4t", "\x00"])
def test_garbage_memory_size_is_a_config_error(settings: Settings, garbage: str) -> None:
    """A memory setting that is not a size fails with the setting's name and an example fix."""
    settings.recovery.memory_cap = garbage
    with pytest.raises(ConfigError) as caught:
        RecoveryPolicy.from_settings(settings)
    assert "ORCH_RECOVERY__MEMORY_CAP" in str(caught.value)
    assert "e.g. 512m or 4g" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4g", 4 * GIB),
        ("512m", 512 * 1024**2),
        ("1.5G", int(1.5 * GIB)),
        ("64k", 65536),
        ("100", 100),
        ("2gb", 2 * GIB),
    ],
)
def test_parse_size_reads_docker_sizes(text: str, expected: int) -> None:
    """Sizes are Docker's: binary units b/k/m/g, case-insensitive, an optional trailing b."""
    assert expected == parse_size(text, "X")


@pytest.mark.parametrize(
    ("agent", "is_writer", "writer_rung", "ceiling", "expected"),
    [
        ("claude", False, 1, 2, 0),
        ("claude", True, 1, 2, 1),
        ("codex", True, 2, 1, 1),
        ("gemini", True, 0, 2, 0),
    ],
)
def test_start_rung(agent: str, is_writer: bool, writer_rung: int, ceiling: int, expected: int) -> None:
    """A read-only task starts on rung 0; a writer on the writer rung, never above its ceiling."""
    policy = RecoveryPolicy(writer_start_rung=writer_rung, **{f"{agent}_max_rung": ceiling})
    assert expected == policy.start_rung(agent, is_writer=is_writer)


@pytest.mark.parametrize(
    ("n", "retry_after", "rand", "expected"),
    [
        (0, None, 0.0, 30.0),  # base
        (1, None, 0.0, 60.0),  # base x 2^n
        (3, None, 0.0, 240.0),
        (0, 45.0, 0.0, 45.0),  # Retry-After above the exponential wins
        (2, 45.0, 0.0, 120.0),  # the exponential above Retry-After wins
        (0, None, 1.0, 33.0),  # jitter adds up to 10 %
        (5, None, 0.0, 900.0),  # 960 s capped at 15 min
        (0, 3600.0, 0.0, 900.0),  # the cap bounds Retry-After too
        (10_000, None, 0.5, 900.0),  # huge counts do not overflow
        (0, -5.0, 0.0, 30.0),  # a negative Retry-After counts as none
        (0, math.nan, 0.0, 30.0),  # so does NaN
        (0, math.inf, 0.0, 30.0),  # and infinity
    ],
)
def test_backoff_delay_table(n: int, retry_after: float | None, rand: float, expected: float) -> None:
    """``min(cap, max(Retry-After, 30 s x 2^n x (1 + 0.1 x rand)))``."""
    assert expected == pytest.approx(backoff_delay(n, retry_after, POLICY, rand))


@pytest.mark.parametrize(("n", "rand"), [(-1, 0.5), (0, -0.1), (0, 1.5), (0, math.nan)])
def test_backoff_delay_refuses_bad_arguments(n: int, rand: float) -> None:
    """A negative count or a draw outside [0, 1] is a programming error, reported with the value."""
    with pytest.raises(ValueError, match=r"must be|cannot be negative"):
        backoff_delay(n, None, POLICY, rand)


@given(
    n=st.integers(min_value=0, max_value=2000),
    retry_after=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    rand=st.floats(min_value=0.0, max_value=1.0),
)
def test_backoff_delay_is_bounded_and_honours_retry_after(
    n: int, retry_after: float | None, rand: float
) -> None:
    """For all inputs the wait is at most the cap and at least min(cap, max(Retry-After, base x 2^n))."""
    delay = backoff_delay(n, retry_after, POLICY, rand)
    usable = (
        retry_after if retry_after is not None and math.isfinite(retry_after) and retry_after > 0 else 0.0
    )
    floor = min(POLICY.backoff_cap_s, max(usable, POLICY.backoff_base_s * 2.0 ** min(n, 64)))
    assert floor <= delay <= POLICY.backoff_cap_s


@pytest.mark.parametrize(
    ("agent", "rung", "expected"),
    [
        ("claude", 0, []),
        ("claude", 1, ["--permission-mode", "acceptEdits"]),
        ("claude", 2, ["--permission-mode", "bypassPermissions"]),
        ("gemini", 0, []),
        ("gemini", 1, ["--approval-mode", "auto_edit"]),
        ("gemini", 2, ["--approval-mode", "yolo"]),
        ("codex", 0, ["--sandbox", "read-only"]),
        ("codex", 1, ["--sandbox", "workspace-write"]),
        ("codex", 2, ["--dangerously-bypass-approvals-and-sandbox"]),
    ],
)
def test_ladders(agent: str, rung: int, expected: list[str]) -> None:
    """The permission ladders of POLICIES.md §2, narrowest first."""
    assert expected == rung_flags(agent, rung)


def test_every_ladder_has_the_same_height() -> None:
    """Every agent's ladder has rungs 0..TOP_RUNG, so one ceiling setting means the same for all."""
    assert {TOP_RUNG + 1} == {len(ladder) for ladder in LADDERS.values()}


@pytest.mark.parametrize(("agent", "rung"), [("claude", 3), ("codex", -1), ("cursor", 0), ("", 1)])
def test_rung_flags_refuses_unknown_rungs_and_agents(agent: str, rung: int) -> None:
    """An unknown agent or rung is an error naming what exists."""
    with pytest.raises(ValueError, match=r"rungs are 0\.\.2|agents are claude, codex, gemini"):
        rung_flags(agent, rung)
