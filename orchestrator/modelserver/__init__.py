"""A scripted model API server for offline runs of the real agent CLIs.

It speaks enough of the Anthropic Messages API (Claude Code), the OpenAI Responses API (Codex) and
the Gemini API (Gemini CLI) for those CLIs to run a whole session against it, and answers each
model request with the next turn of a scenario file (TOML; see ``README.md``): text, a JSON
document, a file write or shell command rendered as each CLI's own tool, an API error with the
vendor's body, a hang, or a stream cut short.

Run it as ``python3 -m orchestrator.modelserver --scenario FILE --host 0.0.0.0 --port 8080``.
This package uses the Python standard library only and imports nothing else from ``orchestrator``:
it runs in an image that has python3 and nothing more.
"""

from orchestrator.modelserver.scenario import Scenario, ScenarioError
from orchestrator.modelserver.scenario_toml import load_scenario, parse_scenario
from orchestrator.modelserver.server import ModelServer

__all__ = ["ModelServer", "Scenario", "ScenarioError", "load_scenario", "parse_scenario"]
