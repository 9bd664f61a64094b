"""Gemini CLI: ``gemini -p PROMPT -o stream-json --skip-trust -m MODEL --policy FILE``.

Ladder (POLICIES.md §2): the default approval mode (headless, Gemini does not even offer its write,
edit and shell tools), ``--approval-mode auto_edit``, ``--approval-mode yolo``. A policy file of the
orchestrator denies pushing, network fetches and publishing on every rung (a ``policy_violation``,
reported ``by_policy``). Settings go to the user settings file ``~/.gemini/settings.json``, mounted
read-only over the state folder: API-key auth (a base URL alone would select the "gateway" auth that
0.61 refuses headless, exit 41), no usage statistics or telemetry, no auto-update,
``general.maxAttempts`` small. Not a system settings file (``GEMINI_CLI_SYSTEM_SETTINGS_PATH``): the
CLI skips one that is not owned by root, and a server that is not root (compose.yaml) cannot give
its files to root; the cost is that a repository's ``.gemini/settings.json`` may override these
keys (the egress allowlist still bounds where telemetry could go). A pinned model skips the model router's
extra classifier calls and their retries. ``GEMINI_CLI_NO_RELAUNCH`` keeps one node process (signals
and kill-by-pid reach the CLI itself). ``~/.gemini`` holds the chats ``--resume`` reads: a state dir.
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
from orchestrator.agents.gemini_stream import GeminiParser
from orchestrator.config import AgentSettings
from orchestrator.models.common import AgentName

LADDER: Final = (
    (),
    ("--approval-mode", "auto_edit"),
    ("--approval-mode", "yolo"),
)
GEMINI_HOME: Final = f"{AGENT_HOME}/.gemini"
SETTINGS_FILE: Final = f"{GEMINI_HOME}/settings.json"
POLICY_FILE: Final = f"{CONFIG_DIR}/gemini/policy.toml"
DEFAULT_MODEL: Final = "gemini-2.5-pro"
MAX_ATTEMPTS: Final = 2  # the CLI's own attempts per request: a give-up in seconds, not minutes
DENIED_COMMANDS: Final = (
    "git push", "curl", "wget", "npm publish", "yarn publish", "pnpm publish", "twine upload",
    "cargo publish", "gem push", "docker push", "gh release create",
)  # fmt: skip
POLICY_MARK: Final = "Denied by the orchestrator's sandbox policy."
STRUCTURED_SUFFIX: Final = (
    "\n\nAnswer with exactly one JSON object and nothing else (no prose, no code fence). "
    "It must validate against this JSON Schema:\n"
)


def settings_json(*, api_key_auth: bool) -> bytes:
    """The system settings file: auth type, quiet, few attempts."""
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key" if api_key_auth else "oauth-personal"}},
        "general": {
            "enableAutoUpdate": False,
            "enableAutoUpdateNotification": False,
            "maxAttempts": MAX_ATTEMPTS,
        },
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
    }
    return json.dumps(settings, indent=2).encode()


def policy_toml() -> bytes:
    """The policy file: what no approval mode may run (user tier, above the built-in yolo allow)."""
    prefixes = ", ".join(json.dumps(p) for p in DENIED_COMMANDS)
    message = json.dumps(f" {POLICY_MARK}")
    return (
        "# Written by the orchestrator for every run.\n"
        "[[rule]]\n"
        'toolName = "run_shell_command"\n'
        f"commandPrefix = [{prefixes}]\n"
        'decision = "deny"\n'
        "priority = 900\n"
        f"deny_message = {message}\n"
        "\n"
        "[[rule]]\n"
        'toolName = "web_fetch"\n'
        'decision = "deny"\n'
        "priority = 900\n"
        f"deny_message = {message}\n"
    ).encode()


class GeminiAdapter:
    """Gemini CLI 0.61 (see the module docstring)."""

    name = AgentName.GEMINI

    def rung_flags(self, rung: int) -> list[str]:
        """``--approval-mode`` flags of ``rung``."""
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
        """``gemini -p PROMPT -o stream-json --skip-trust [mode] -m MODEL [--resume] [--include-directories]``."""
        check_rung(self.name, rung, settings)
        return self._spec(
            safe_prompt(task_prompt),
            rung,
            settings=settings,
            resume_id=check_resume_id(self.name, resume_id),
            dirs=check_dirs(self.name, extra_ro_dirs, forbid=","),
            model=pick_model(self.name, model, settings) or DEFAULT_MODEL,
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
        """Rung 0 with the schema in the prompt (Gemini has no schema option): the answer is the final text."""
        instruction = STRUCTURED_SUFFIX + json.dumps(dict(schema), separators=(",", ":"))
        return self._spec(
            safe_prompt(prompt) + instruction,
            0,
            settings=settings,
            resume_id=None,
            dirs=[],
            model=pick_model(self.name, model, settings) or DEFAULT_MODEL,
            api_key=api_key,
        )

    def parser(self) -> GeminiParser:
        """A fresh parser for one run."""
        return GeminiParser()

    def _spec(
        self,
        prompt: str,
        rung: int,
        *,
        settings: AgentSettings,
        resume_id: str | None,
        dirs: list[str],
        model: str,
        api_key: SecretStr | str | None,
    ) -> CommandSpec:
        flags = self.rung_flags(rung)
        argv = ["gemini", "-p", prompt, "-o", "stream-json", "--skip-trust", *flags, "-m", model]
        if resume_id:
            argv += ["--resume", resume_id]
        if dirs:
            argv += ["--include-directories", ",".join(dirs)]
        argv += ["--policy", POLICY_FILE]
        secrets = credential(self.name, "GEMINI_API_KEY", settings, api_key)
        env = {"GEMINI_CLI_NO_RELAUNCH": "true"}
        if settings.base_url:
            env["GOOGLE_GEMINI_BASE_URL"] = settings.base_url
        return CommandSpec(
            agent=self.name,
            rung=rung,
            argv=argv,
            env=env,
            secrets=secrets,
            files={SETTINGS_FILE: settings_json(api_key_auth=bool(secrets)), POLICY_FILE: policy_toml()},
            flags=flags,
            writable_dirs=[TMP_DIR],
            state_dirs=[GEMINI_HOME],
            login_dir=GEMINI_HOME,
        )
