"""The knobs of the recovery policy (``RecoveryPolicy``) and the pure backoff formula.

Defaults are POLICIES.md §2: 4 containers per worker, rate-limit backoff 30 s x 2^n with jitter
capped at 15 min and at most 5 times, 2 resumes after crashes, one resume after a stall of 600 s,
one memory raise x1.5 up to the cap.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Final

from pydantic import ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import ConfigError
from orchestrator.models.common import AgentName, Model
from orchestrator.recovery.ladder import TOP_RUNG

if TYPE_CHECKING:
    from orchestrator.config import Settings

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*", re.IGNORECASE)
_UNIT: Final = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
GIB: Final = 1024**3
# 2**64 times any base already exceeds every sensible cap; larger exponents would overflow a float.
_MAX_EXPONENT: Final = 64


def parse_size(value: str, setting: str) -> int:
    """Bytes of a Docker-style size (``512m``, ``2g``, ``1.5g``, ``1048576``); units are binary.

    Raises ``ConfigError`` naming ``setting`` when the value is not such a size or is zero.
    """
    match = _SIZE.fullmatch(value)
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            f"{setting}={value!r} is not a memory size; write a positive number with an optional "
            "unit b, k, m or g, e.g. 512m or 4g"
        )
    return int(float(match.group(1)) * _UNIT[match.group(2).lower()])


class RecoveryPolicy(Model):
    """Frozen, validated knobs of ``PermissionRecoveryEngine``. Build with ``from_settings``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    claude_max_rung: int = Field(
        default=TOP_RUNG, ge=0, le=TOP_RUNG, description="ceiling of claude's ladder"
    )
    codex_max_rung: int = Field(default=TOP_RUNG, ge=0, le=TOP_RUNG, description="ceiling of codex's ladder")
    gemini_max_rung: int = Field(
        default=TOP_RUNG, ge=0, le=TOP_RUNG, description="ceiling of gemini's ladder"
    )
    writer_start_rung: int = Field(default=0, ge=0, le=TOP_RUNG, description="rung a write task starts on")
    max_attempts: int = Field(default=4, ge=1, description="containers per worker, the first included")
    backoff_base_s: float = Field(default=30.0, ge=0, description="first rate-limit backoff")
    backoff_cap_s: float = Field(default=900.0, ge=0, description="longest rate-limit backoff")
    backoff_jitter: float = Field(default=0.1, ge=0, le=1, description="up to this fraction is added")
    max_backoffs: int = Field(default=5, ge=0, description="rate-limit restarts per worker")
    max_restarts: int = Field(default=2, ge=0, description="resumes after crashes and API failures")
    max_stall_resumes: int = Field(default=1, ge=0, description="resumes after a stall")
    max_memory_raises: int = Field(default=1, ge=0, description="memory raises after an OOM kill")
    stall_timeout_s: float = Field(default=600.0, gt=0, description="no output for this long = stalled")
    memory_factor: float = Field(default=1.5, gt=1.0, description="memory raise after an OOM kill")
    memory_cap_bytes: int = Field(default=4 * GIB, gt=0, description="the most memory a raise gives")
    default_memory_bytes: int = Field(default=2 * GIB, gt=0, description="memory of a worker by default")

    @model_validator(mode="after")
    def _consistent(self) -> RecoveryPolicy:
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError(
                f"backoff cap {self.backoff_cap_s} s is below the first backoff {self.backoff_base_s} s; "
                "raise ORCH_RECOVERY__BACKOFF_CAP_S or lower ORCH_RECOVERY__BACKOFF_BASE_S"
            )
        return self

    @classmethod
    def from_settings(cls, settings: Settings) -> RecoveryPolicy:
        """The policy of ``settings.recovery``, the agents' ``max_rung`` and ``limits.memory``."""
        knobs = settings.recovery
        try:
            return cls(
                claude_max_rung=settings.claude.max_rung,
                codex_max_rung=settings.codex.max_rung,
                gemini_max_rung=settings.gemini.max_rung,
                writer_start_rung=knobs.writer_start_rung,
                max_attempts=knobs.max_attempts,
                backoff_base_s=knobs.backoff_base_s,
                backoff_cap_s=knobs.backoff_cap_s,
                max_backoffs=knobs.max_backoffs,
                max_restarts=knobs.max_restarts,
                stall_timeout_s=knobs.stall_timeout_s,
                memory_factor=knobs.memory_factor,
                memory_cap_bytes=parse_size(knobs.memory_cap, "ORCH_RECOVERY__MEMORY_CAP"),
                default_memory_bytes=parse_size(settings.limits.memory, "ORCH_LIMITS__MEMORY"),
            )
        except ValidationError as err:
            problems = "; ".join(e["msg"] for e in err.errors())
            raise ConfigError(
                f"the recovery settings (ORCH_RECOVERY__*) do not fit together: {problems}"
            ) from err

    def ceiling(self, agent: AgentName | str) -> int:
        """The highest rung ``agent`` may reach."""
        found: int = getattr(self, f"{AgentName(agent).value}_max_rung")
        return found

    def start_rung(self, agent: AgentName | str, *, is_writer: bool) -> int:
        """The rung a task's first container runs on: 0 when read-only, else the writer rung (capped)."""
        return min(self.writer_start_rung, self.ceiling(agent)) if is_writer else 0


def backoff_delay(n: int, retry_after: float | None, policy: RecoveryPolicy, rand: float) -> float:
    """Seconds to wait before the rate-limit restart that follows ``n`` earlier backoffs.

    ``min(cap, max(retry_after, base x 2^n x (1 + jitter x rand)))``: the jitter only lengthens the
    wait, so the result is never below the server's ``Retry-After`` nor below ``base x 2^n`` (unless
    the cap is). A missing, negative or non-finite ``retry_after`` counts as none. ``rand`` is a
    uniform draw in [0, 1] supplied by the caller, which keeps this function pure.
    """
    if n < 0:
        raise ValueError(f"n={n} backoffs: the count of earlier backoffs cannot be negative")
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand={rand!r} must be a uniform draw in [0, 1]")
    exponential = policy.backoff_base_s * 2.0 ** min(n, _MAX_EXPONENT)
    jittered = exponential * (1.0 + policy.backoff_jitter * rand)
    floor = retry_after if retry_after is not None and math.isfinite(retry_after) and retry_after > 0 else 0.0
    return min(policy.backoff_cap_s, max(floor, jittered))
