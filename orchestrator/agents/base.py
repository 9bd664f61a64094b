"""The agent adapter role: build a CLI's headless command, parse its output into events.

One adapter per CLI (``claude``, ``codex``, ``gemini``) implements ``AgentAdapter``:

- ``build_command(task_prompt, rung, settings=..., ...) -> CommandSpec``: the argv of one run on
  rung ``rung`` of the agent's permission ladder (POLICIES.md §2), the environment, the credential
  (only ever in ``secrets``), the config files the CLI reads and the paths it must be able to write.
  ``build_structured_command(prompt, schema, ...)`` is the same for an answer that is one JSON object
  (planner, reviewers), using the CLI's own schema option where it has one.
- ``parser() -> StreamParser``: a fresh, per-run parser. ``parse_line(stream, line)`` turns one line
  of stdout or stderr into zero or more event payloads (``orchestrator.models.events``) and never
  raises. ``[]`` means "nothing to normalise": the caller keeps the raw line as an ``output`` event,
  so an unknown, new or malformed line is never lost and never a crash. ``parse_lines(stream, lines)``
  is the same for a batch, reading only the lines that can matter. ``finish(exit_code)`` gives
  the conclusions only the end of a run allows (a run without a final result is not ok, a cut stream,
  an exit code that names the failure). ``parse_transcript_line(line)`` reads the CLI's own session
  log (``CommandSpec.transcript_glob``), for what its stdout leaves out (Codex sandbox denials).

Adapters take data and return data; they read no environment and start nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from pydantic import Field, SecretStr, model_validator

from orchestrator.config import AgentSettings
from orchestrator.errors import ConfigError, CredentialsMissing, InvalidIdentifier, UsageError
from orchestrator.models.common import AgentName, Model
from orchestrator.models.events import EventData

Stream = Literal["stdout", "stderr"]

AGENT_HOME = "/home/agent"  # HOME of uid 1000 in the agent images (images/*/Dockerfile)
WORKDIR = "/workspace"  # the task's worktree in the container
TMP_DIR = "/tmp"
CONFIG_DIR = "/etc/orchestrator"  # read-only files the orchestrator writes for a run
TOP_RUNG = 2

_RESUME_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")
_MODEL = re.compile(r"[0-9A-Za-z][0-9A-Za-z._:/@\[\]-]{0,127}")
_MIN_SECRET = 6


class CommandSpec(Model):
    """One headless run of an agent CLI, declared; the runtime and the sandbox turn it into a container.

    - ``argv``: the whole command (the images have no entrypoint), one item per argument; never a secret.
    - ``env``: plain environment variables; ``secrets``: the credential variables (never logged).
    - ``files``: absolute in-container path -> content of the read-only config files the CLI reads
      (all under ``/etc``, outside the home and the state dirs, so a read-only bind mount is enough).
    - ``flags``: the permission flags of ``rung`` (recorded in ``worker_started.flags``).
    - ``writable_dirs``: must be writable for the run (a tmpfs is enough).
    - ``state_dirs``: must be writable and keep their content between the attempts of one worker,
      because resuming the CLI's session (``--resume`` / ``exec resume``) reads it from there.
    - ``login_dir``: where a login folder (``AgentSettings.login_dir``) goes when there is no API key.
    - ``transcript_glob``: where the CLI writes its own session log, for ``parse_transcript_line``.
    - stdin is always closed (``/dev/null``): Codex reads stdin to EOF before it starts.
    """

    agent: AgentName
    rung: int = Field(ge=0, le=TOP_RUNG)
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    files: dict[str, bytes] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list)
    writable_dirs: list[str] = Field(default_factory=list)
    state_dirs: list[str] = Field(default_factory=list)
    login_dir: str | None = None
    transcript_glob: str | None = None
    workdir: str = WORKDIR

    @model_validator(mode="after")
    def _no_secret_in_the_open(self) -> CommandSpec:
        values = [s.get_secret_value() for s in self.secrets.values()]
        exposed = [
            *self.argv,
            *self.env.values(),
            *self.flags,
            *(c.decode("utf-8", "replace") for c in self.files.values()),
        ]
        for secret in values:
            if len(secret) >= _MIN_SECRET and any(secret in text for text in exposed):
                raise ValueError(
                    "a credential appears in argv, env, flags or a file: it belongs in secrets only"
                )
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"variables {both} are both plain env and secrets")
        return self

    @property
    def environment(self) -> dict[str, str]:
        """The full environment, secrets included: for the runtime only, never log it."""
        return {**self.env, **{k: v.get_secret_value() for k, v in self.secrets.items()}}


class StreamParser(Protocol):
    """Per-run parser of one CLI's output. No method ever raises."""

    def parse_line(self, stream: Stream, line: str) -> list[EventData]:
        """Payloads for one line (without its newline); ``[]``: keep the raw line as ``output``."""
        ...

    def parse_lines(self, stream: Stream, lines: Sequence[str]) -> list[tuple[int, list[EventData]]]:
        """``(index, payloads)`` of every line of ``lines`` with payloads, in order.

        Exactly ``parse_line(stream, line)`` on each line in turn: the same payloads and the same
        parser state afterwards; the other lines are kept raw. Never raises. Most output lines yield
        nothing, and a batch skips them without a Python step per line (``parsing.parse_batch``).
        """
        ...

    def parse_transcript_line(self, line: str) -> list[EventData]:
        """Payloads for one line of the CLI's own session log that stdout did not already give."""
        ...

    def finish(self, exit_code: int | None) -> list[EventData]:
        """Conclusions at the end of the run; ``exit_code`` None when unknown (killed, lost)."""
        ...


class AgentAdapter(Protocol):
    """Vendor knowledge about one agent CLI (see the module docstring)."""

    name: AgentName

    def rung_flags(self, rung: int) -> list[str]:
        """The permission flags of ``rung`` (0 = narrowest) on this agent's ladder."""
        ...

    def build_command(
        self,
        task_prompt: str,
        rung: int,
        *,
        settings: AgentSettings,
        resume_id: str | None = None,
        extra_ro_dirs: Sequence[str] = (),
        model: str | None = None,
        api_key: SecretStr | str | None = None,
    ) -> CommandSpec:
        """The run of ``task_prompt`` on ``rung``; ``resume_id`` continues the CLI's own session.

        ``api_key`` overrides ``settings.api_key``; ``model`` overrides ``settings.model``.
        Raises ``UsageError`` subclasses for a rung above ``settings.max_rung``, an unsafe id, model
        or directory, and ``CredentialsMissing`` when there is neither a key nor a login folder.
        """
        ...

    def build_structured_command(
        self,
        prompt: str,
        schema: Mapping[str, Any],
        *,
        settings: AgentSettings,
        model: str | None = None,
        api_key: SecretStr | str | None = None,
    ) -> CommandSpec:
        """A read-only (rung 0) run whose final answer is one JSON object for ``schema``."""
        ...

    def parser(self) -> StreamParser:
        """A fresh parser for one run."""
        ...


def check_rung(agent: AgentName, rung: int, settings: AgentSettings) -> None:
    """Refuse a rung outside the ladder or above the configured ceiling."""
    if not 0 <= rung <= TOP_RUNG:
        raise UsageError(f"{agent} has no permission rung {rung!r}: rungs are 0..{TOP_RUNG}")
    if rung > settings.max_rung:
        raise ConfigError(
            f"{agent} rung {rung} is above its ceiling max_rung={settings.max_rung}: "
            f"raise ORCH_{agent.upper()}__MAX_RUNG to allow it"
        )


def safe_prompt(prompt: str) -> str:
    """The prompt as one argv item that no CLI reads as an option (a leading '-' gets a space)."""
    if not prompt.strip():
        raise UsageError("the prompt is empty: give the agent something to do")
    if "\x00" in prompt:
        raise UsageError("the prompt contains a NUL byte, which cannot travel in argv: remove it")
    return f" {prompt}" if prompt.startswith("-") else prompt


def check_resume_id(agent: AgentName, resume_id: str | None) -> str | None:
    """A resume id as printed by the CLI; anything else could smuggle an option into argv."""
    if resume_id is not None and not _RESUME_ID.fullmatch(resume_id):
        raise InvalidIdentifier(
            f"{agent} resume id {resume_id!r} is not a CLI session id (letters, digits, '-', '_'): "
            "resume from the id the CLI printed, or start a new session"
        )
    return resume_id


def pick_model(agent: AgentName, model: str | None, settings: AgentSettings) -> str | None:
    """``model`` or ``settings.model``, checked to be a plain model name."""
    chosen = model if model is not None else settings.model
    if chosen is not None and not _MODEL.fullmatch(chosen):
        raise ConfigError(
            f"{agent} model {chosen!r} is not a model name (letters, digits, . _ : / @ [ ] -): "
            f"fix ORCH_{agent.upper()}__MODEL"
        )
    return chosen


def check_dirs(agent: AgentName, dirs: Sequence[str], *, forbid: str = "") -> list[str]:
    """Extra in-container directories: absolute, no '..', no NUL, none of the ``forbid`` characters."""
    checked: list[str] = []
    for path in dirs:
        bad = [c for c in forbid if c in path]
        if not path.startswith("/") or "\x00" in path or ".." in path.split("/") or bad:
            raise UsageError(
                f"{agent} extra directory {path!r} must be an absolute container path without '..'"
                + (f" and without {bad[0]!r}" if bad else "")
            )
        checked.append(path)
    return checked


def credential(
    agent: AgentName, variable: str, settings: AgentSettings, api_key: SecretStr | str | None
) -> dict[str, SecretStr]:
    """``{variable: key}``, or ``{}`` when a login folder stands in; else ``CredentialsMissing``."""
    key = api_key if api_key is not None else settings.api_key
    value = key.get_secret_value() if isinstance(key, SecretStr) else key
    if value:
        return {variable: SecretStr(value)}
    if settings.login_dir is not None:
        return {}
    raise CredentialsMissing(
        f"{agent} has no credential: set ORCH_{agent.upper()}__API_KEY (sent as {variable}) "
        f"or ORCH_{agent.upper()}__LOGIN_DIR (a login folder)"
    )
