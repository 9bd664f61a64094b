"""The Docker side of the benchmarks: the light image, a raw docker-py client, labels and cleanup.

Every container a benchmark starts, through the orchestrator or raw, carries ``orchestrator.bench=<run>``
(``BenchEngine.labels``); ``BenchEngine`` removes them all by that label when it closes, whether the
run succeeded or not. The raw baselines talk to the engine through docker-py directly: measuring the
path without the orchestrator is their purpose.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from orchestrator.config import Settings
from orchestrator.images import ensure_images
from orchestrator.log import get_logger

log = get_logger(__name__)
BENCH_LABEL = "orchestrator.bench"
FIX_ENGINE = "start the engine (scripts/docker-engine) or point DOCKER_HOST at one"


class BenchSetupError(RuntimeError):
    """The benchmarks cannot run here (no engine, no image); the message says how to fix it."""


@dataclass
class BenchEngine:
    """A raw client, the light image's tag and this run's label. Use ``open_engine()``."""

    client: docker.DockerClient
    image: str
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def labels(self) -> dict[str, str]:
        """The labels every container of this run carries."""
        return {BENCH_LABEL: self.run_id}

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.client.info()
        return info

    def remove_all(self) -> int:
        """Remove every container of this run (running or not); returns how many there were."""
        found = self.client.api.containers(all=True, filters={"label": f"{BENCH_LABEL}={self.run_id}"})
        for summary in found:
            try:
                self.client.api.remove_container(summary["Id"], force=True, v=True)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as err:
                if err.status_code != 409:  # 409: removal already in progress
                    log.warning("bench.cleanup_failed", container=summary["Id"][:12], error=str(err))
        return len(found)

    def count_running(self) -> int:
        return len(self.client.api.containers(filters={"label": f"{BENCH_LABEL}={self.run_id}"}))


def light_image(settings: Settings) -> str:
    """The base image (bash, python3, coreutils), built if missing; the benchmarks' light image."""
    return ensure_images(settings, ["base"])["base"]


@contextmanager
def open_engine(settings: Settings) -> Iterator[BenchEngine]:
    """The engine of this run; on exit every container labelled with the run is removed."""
    try:
        client = docker.from_env(timeout=120, max_pool_size=128)
        client.ping()
    except docker.errors.DockerException as err:
        raise BenchSetupError(f"no Docker engine answers ({err}); {FIX_ENGINE}") from err
    engine = BenchEngine(client, light_image(settings))
    try:
        yield engine
    finally:
        started = time.monotonic()
        removed = engine.remove_all()
        log.info(
            "bench.cleanup", run=engine.run_id, removed=removed, seconds=round(time.monotonic() - started, 2)
        )
        client.close()
