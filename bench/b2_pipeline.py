"""B2 event pipeline: one container printing L lines -> stored events -> one SSE reader over HTTP.

The worker (python3 in the light image) prints L lines: about 110 B each on stdout, every 100th a
Codex ``patch rejected: writing is blocked by read-only sandbox`` line on stderr (the adapter makes
it ``permission_denied``, the recovery engine judges it: a read-only task's denial, so the worker
goes on), every 1000th a 20 KiB line (Docker splits it into 16 KiB frames; it must come back whole).

Ours: ``Supervisor.run(job)``, the production path: ``DockerRuntime.stream`` -> an ``output_lines``
event per run of lines -> the Codex adapter -> ``monitor_stream`` -> group commit (fsync) -> the real API under
uvicorn in this process -> one SSE reader in another process (``bench.sse_clients``). Lines/s run
from the container's start to the last line durable, and to the last line received by the reader.
Raw: docker-py ``create`` + ``attach`` + ``start`` of the same spec, every line read until the end.
Also shown: raw ``logs(follow)``, the daemon's log path the runtime reads (its ceiling).
Checked, never assumed: every line stored once, intact, in order; seqs gap-free in the file and
on the wire.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import orjson

from api.app import create_app
from api.testing import FakeSessionRunner, serve
from bench.b1_launch import TimedRuntime, raw_kwargs
from bench.engine import BenchEngine
from bench.lab import TURN_COMPLETED, Lab, open_lab
from bench.report import Figure, Target
from bench.sse_clients import Clients
from orchestrator.models import SessionFinished
from orchestrator.supervisor import Job

DENIAL = (
    "2026-11-26T01:22:44.924505Z ERROR codex_core::tools::router: error=patch rejected: "
    "writing is blocked by read-only sandbox; rejected by user approval settings"
)
LONG = 20_000
GENERATOR = f"""
import sys
out, err = sys.stdout.buffer, sys.stderr.buffer
pad, big = b"y" * 80, b"x" * {LONG}
denial = {DENIAL.encode()!r} + b"\\n"
for i in range(N):
    if i % 100 == 50:
        err.write(denial)
    elif i % 1000 == 999:
        out.write(b"%08d " % i + big + b"\\n")
    else:
        out.write(b"%08d line of output " % i + pad + b"\\n")
out.write({TURN_COMPLETED.encode()!r} + b"\\n")
out.flush()
err.flush()
"""


@dataclass(frozen=True)
class Config:
    lines: int

    @classmethod
    def of(cls, quick: bool) -> Config:
        return cls(30_000) if quick else cls(200_000)


def script(lines: int) -> tuple[str, ...]:
    return ("python3", "-c", f"N = {lines}\n{GENERATOR}")


def expected(lines: int) -> tuple[int, int]:
    """(stdout lines incl. the end of turn, stderr lines) the generator prints."""
    denials = sum(1 for i in range(lines) if i % 100 == 50)
    return lines - denials + 1, denials


def verify_log(events_path: Path, worker: str, lines: int) -> dict[str, int]:
    """Every generated line stored once, whole and in order; seqs gap-free. Raises on any loss."""
    seq, events, outputs, denials, indexes = 0, 0, 0, 0, 0
    for raw in events_path.read_bytes().splitlines():
        event = orjson.loads(raw)
        if event["seq"] != seq + 1:
            raise RuntimeError(f"seq gap in the log: {seq} then {event['seq']}")
        seq = event["seq"]
        if event["worker"] != worker or event["type"] != "output_lines":
            denials += event["type"] == "permission_denied"
            continue
        events += 1
        stream, texts = event["data"]["stream"], event["data"]["lines"]
        outputs += len(texts)
        for text in texts:
            if stream != "stdout" or not text[:8].isdigit():
                continue
            index = int(text[:8])
            while indexes % 100 == 50:  # the denials went to stderr
                indexes += 1
            if index != indexes:
                raise RuntimeError(f"stdout line {indexes} expected, stored {index}")
            want = 9 + LONG if index % 1000 == 999 else len(text)
            if len(text) != want:
                raise RuntimeError(f"line {index} stored with {len(text)} characters, printed {want}")
            indexes += 1
    out, err = expected(lines)
    if outputs != out + err or denials != err:
        raise RuntimeError(f"stored {outputs} lines / {denials} denials, printed {out + err} / {err}")
    return {"last_seq": seq, "output_events": events, "outputs": outputs, "denials": denials}


def raw_attach(client: docker.DockerClient, kwargs: dict[str, Any]) -> tuple[int, float]:
    """Lines read through attach (demultiplexed, split into lines) and seconds from start to the last."""
    container = client.containers.create(**kwargs)
    try:
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
        container.start()
        begun = time.monotonic()
        count, rest = 0, [b"", b""]
        for chunks in stream:
            for i, chunk in enumerate(chunks):
                if chunk:
                    *lines, rest[i] = (rest[i] + chunk).split(b"\n")
                    count += len(lines)
        return count, time.monotonic() - begun
    finally:
        container.remove(force=True)


def raw_logs(client: docker.DockerClient, kwargs: dict[str, Any]) -> tuple[int, float]:
    """Lines read through one ``logs(follow, timestamps)`` request of both streams, start to last line.

    With timestamps, as the runtime asks: without them the engine drops the newline of a split line.
    """
    container = client.containers.create(**kwargs)
    try:
        container.start()
        begun = time.monotonic()
        count = 0
        for chunk in client.api.logs(
            container.id, stdout=True, stderr=True, stream=True, follow=True, timestamps=True
        ):
            count += chunk.count(b"\n")
        return count, time.monotonic() - begun
    finally:
        container.remove(force=True)


async def run_ours(lab: Lab, runtime: TimedRuntime, job: Job, lines: int) -> dict[str, Any]:
    flushes: list[tuple[float, int]] = []
    unsubscribe = lab.writer.subscribe(lambda seq: flushes.append((time.monotonic(), seq)))
    runner = FakeSessionRunner(lab.settings)
    runner.writers[lab.paths.session_id] = lab.writer
    try:
        async with serve(create_app(lab.settings, runner)) as base:
            url = f"{base}/api/sessions/{lab.paths.session_id}/stream?after={lab.writer.last_seq}"
            clients = await Clients.spawn(url, 1)
            outcome = await lab.supervisor.run(job, rung=0)
            lab.writer.emit("orchestrator", SessionFinished(status="succeeded" if outcome.ok else "failed"))
            await lab.writer.commit()
            reader = (await clients.results())[0]
            runner.writers.clear()  # the lab owns the writer: the server must not close it
    finally:
        unsubscribe()
    if not outcome.ok:
        raise RuntimeError(f"the pipeline's worker failed: {outcome.error}")
    container = lab.writer.state.workers[job.worker].container_id or ""
    started = runtime.start_s[container][1]
    checked = verify_log(lab.paths.events, job.worker, lines)
    last_output = max(seq for seq in _output_seqs(lab.paths.events, job.worker))
    durable_at = next(at for at, seq in flushes if seq >= last_output)
    if reader["gaps"] or reader["types"].get("output_lines", 0) != checked["output_events"]:
        raise RuntimeError(f"the SSE reader got {reader['types']} with {reader['gaps']} gaps")
    # the runtime stamps ``start_s`` with perf_counter, the reader with monotonic: one clock on Linux
    return {"durable_s": durable_at - started, "sse_s": reader["last_at"]["output_lines"] - started,
            "checked": checked, "reader": {k: reader[k] for k in ("count", "first_id", "last_id", "gaps", "process_cpu_s")}}  # fmt: skip


def _output_seqs(path: Path, worker: str) -> list[int]:
    seqs = []
    for raw in path.read_bytes().splitlines():
        if b'"type":"output_lines"' in raw and f'"worker":"{worker}"'.encode() in raw:
            seqs.append(orjson.loads(raw)["seq"])
    return seqs


async def run(engine: BenchEngine, root: Path, quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    """Measure B2 (module docstring)."""
    config = Config.of(quick)
    lines = config.lines
    runtime = TimedRuntime()
    async with open_lab(root, engine.image, lambda _: script(lines), engine.labels, runtime=runtime) as lab:
        kwargs = raw_kwargs(lab, lab.job())
        attach_n, attach_s = await asyncio.to_thread(raw_attach, engine.client, kwargs)
        ours = await run_ours(lab, runtime, lab.job(), lines)
        logs_n, logs_s = await asyncio.to_thread(raw_logs, engine.client, raw_kwargs(lab, lab.job()))
    total = sum(expected(lines))
    if attach_n != total:
        raise RuntimeError(f"raw attach read {attach_n} lines, the worker printed {total}")
    # a bare follow may end before the engine stored the last lines (the runtime reads again): its
    # rate counts what it got
    attach_rate, logs_rate = total / attach_s, logs_n / logs_s
    note = f"{total:,} lines (1% denials, 0.1% of 20 KiB); raw = docker-py attach, same spec"
    figures = [
        Figure("B2", "lines/s to durable JSONL", "lines/s", total / ours["durable_s"], attach_rate, None, note),
        Figure("B2", "lines/s to the SSE reader (HTTP)", "lines/s", total / ours["sse_s"], attach_rate,
               Target("ratio_min", 0.6), note + "; zero loss, gap-free seq checked"),
        Figure("B2", "lines/s to the SSE reader vs logs(follow)", "lines/s", total / ours["sse_s"], logs_rate, None,
               "raw = one docker-py logs(follow) of the same spec: the daemon's log path the runtime reads"),
        Figure("B2", "raw logs(follow) lines/s (daemon ceiling)", "lines/s", logs_rate, attach_rate, None,
               "the daemon's log path, which the runtime reads"),
    ]  # fmt: skip
    details = {"config": {"lines": lines}, "ours": ours, "raw_attach_s": attach_s, "raw_logs_s": logs_s,
               "raw_logs_lines": logs_n}  # fmt: skip
    return figures, details
