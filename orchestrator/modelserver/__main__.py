"""``python3 -m orchestrator.modelserver --scenario FILE [--host H] [--port N] [--log FILE]``.

Exit codes: 0 after SIGTERM/SIGINT, 2 for a bad scenario file or bad arguments (the message on
stderr names the file, the turn and the key), 1 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.modelserver.scenario import ScenarioError
from orchestrator.modelserver.scenario_toml import load_scenario
from orchestrator.modelserver.server import ModelServer, serve_until_signal


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m orchestrator.modelserver",
        description="Scripted Anthropic/OpenAI/Gemini model API for offline agent CLI runs.",
    )
    parser.add_argument("--scenario", required=True, type=Path, help="scenario TOML file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to bind; 0 picks a free one (default 8080)"
    )
    parser.add_argument(
        "--log", type=Path, default=None, help="also append every request, with its body, here"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="do not echo one JSON line per request on stderr"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        sys.stderr.write(f"modelserver: --port {args.port} is not a port number (0-65535)\n")
        return 2
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as err:
        sys.stderr.write(f"modelserver: {err}\n")
        return 2
    try:
        server = ModelServer(scenario, args.host, args.port, args.log, None if args.quiet else sys.stderr)
    except OSError as err:
        sys.stderr.write(f"modelserver: cannot listen on {args.host}:{args.port}: {err.strerror or err}\n")
        return 1
    serve_until_signal(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
