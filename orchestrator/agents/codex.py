"""Codex CLI: ``codex exec --json --skip-git-repo-check <sandbox> PROMPT`` (stdin closed).

Ladder (POLICIES.md §2): ``--sandbox read-only``, ``--sandbox workspace-write``,
``--dangerously-bypass-approvals-and-sandbox``. Inside Docker's default seccomp Codex's own bubblewrap
sandbox cannot start, so on rungs 0 and 1 every shell command fails with a ``bwrap:`` text, which the
parser reports as a denial; rung 2 leaves the isolation to the container. ``exec`` always runs with
approval ``never``. Resume is ``codex exec ... resume <thread_id> PROMPT``; the sandbox flag is an
``exec`` option, so it comes before ``resume``.

Configuration goes to the system config file ``/etc/codex/config.toml`` (read-only; verified in the
container spike), so ``CODEX_HOME`` stays Codex's default ``~/.codex``, which it creates itself:
never under /tmp (Codex then refuses to create its helper binaries). It holds the session rollouts
that ``exec resume`` reads, hence a state dir. ``settings.base_url`` is the Responses API root
including ``/v1`` (Codex appends ``/responses``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import SecretStr

from orchestrator.agents.base import (
    AGENT_HOME,
    CONFIG_DIR,
    TMP_DIR,
    CommandSpec,
    check_dirs,
    check_resume_id,
    check_rung,
    credential,
    pick_model,
    safe_prompt,
)
from orchestrator.agents.codex_stream import CodexParser
from orchestrator.config import AgentSettings
from orchestrator.models.common import AgentName

LADDER: Final = (
    ("--sandbox", "read-only"),
    ("--sandbox", "workspace-write"),
    ("--dangerously-bypass-approvals-and-sandbox",),
)
CONFIG_FILE: Final = "/etc/codex/config.toml"
SCHEMA_FILE: Final = f"{CONFIG_DIR}/codex/output-schema.json"
CODEX_HOME: Final = f"{AGENT_HOME}/.codex"
KEY_VARIABLE: Final = "OPENAI_API_KEY"
PROVIDER: Final = "orchestrator"
DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
MAX_RETRIES: Final = 1  # per request and per stream: a give-up in seconds, then our recovery decides


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(value, ensure_ascii=False)


def config_toml(base_url: str) -> str:
    """The system ``config.toml``: our model provider, few retries, no update check, analytics or plugins."""
    return "\n".join(
        [
            f"model_provider = {_toml_string(PROVIDER)}",
            "check_for_update_on_startup = false",
            "",
            "[analytics]",
            "enabled = false",
            "",
            "[features]",
            "plugins = false",
            "remote_plugin = false",
            "",
            f"[model_providers.{PROVIDER}]",
            f"name = {_toml_string(PROVIDER)}",
            f"base_url = {_toml_string(base_url)}",
            f"env_key = {_toml_string(KEY_VARIABLE)}",
            'wire_api = "responses"',
            f"request_max_retries = {MAX_RETRIES}",
            f"stream_max_retries = {MAX_RETRIES}",
            "supports_websockets = false",
            "",
        ]
    )


class CodexAdapter:
    """Codex CLI 0.169 (see the module docstring)."""

    name = AgentName.CODEX

    def rung_flags(self, rung: int) -> list[str]:
        """``--sandbox`` / bypass flags of ``rung``."""
        return list(LADDER[rung]) if 0 <= rung < len(LADDER) else []

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
        """``codex exec --json --skip-git-repo-check <rung> [-m] [resume ID] PROMPT``.

        ``extra_ro_dirs`` are checked but not passed: Codex reads outside its root in every sandbox
        mode, and its ``--add-dir`` would make a directory *writable*.
        """
        check_rung(self.name, rung, settings)
        check_dirs(self.name, extra_ro_dirs)
        return self._spec(
            safe_prompt(task_prompt),
            rung,
            settings=settings,
            extra=[],
            files={},
            resume_id=check_resume_id(self.name, resume_id),
            model=pick_model(self.name, model, settings),
            api_key=api_key,
        )

    def build_structured_command(
        self,
        prompt: str,
        schema: Mapping[str, Any],
        *,
        settings: AgentSettings,
        model: str | None = None,
        api_key: SecretStr | str | None = None,
    ) -> CommandSpec:
        """Rung 0 with ``--output-schema FILE``: the answer is the last ``agent_message`` (not validated by Codex)."""
        return self._spec(
            safe_prompt(prompt),
            0,
            settings=settings,
            extra=["--output-schema", SCHEMA_FILE],
            files={SCHEMA_FILE: json.dumps(dict(schema), indent=2).encode()},
            resume_id=None,
            model=pick_model(self.name, model, settings),
            api_key=api_key,
        )

    def parser(self) -> CodexParser:
        """A fresh parser for one run."""
        return CodexParser()

    def _spec(
        self,
        prompt: str,
        rung: int,
        *,
        settings: AgentSettings,
        extra: list[str],
        files: dict[str, bytes],
        resume_id: str | None,
        model: str | None,
        api_key: SecretStr | str | None,
    ) -> CommandSpec:
        flags = self.rung_flags(rung)
        argv = ["codex", "exec", "--json", "--skip-git-repo-check", *flags, *extra]
        if model:
            argv += ["-m", model]
        if resume_id:
            argv += ["resume", resume_id]
        argv.append(prompt)
        config = config_toml(settings.base_url or DEFAULT_BASE_URL).encode()
        return CommandSpec(
            agent=self.name,
            rung=rung,
            argv=argv,
            env={"TMPDIR": TMP_DIR},
            secrets=credential(self.name, KEY_VARIABLE, settings, api_key),
            files={CONFIG_FILE: config, **files},
            flags=flags,
            writable_dirs=[TMP_DIR],
            state_dirs=[CODEX_HOME],
            login_dir=CODEX_HOME,
            transcript_glob=f"{CODEX_HOME}/sessions/*/*/*/rollout-*.jsonl",
        )
