"""B3 SSE fan-out: 1, 10 and 100 readers of one session at 100 events/s; append -> receipt latency.

Ours: the real API (``create_app``) under a real uvicorn on loopback, in this process, with the
session live in it (its ``EventWriter`` wakes the readers; group commit by ``run_flusher``). Each
event is an ``output`` event whose line carries ``t=<CLOCK_MONOTONIC>`` taken just before
``writer.emit``, so the latency covers append, group commit + fsync, the reader's read of the log,
the SSE encoding and the socket. Raw: a bare ``EventSourceResponse`` route fanning the same JSON out
through one ``asyncio.Queue`` per reader (sse-starlette's own pattern), same server, same rate.
The readers run in another process (``bench.sse_clients``) and use the same clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.app import create_app
from api.testing import FakeSessionRunner, serve
from bench.engine import BenchEngine
from bench.lab import bench_settings
from bench.report import Figure, Target
from bench.sse_clients import Clients
from bench.stats import Dist
from orchestrator.models import events as ev
from orchestrator.models import utcnow

RATE = 100.0
PAD = "x" * 80
TARGETS = {10: Target("max", 10.0), 100: Target("max", 50.0)}


@dataclass(frozen=True)
class Config:
    readers: tuple[int, ...]
    seconds: float
    rounds: int  # runs per side and reader count, in ABBA order (a load spike hits both sides)

    @classmethod
    def of(cls, quick: bool) -> Config:
        return cls((1, 10, 100), 2.0, 1) if quick else cls((1, 10, 100), 5.0, 2)


def line(i: int) -> str:
    """An output line of ~150 bytes stamped with the current CLOCK_MONOTONIC time."""
    return f"t={time.monotonic():.6f} event {i:06d} of the fan-out benchmark {PAD}"


async def publish(emit: Callable[[int], object], count: int) -> float:
    """Call ``emit(i)`` ``count`` times at ``RATE`` per second on a fixed schedule; returns the seconds taken."""
    begun = time.monotonic()
    for i in range(count):
        delay = begun + i / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        emit(i)
    return time.monotonic() - begun


async def run_ours(root: Path, readers: int, count: int) -> list[dict[str, Any]]:
    settings = bench_settings(root)
    runner = FakeSessionRunner(settings)
    async with serve(create_app(settings, runner)) as base:
        session = await runner.create()
        writer = runner.writers[session]
        flusher = asyncio.ensure_future(writer.run_flusher(settings.flush_interval_s))
        clients = await Clients.spawn(
            f"{base}/api/sessions/{session}/stream?after={writer.last_seq}", readers
        )
        try:
            await publish(
                lambda i: writer.emit("codex-t1", ev.Output(stream="stdout", line=line(i)), "t1"), count
            )
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await runner.finish(session)
        return await clients.results()


class Hub:
    """The raw fan-out: one bounded queue per reader."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[ServerSentEvent]] = set()

    def publish(self, message: ServerSentEvent) -> None:
        for queue in self.queues:
            queue.put_nowait(message)

    async def follow(self) -> AsyncIterator[ServerSentEvent]:
        queue: asyncio.Queue[ServerSentEvent] = asyncio.Queue(maxsize=10_000)
        self.queues.add(queue)
        try:
            while True:
                message = await queue.get()
                yield message
                if message.event == "end":
                    return
        finally:
            self.queues.discard(queue)


def raw_app(hub: Hub) -> FastAPI:
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> EventSourceResponse:
        return EventSourceResponse(hub.follow())

    return app


def raw_message(i: int) -> ServerSentEvent:
    """The same JSON an ``output`` event has on the wire, built without the store."""
    body = {"seq": i + 2, "ts": utcnow().isoformat(), "session_id": "raw0000000", "worker": "codex-t1",
            "task_id": "t1", "type": "output", "data": {"stream": "stdout", "line": line(i)}}  # fmt: skip
    return ServerSentEvent(data=orjson.dumps(body).decode(), event="output", id=str(i + 2))


async def run_raw(readers: int, count: int) -> list[dict[str, Any]]:
    hub = Hub()
    async with serve(raw_app(hub)) as base:
        clients = await Clients.spawn(f"{base}/stream", readers)
        try:
            await publish(lambda i: hub.publish(raw_message(i)), count)
        finally:
            hub.publish(ServerSentEvent(data="{}", event="end"))
        return await clients.results()


def _check(results: list[dict[str, Any]], count: int, who: str) -> None:
    for reader in results:
        got = reader["types"].get("output", 0)
        if got != count or reader["gaps"]:
            raise RuntimeError(f"{who}: a reader got {got} of {count} events with {reader['gaps']} gaps")


def _latency(results: list[dict[str, Any]]) -> Dist:
    return Dist.of([ms for reader in results for ms in reader["latencies_ms"]])


async def run(engine: BenchEngine, root: Path, quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    """Measure B3 (module docstring); the engine is not used (no containers)."""
    del engine
    config = Config.of(quick)
    count = int(config.seconds * RATE)
    figures: list[Figure] = []
    details: dict[str, Any] = {
        "config": {"readers": config.readers, "rate": RATE, "events": count, "rounds": config.rounds}
    }
    for readers in config.readers:
        ours: list[dict[str, Any]] = []
        raw: list[dict[str, Any]] = []
        for i, side in enumerate((("ours", "raw", "raw", "ours") * 2)[: 2 * config.rounds]):
            if side == "ours":
                ours += await run_ours(root / f"r{readers}-{i}", readers, count)
            else:
                raw += await run_raw(readers, count)
        _check(ours, count, "ours")
        _check(raw, count, "raw")
        o, r = _latency(ours), _latency(raw)
        note = f"{config.rounds} x {readers} x {count} deliveries, none lost; raw = bare sse-starlette + queue per reader"
        figures.append(
            Figure("B3", f"append -> receipt p50, {readers} readers", "ms", o.p50, r.p50, None, note)
        )
        figures.append(Figure("B3", f"append -> receipt p99, {readers} readers", "ms", o.p99, r.p99,
                              TARGETS.get(readers), note))  # fmt: skip
        details[f"readers_{readers}"] = {"ours_ms": o.as_dict(), "raw_ms": r.as_dict()}
    return figures, details
