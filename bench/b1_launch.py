"""B1 launch overhead: a launch request -> the worker's first output line durable in the store.

Ours: ``Supervisor.run(job)`` (adapter command, sandbox spec via the ``Launcher``, ``DockerRuntime.start``,
``worker_started`` committed, ``stream``, the line stored (an ``output_lines`` event) and fsynced by the
group-commit flusher); the clock stops in the writer's listener once the line is durable.
Raw: docker-py ``containers.create`` + ``attach`` + ``start`` -> first line received, with the very
same create arguments (``create_kwargs`` of the same hardened spec: mounts, tmpfs, limits, user), so
the ratio is the orchestrator's own share. Worker: ``echo READY; sleep 1``, then a Codex end of turn.
Sequential launches alternate ours and raw; then K launches at once, each side in turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from bench.engine import BenchEngine
from bench.lab import TURN_COMPLETED, Lab, open_lab
from bench.report import Figure, Target
from bench.stats import Dist
from orchestrator.agents import get_adapter
from orchestrator.runtime.docker import DockerRuntime, create_kwargs
from orchestrator.runtime.spec import ContainerSpec, LineRun
from orchestrator.supervisor import Job

SCRIPT = ("sh", "-c", f"echo READY; sleep 1; echo '{TURN_COMPLETED}'")
RATIO = Target("ratio_max", 1.10)


@dataclass(frozen=True)
class Config:
    sequential: int
    concurrent: tuple[int, ...]
    rounds: dict[int, int]  # per K: rounds of K launches per side, in ABBA order (drift hits both)

    @classmethod
    def of(cls, quick: bool) -> Config:
        return cls(6, (8,), {8: 1}) if quick else cls(30, (8, 32), {8: 4, 32: 2})


class TimedRuntime(DockerRuntime):
    """``DockerRuntime`` noting when each ``start`` returned and when each stream gave its first line."""

    def __init__(self) -> None:
        super().__init__()
        self.start_s: dict[str, tuple[float, float]] = {}
        self.first_line: dict[str, float] = {}

    async def start(self, spec: ContainerSpec) -> str:
        begun = time.perf_counter()
        container = await super().start(spec)
        self.start_s[container] = (begun, time.perf_counter())
        return container

    async def stream_runs(
        self, container_id: str, since_ns: int | None = None
    ) -> AsyncGenerator[list[LineRun], None]:
        async for batch in super().stream_runs(container_id, since_ns):
            self.first_line.setdefault(container_id, time.perf_counter())
            yield batch


@dataclass(frozen=True)
class Launch:
    """One launch: seconds to the first durable line, and the split of ours."""

    total_s: float
    parts: dict[str, float]


async def launch_ours(lab: Lab, runtime: TimedRuntime) -> Launch:
    job = lab.job()
    durable = lab.first_output.watch(job.worker)
    begun = time.perf_counter()
    task = asyncio.create_task(lab.supervisor.run(job, rung=0))
    done = await asyncio.wait_for(durable, 120)
    outcome = await asyncio.wait_for(task, 120)
    if not outcome.ok:
        raise RuntimeError(f"benchmark worker {job.worker} failed: {outcome.error}")
    container = lab.writer.state.workers[job.worker].container_id or ""
    call, started = runtime.start_s[container]
    first = runtime.first_line[container]
    parts = {"before_start": call - begun, "start": started - call, "to_first_line": first - started,
             "to_durable": done - first}  # fmt: skip
    return Launch(done - begun, parts)


def raw_kwargs(lab: Lab, job: Job) -> dict[str, Any]:
    """create_kwargs of the spec ``job`` gets in the lab (built outside the timed span)."""
    command = get_adapter(job.agent.value).build_command(
        job.prompt, 0, settings=lab.settings.agent(job.agent.value)
    )
    kwargs = create_kwargs(lab.specs(job, command, 1, None))
    kwargs["name"] = None  # the engine names it: the orchestrator's name may be in use
    return kwargs


def launch_raw(client: docker.DockerClient, kwargs: dict[str, Any]) -> Launch:
    begun = time.perf_counter()
    container = client.containers.create(**kwargs)
    try:
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
        container.start()
        first, seen = 0.0, b""
        for chunk in stream:
            seen += chunk
            if not first and b"\n" in seen:
                first = time.perf_counter()
        if not first:
            raise RuntimeError(f"raw container printed nothing: {seen[:200]!r}")
        container.wait(timeout=60)
    finally:
        container.remove(force=True)
    return Launch(first - begun, {})


async def _concurrent_ours(lab: Lab, runtime: TimedRuntime, k: int) -> tuple[list[Launch], float]:
    begun = time.perf_counter()
    launches = await asyncio.gather(*(launch_ours(lab, runtime) for _ in range(k)))
    return list(launches), max(begun + x.total_s for x in launches) - begun


def _concurrent_raw(client: docker.DockerClient, kwargs: list[dict[str, Any]]) -> tuple[list[Launch], float]:
    with ThreadPoolExecutor(len(kwargs)) as pool:
        begun = time.perf_counter()
        futures = [pool.submit(launch_raw, client, k) for k in kwargs]
        launches = [f.result() for f in futures]
    return launches, max(begun + x.total_s for x in launches) - begun


def _rows(label: str, ours: Sequence[Launch], raw: Sequence[Launch]) -> list[Figure]:
    o = Dist.of([x.total_s for x in ours]).scaled(1000)
    r = Dist.of([x.total_s for x in raw]).scaled(1000)
    note = f"n={o.n}; raw = docker-py create+attach+start -> first line, same create kwargs"
    return [
        Figure("B1", f"launch -> durable 1st line p50, {label}", "ms", o.p50, r.p50, RATIO, note),
        Figure("B1", f"launch -> durable 1st line p99, {label}", "ms", o.p99, r.p99, RATIO, note),
    ]


def _parts(launches: Sequence[Launch]) -> dict[str, Any]:
    keys = launches[0].parts.keys() if launches and launches[0].parts else []
    return {key: Dist.of([x.parts[key] for x in launches]).scaled(1000).as_dict() for key in keys}


async def run(engine: BenchEngine, root: Path, quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    """Measure B1 (module docstring); returns the figures and the details for the JSON."""
    config = Config.of(quick)
    runtime = TimedRuntime()
    figures: list[Figure] = []
    details: dict[str, Any] = {
        "config": {"sequential": config.sequential, "concurrent": config.concurrent, "rounds": config.rounds},
    }
    async with open_lab(root, engine.image, lambda _: SCRIPT, engine.labels, runtime=runtime) as lab:
        # one unmeasured launch each: the first docker-py connection and imports are not a launch
        await launch_ours(lab, runtime)
        await asyncio.to_thread(launch_raw, engine.client, raw_kwargs(lab, lab.job()))
        ours: list[Launch] = []
        raw: list[Launch] = []
        for _ in range(config.sequential):
            ours.append(await launch_ours(lab, runtime))
            raw.append(await asyncio.to_thread(launch_raw, engine.client, raw_kwargs(lab, lab.job())))
        figures += _rows("sequential", ours, raw)
        details["sequential"] = {"ours_ms": Dist.of([x.total_s for x in ours]).scaled(1000).as_dict(),
                                 "raw_ms": Dist.of([x.total_s for x in raw]).scaled(1000).as_dict(),
                                 "ours_parts_ms": _parts(ours)}  # fmt: skip
        for k in config.concurrent:
            ours_k: list[Launch] = []
            raw_k: list[Launch] = []
            walls: dict[str, list[float]] = {"ours": [], "raw": []}
            for first in (("ours", "raw", "raw", "ours") * 2)[: 2 * config.rounds[k]]:
                if first == "ours":
                    launches, wall = await _concurrent_ours(lab, runtime, k)
                    ours_k += launches
                else:
                    kwargs = [raw_kwargs(lab, lab.job()) for _ in range(k)]
                    launches, wall = await asyncio.to_thread(_concurrent_raw, engine.client, kwargs)
                    raw_k += launches
                walls[first].append(wall)
            figures += _rows(f"{k} at once", ours_k, raw_k)
            ours_rate = k * len(walls["ours"]) / sum(walls["ours"])
            raw_rate = k * len(walls["raw"]) / sum(walls["raw"])
            figures.append(Figure(
                "B1", f"launches/s, {k} at once", "/s", ours_rate, raw_rate, Target("ratio_min", 0.9),
                "first request -> last first line",
            ))  # fmt: skip
            details[f"concurrent_{k}"] = {
                "ours_ms": Dist.of([x.total_s for x in ours_k]).scaled(1000).as_dict(),
                "raw_ms": Dist.of([x.total_s for x in raw_k]).scaled(1000).as_dict(),
                "ours_parts_ms": _parts(ours_k), "walls_s": walls,
            }  # fmt: skip
    return figures, details
