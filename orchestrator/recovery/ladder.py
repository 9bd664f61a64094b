"""Permission ladders: the CLI flags of each rung, narrowest first (POLICIES.md §2).

The ladder is data. Rung 0 is what a read-only task runs with; a rung never goes down. The flags
are the ones the recorded transcripts show working headless (``reference/cli-contracts.md``):
Claude's ``bypassPermissions`` needs a non-root user, which the sandbox guarantees.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from orchestrator.models.common import AgentName

TOP_RUNG: Final = 2

LADDERS: Final[Mapping[AgentName, tuple[tuple[str, ...], ...]]] = MappingProxyType(
    {
        AgentName.CLAUDE: (
            (),
            ("--permission-mode", "acceptEdits"),
            ("--permission-mode", "bypassPermissions"),
        ),
        AgentName.GEMINI: (
            (),
            ("--approval-mode", "auto_edit"),
            ("--approval-mode", "yolo"),
        ),
        AgentName.CODEX: (
            ("--sandbox", "read-only"),
            ("--sandbox", "workspace-write"),
            ("--dangerously-bypass-approvals-and-sandbox",),
        ),
    }
)


def rung_flags(agent: AgentName | str, rung: int) -> list[str]:
    """The CLI flags of ``rung`` on ``agent``'s ladder (a new list each call).

    Raises ``ValueError`` for an unknown agent or a rung outside ``0..TOP_RUNG``.
    """
    try:
        ladder = LADDERS[AgentName(agent)]
    except ValueError:
        raise ValueError(
            f"unknown agent {agent!r}; agents are {', '.join(a.value for a in AgentName)}"
        ) from None
    if not 0 <= rung < len(ladder):
        raise ValueError(f"no rung {rung!r} on the {agent} ladder; rungs are 0..{TOP_RUNG}")
    return list(ladder[rung])
