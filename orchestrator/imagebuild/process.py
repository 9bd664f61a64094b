"""Running the build tools (``docker``, ``mmdebstrap``, ``npm``) as argv lists, output to a log file.

A failed or missing tool becomes an error from the one tree whose message names the command, the
last lines of its log, the log's path and the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from orchestrator.errors import EnvironmentProblem, ImageMissing

TAIL_LINES = 15
DEFAULT_TIMEOUT_S = 1800.0

INSTALL_HINTS: dict[str, str] = {
    "docker": "install the Docker CLI and engine (apt-get install docker.io) and start the engine",
    "mmdebstrap": (
        "install it (apt-get install mmdebstrap), or set ORCH_BASE_IMAGE=debian:trixie-slim "
        "to build the base FROM a stock image pulled from a registry"
    ),
    "npm": "install Node.js and npm (apt-get install npm); npm must reach the npm registry",
}


def require_tool(tool: str) -> str:
    """The full path of ``tool``; a missing one is an ``EnvironmentProblem`` saying how to install it."""
    found = shutil.which(tool)
    if found is None:
        hint = INSTALL_HINTS.get(tool, f"install {tool}")
        raise EnvironmentProblem(f"{tool} is not on PATH, and building images needs it: {hint}")
    return found


def log_tail(log_path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log ('' when it cannot be read)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def build_failure(what: str, code: int | str, log_path: Path) -> ImageMissing:
    """The error for a failed build step: what failed, its exit code, the log's tail and path."""
    return ImageMissing(
        f"{what} failed ({code}); the image stays missing. Last lines of {log_path}:\n"
        f"{log_tail(log_path)}\nFix the cause shown above and run `orchestrate images build` again"
    )


def run_logged(
    argv: list[str],
    log_path: Path,
    what: str,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Run ``argv`` with stdout and stderr appended to ``log_path``; raise ``ImageMissing`` on failure."""
    require_tool(argv[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=None if env is None else {**os.environ, **env},
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise build_failure(what, f"timed out after {timeout_s:.0f} s", log_path) from err
    if done.returncode != 0:
        raise build_failure(what, f"exit {done.returncode}", log_path)


def pipe_logged(
    producer: list[str],
    consumer: list[str],
    log_path: Path,
    what: str,
    *,
    producer_env: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Run ``producer | consumer`` (no shell), both logging to ``log_path``; both must exit 0."""
    require_tool(producer[0])
    require_tool(consumer[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(producer)} | {' '.join(consumer)}\n".encode())
        log.flush()
        with subprocess.Popen(
            producer,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=None if producer_env is None else {**os.environ, **producer_env},
        ) as first:
            assert first.stdout is not None  # stdout=PIPE guarantees it
            try:
                second = subprocess.run(
                    consumer,
                    stdin=first.stdout,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired as err:
                first.kill()
                raise build_failure(what, f"timed out after {timeout_s:.0f} s", log_path) from err
            finally:
                first.stdout.close()
            # The consumer read to EOF (or died, which breaks the producer's pipe): it ends soon.
            try:
                first_code = first.wait(timeout=60)
            except subprocess.TimeoutExpired:
                first.kill()
                first_code = first.wait()
    if first_code != 0 or second.returncode != 0:
        codes = f"{producer[0]} exit {first_code}, {consumer[0]} exit {second.returncode}"
        raise build_failure(what, codes, log_path)
