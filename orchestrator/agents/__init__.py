"""One adapter per agent CLI behind the ``AgentAdapter`` role (see ``orchestrator.agents.base``).

``get_adapter("claude" | "codex" | "gemini")`` returns the adapter; ``adapter.build_command(...)``
declares a headless run (``CommandSpec``), ``adapter.parser()`` reads its output into event payloads.
"""

from __future__ import annotations

from orchestrator.agents.base import AgentAdapter, CommandSpec, Stream, StreamParser
from orchestrator.agents.claude import ClaudeAdapter
from orchestrator.agents.codex import CodexAdapter
from orchestrator.agents.gemini import GeminiAdapter
from orchestrator.errors import UsageError
from orchestrator.models.common import AgentName

ADAPTERS: dict[AgentName, AgentAdapter] = {
    AgentName.CLAUDE: ClaudeAdapter(),
    AgentName.CODEX: CodexAdapter(),
    AgentName.GEMINI: GeminiAdapter(),
}


def get_adapter(name: str | AgentName) -> AgentAdapter:
    """The adapter of agent ``name``; ``UsageError`` naming the known agents for anything else."""
    try:
        return ADAPTERS[AgentName(name)]
    except ValueError:
        known = ", ".join(a.value for a in AgentName)
        raise UsageError(f"unknown agent {name!r}: the agents are {known}") from None


__all__ = [
    "ADAPTERS",
    "AgentAdapter",
    "ClaudeAdapter",
    "CodexAdapter",
    "CommandSpec",
    "GeminiAdapter",
    "Stream",
    "StreamParser",
    "get_adapter",
]
