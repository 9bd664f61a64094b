"""The few ``docker`` CLI calls that building and listing images need (argv lists, no SDK).

Only ``orchestrator/runtime/docker.py`` may import the docker SDK; image builds shell out to the
CLI, which also gives the legacy builder's ``--network none`` without BuildKit.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from orchestrator.errors import DockerUnavailable
from orchestrator.imagebuild.process import require_tool, run_logged

QUERY_TIMEOUT_S = 60.0


class DockerCli:
    """Image queries and builds through the ``docker`` command."""

    def __init__(self, executable: str = "docker") -> None:
        self.executable = executable

    def _query(self, *args: str) -> subprocess.CompletedProcess[str]:
        require_tool(self.executable)
        try:
            return subprocess.run(
                [self.executable, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=QUERY_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise DockerUnavailable(
                f"`docker {args[0]}` did not answer within {QUERY_TIMEOUT_S:.0f} s: "
                "check that the engine is healthy (docker info)"
            ) from err

    def server_version(self) -> str:
        """The engine's version; ``DockerUnavailable`` with the fix when no engine answers."""
        done = self._query("version", "--format", "{{.Server.Version}}")
        if done.returncode != 0 or not done.stdout.strip():
            reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no answer"]
            raise DockerUnavailable(
                f"no Docker engine answers ({reason[0]}): start it (scripts/docker-engine or "
                "systemctl start docker) or point DOCKER_HOST at a running engine"
            )
        return done.stdout.strip()

    def exists(self, ref: str) -> bool:
        """Whether the engine has an image tagged ``ref``."""
        return self._query("image", "inspect", "--format", "{{.Id}}", ref).returncode == 0

    def inspect(self, refs: list[str]) -> list[dict[str, Any]]:
        """``docker image inspect`` of the refs that exist (missing ones are left out)."""
        found: list[dict[str, Any]] = []
        for ref in refs:
            done = self._query("image", "inspect", ref)
            if done.returncode == 0:
                found.extend(json.loads(done.stdout))
        return found

    def remove(self, ref: str) -> bool:
        """Untag ``ref`` (never forced: an image in use stays); whether it was removed."""
        return self._query("image", "rm", ref).returncode == 0

    def tags(self, reference_glob: str) -> list[str]:
        """Every ``repository:tag`` matching a ``--filter reference=`` glob."""
        done = self._query(
            "image", "ls", "--filter", f"reference={reference_glob}", "--format", "{{.Repository}}:{{.Tag}}"
        )
        if done.returncode != 0:
            self.server_version()  # raises with the fix when the engine is the cause
            return []
        return sorted(line for line in done.stdout.splitlines() if line and not line.endswith(":<none>"))

    def build(
        self,
        context: Path,
        ref: str,
        *,
        build_args: dict[str, str],
        labels: dict[str, str],
        log_path: Path,
        network: str = "none",
    ) -> None:
        """``docker build`` ``context`` into ``ref``; ``network`` is ``none`` except for the apt base."""
        argv = [self.executable, "build", "--network", network, "--rm", "--force-rm", "-t", ref]
        for key, value in sorted(build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        for key, value in sorted(labels.items()):
            argv += ["--label", f"{key}={value}"]
        argv.append(str(context))
        run_logged(argv, log_path, f"docker build of {ref}")
