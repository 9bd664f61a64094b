"""Permission ladders: the CLI flags of each rung, narrowest first (POLICIES.md §2).

The agent adapters own the flags (``AgentAdapter.rung_flags``, their ``LADDER`` data): this module
only reads them, checks the rung and gives the recovery rules one function to call, so a ladder
is written down once. Rung 0 is what a read-only task runs with; a rung never goes down.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from orchestrator.agents import get_adapter
from orchestrator.agents.base import TOP_RUNG
from orchestrator.models.common import AgentName

__all__ = ["LADDERS", "TOP_RUNG", "rung_flags"]


def rung_flags(agent: AgentName | str, rung: int) -> list[str]:
    """The CLI flags of ``rung`` on ``agent``'s ladder (a new list each call).

    Raises ``ValueError`` for an unknown agent or a rung outside ``0..TOP_RUNG``.
    """
    try:
        name = AgentName(agent)
    except ValueError:
        raise ValueError(
            f"unknown agent {agent!r}; agents are {', '.join(a.value for a in AgentName)}"
        ) from None
    if not 0 <= rung <= TOP_RUNG:
        raise ValueError(f"no rung {rung!r} on the {name.value} ladder; rungs are 0..{TOP_RUNG}")
    return get_adapter(name).rung_flags(rung)


LADDERS: Final[Mapping[AgentName, tuple[tuple[str, ...], ...]]] = MappingProxyType(
    {agent: tuple(tuple(rung_flags(agent, rung)) for rung in range(TOP_RUNG + 1)) for agent in AgentName}
)
