"""B5 scale: the orchestrator's RSS and CPU with 1, 10 and 32 live workers printing a line a second.

Ours: workers run through ``Supervisor.run`` on ``DockerRuntime`` (stream threads, adapter, recovery
checks, group commit), as many as the level asks, all in one session. Raw: the same containers
started with docker-py, each read by one thread on ``attach`` (the minimum a follower costs).
Each side runs in its own subprocess (``python -m bench.b5_scale ours|raw ...``) so its RSS is its
own: after start-up it adds workers level by level, lets them settle, then samples RSS and CPU
time every half second. The slope of RSS over the worker count is the cost per worker; RSS after
every worker stopped shows whether it falls back (no growth left behind).
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker

from bench.engine import BENCH_LABEL, BenchEngine
from bench.report import Figure, Target
from bench.stats import slope

TICKER = ("sh", "-c", 'i=0; while :; do i=$((i+1)); echo "tick $i of a benchmark worker"; sleep 1; done')
MIB = 1024


@dataclass(frozen=True)
class Config:
    levels: tuple[int, ...]
    settle_s: float
    sample_s: float

    @classmethod
    def of(cls, quick: bool) -> Config:
        return cls((1, 4, 8), 0.5, 1.5) if quick else cls((1, 10, 32), 5.0, 15.0)


@dataclass(frozen=True)
class Level:
    workers: int
    rss_kib: float
    cpu_pct: float  # of one core


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def sample(config: Config, workers: int) -> Level:
    await asyncio.sleep(config.settle_s)
    cpu0, wall0 = cpu_s(), time.monotonic()
    values = []
    while time.monotonic() - wall0 < config.sample_s:
        await asyncio.sleep(0.5)
        values.append(rss_kib())
    return Level(workers, sum(values) / len(values), (cpu_s() - cpu0) / (time.monotonic() - wall0) * 100)


async def ladder(config: Config, add: Callable[[int], Awaitable[None]]) -> list[Level]:
    levels = [await sample(config, 0)]
    running = 0
    for target in config.levels:
        await add(target - running)
        running = target
        levels.append(await sample(config, running))
    return levels


async def child_ours(config: Config, root: Path, image: str, run_id: str) -> dict[str, Any]:
    from bench.lab import open_lab  # the raw child must not import the orchestrator's runtime

    async with open_lab(root, image, lambda _: TICKER, {BENCH_LABEL: run_id}) as lab:
        tasks: list[asyncio.Task[Any]] = []

        async def add(count: int) -> None:
            firsts = []
            for _ in range(count):
                job = lab.job()
                firsts.append(lab.first_output.watch(job.worker))
                tasks.append(asyncio.create_task(lab.supervisor.run(job, rung=0)))
            await asyncio.wait_for(asyncio.gather(*firsts), 300)

        levels = await ladder(config, add)
        live = sum(1 for w in lab.writer.state.workers.values() if w.events >= config.sample_s / 2)
        await lab.supervisor.stop_all(1.0)
        outcomes = await asyncio.gather(*tasks)
        if not all(o.stopped for o in outcomes):
            raise RuntimeError(f"workers ended otherwise than stopped: {[o.error for o in outcomes]}")
        after = await sample(config, 0)
    return {"levels": [asdict(x) for x in levels], "after": asdict(after), "live": live}


async def child_raw(config: Config, image: str, run_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    client = docker.from_env(max_pool_size=128)
    containers: list[Any] = []
    counts: list[int] = []
    lock = threading.Lock()

    def follow(index: int, stream: Any) -> None:
        for chunk in stream:
            counts[index] += chunk.count(b"\n")

    def start_one() -> None:
        container = client.containers.create(**kwargs)
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
        container.start()
        with lock:
            counts.append(0)
            containers.append(container)
            index = len(containers) - 1
        threading.Thread(target=follow, args=(index, stream), daemon=True).start()

    async def add(count: int) -> None:
        await asyncio.gather(*(asyncio.to_thread(start_one) for _ in range(count)))

    try:
        levels = await ladder(config, add)
        live = sum(1 for c in counts if c >= config.sample_s / 2)
    finally:
        for container in containers:
            await asyncio.to_thread(container.remove, force=True)
    after = await sample(config, 0)
    client.close()
    return {"levels": [asdict(x) for x in levels], "after": asdict(after), "live": live}


def _raw_kwargs(image: str, run_id: str) -> dict[str, Any]:
    """The raw side's containers: the light image and the ticker, hardened as the orchestrator does."""
    return {"image": image, "command": list(TICKER), "user": "1000:1000", "read_only": True, "init": True,
            "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"], "network_mode": "none",
            "mem_limit": 2 * 1024**3, "nano_cpus": 10**9, "pids_limit": 256, "labels": {BENCH_LABEL: run_id},
            "detach": True}  # fmt: skip


def measure(side: str, quick: bool, root: Path, engine: BenchEngine) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.b5_scale", side, "1" if quick else "0", str(root), engine.image,
            engine.run_id]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False,
                          cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"B5 {side} subprocess failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _slope(levels: list[dict[str, Any]]) -> float:
    points = [x for x in levels if x["workers"] > 0]
    return slope([x["workers"] for x in points], [x["rss_kib"] for x in points])


async def run(engine: BenchEngine, root: Path, quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    """Measure B5 (module docstring)."""
    config = Config.of(quick)
    ours = await asyncio.to_thread(measure, "ours", quick, root / "ours", engine)
    raw = await asyncio.to_thread(measure, "raw", quick, root / "raw", engine)
    most = config.levels[-1]
    for side, found in (("ours", ours), ("raw", raw)):
        if found["live"] != most:
            raise RuntimeError(f"{side}: {found['live']} of {most} workers were streaming during the samples")
    top_o, top_r = ours["levels"][-1], raw["levels"][-1]
    base_o, base_r = ours["levels"][0], raw["levels"][0]
    figures = [
        Figure("B5", "RSS per live worker (slope)", "KiB", _slope(ours["levels"]), _slope(raw["levels"]),
               Target("max", 1024.0), f"levels {', '.join(map(str, config.levels))}; raw = docker-py attach, a thread each"),
        Figure("B5", f"RSS above idle, {most} workers", "MiB", (top_o["rss_kib"] - base_o["rss_kib"]) / MIB,
               (top_r["rss_kib"] - base_r["rss_kib"]) / MIB, None, "idle = the process before its first worker"),
        Figure("B5", f"CPU, {most} workers (1 line/s each)", "% core", top_o["cpu_pct"], top_r["cpu_pct"],
               Target("max", 50.0), f"{most} workers on {engine.info().get('NCPU', '?')} cores"),
        Figure("B5", "RSS change once all stopped", "MiB", (ours["after"]["rss_kib"] - top_o["rss_kib"]) / MIB,
               None, None, f"vs the top level (≤ 0: falls back); raw {(raw['after']['rss_kib'] - top_r['rss_kib']) / MIB:+.2f} MiB"),
    ]  # fmt: skip
    return figures, {"config": asdict(config), "ours": ours, "raw": raw}


def _child_main(argv: list[str]) -> dict[str, Any]:
    side, quick, root, image, run_id = argv
    config = Config.of(quick == "1")
    if side == "ours":
        from orchestrator.log import configure_logging

        configure_logging(level="warning")
        return asyncio.run(child_ours(config, Path(root), image, run_id))
    return asyncio.run(child_raw(config, image, run_id, _raw_kwargs(image, run_id)))


if __name__ == "__main__":
    print(json.dumps(_child_main(sys.argv[1:])))
