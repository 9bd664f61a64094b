"""Claude Code: ``claude -p <prompt> --output-format stream-json --verbose`` and its JSONL stream.

Ladder (POLICIES.md §2): rung 0 the default permission mode, rung 1 ``--permission-mode acceptEdits``,
rung 2 ``--permission-mode bypassPermissions`` (the containers run as uid 1000, so no ``IS_SANDBOX``).
Every run gets a ``--disallowedTools`` list (pushing, network fetches, publishing); a denial by one
of those rules is ``by_policy``: no rung lifts it. Facts: ``reference/cli-contracts.md`` §1 and the
recorded transcripts of 2.1.197.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import SecretStr

from orchestrator.agents.base import (
    AGENT_HOME,
    TMP_DIR,
    CommandSpec,
    check_dirs,
    check_resume_id,
    check_rung,
    credential,
    pick_model,
    safe_prompt,
)
from orchestrator.agents.claude_stream import ClaudeParser
from orchestrator.config import AgentSettings
from orchestrator.models.common import AgentName

LADDER: Final = (
    (),
    ("--permission-mode", "acceptEdits"),
    ("--permission-mode", "bypassPermissions"),
)
DISALLOWED_TOOLS: Final = (
    "WebFetch",
    "WebSearch",
    "Bash(git push:*)",
    "Bash(curl:*)",
    "Bash(wget:*)",
    "Bash(npm publish:*)",
    "Bash(yarn publish:*)",
    "Bash(pnpm publish:*)",
    "Bash(twine upload:*)",
    "Bash(cargo publish:*)",
    "Bash(gem push:*)",
    "Bash(docker push:*)",
    "Bash(gh release create:*)",
)
MAX_RETRIES: Final = 2  # the CLI's own retries: a give-up in seconds, then our recovery decides
QUIET_ENV: Final = {
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_MAX_RETRIES": str(MAX_RETRIES),
    "TMPDIR": TMP_DIR,
}
CONFIG_HOME: Final = f"{AGENT_HOME}/.claude"
_RULE = re.compile(r"(?P<tool>[A-Za-z_][\w-]*)(?:\((?P<arg>.*)\))?")
_SUBCOMMANDS = re.compile(r"&&|\|\||;|\||\n")


def matches_rule(tool: str, tool_input: Any, rules: Sequence[str] = DISALLOWED_TOOLS) -> bool:
    """Whether a tool call falls under one of Claude's permission ``rules`` (``Tool`` / ``Tool(prefix:*)``).

    For shell rules every sub-command of a compound command is checked, as Claude does.
    """
    for rule in rules:
        found = _RULE.fullmatch(rule)
        if not found or found.group("tool") != tool:
            continue
        arg = found.group("arg")
        if arg is None:
            return True
        command = tool_input.get("command") if isinstance(tool_input, dict) else None
        if not isinstance(command, str):
            continue
        prefix, wildcard = (arg[:-2], True) if arg.endswith(":*") else (arg, False)
        for part in (p.strip() for p in _SUBCOMMANDS.split(command)):
            if part == prefix or (wildcard and part.startswith(prefix + " ")):
                return True
    return False


class ClaudeAdapter:
    """Claude Code 2.1.x (see the module docstring)."""

    name = AgentName.CLAUDE

    def rung_flags(self, rung: int) -> list[str]:
        """``--permission-mode`` flags of ``rung``."""
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
        """``claude -p PROMPT --output-format stream-json --verbose [mode] [--model] [--resume] ...``."""
        check_rung(self.name, rung, settings)
        return self._spec(
            safe_prompt(task_prompt),
            rung,
            settings=settings,
            extra=[],
            resume_id=check_resume_id(self.name, resume_id),
            dirs=check_dirs(self.name, extra_ro_dirs),
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
        """Rung 0 with ``--json-schema``: the result event carries ``structured_output`` (an object)."""
        return self._spec(
            safe_prompt(prompt),
            0,
            settings=settings,
            extra=["--json-schema", json.dumps(dict(schema), separators=(",", ":"))],
            resume_id=None,
            dirs=[],
            model=pick_model(self.name, model, settings),
            api_key=api_key,
        )

    def parser(self) -> ClaudeParser:
        """A fresh parser; it knows the orchestrator's own rules to mark their denials ``by_policy``."""
        return ClaudeParser(policy_rule=matches_rule)

    def _spec(
        self,
        prompt: str,
        rung: int,
        *,
        settings: AgentSettings,
        extra: list[str],
        resume_id: str | None,
        dirs: list[str],
        model: str | None,
        api_key: SecretStr | str | None,
    ) -> CommandSpec:
        flags = self.rung_flags(rung)
        argv = ["claude", "-p", prompt, "--output-format", "stream-json", "--verbose", *flags, *extra]
        if model:
            argv += ["--model", model]
        if resume_id:
            argv += ["--resume", resume_id]
        # Both options take several values: each list runs until the next option, so they come last.
        argv += ["--disallowedTools", *DISALLOWED_TOOLS]
        if dirs:
            argv += ["--add-dir", *dirs]
        env = dict(QUIET_ENV)
        if settings.base_url:
            env["ANTHROPIC_BASE_URL"] = settings.base_url
        return CommandSpec(
            agent=self.name,
            rung=rung,
            argv=argv,
            env=env,
            secrets=credential(self.name, "ANTHROPIC_API_KEY", settings, api_key),
            flags=flags,
            writable_dirs=[TMP_DIR],
            state_dirs=[CONFIG_HOME],
            login_dir=CONFIG_HOME,
        )
