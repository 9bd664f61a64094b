"""B4 resume: rebuild a session's state from its log, 10k / 100k / 1M events.

Ours: ``EventReader.rebuild()``: the snapshot plus the tail after it. The log is left as a crash
leaves it at worst: the snapshot (written every ``snapshot_every`` = 10,000 events) lags the log by
9,999 events, so the tail is as long as it ever gets. Raw: a full re-parse of every line with the
same JSON parser the store uses (pydantic's ``model_validate_json``) folded into a fresh state.
Each measurement runs in a fresh subprocess (page cache warm), which reports its time and its peak
RSS above what it had before the call (``VmHWM`` - ``VmRSS``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from bench.engine import BenchEngine
from bench.report import Figure, Target
from orchestrator.models import SessionCreated, SessionState, apply
from orchestrator.models import events as ev
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.store import EventReader, EventWriter, iter_lines, parse_line

TAIL = 9_999
WORKERS = 4
TIME_TARGET = Target("max", 0.5)


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, quick: bool) -> Config:
        return cls((10_000, 100_000)) if quick else cls((10_000, 100_000, 1_000_000))


def _draft(i: int) -> ev.EventDraft:
    """Event ``i`` of a generated session: mostly output lines, some messages, tool calls, usage."""
    worker = f"codex-t{i % WORKERS}"
    data: ev.EventData
    if i % 50 == 0:
        data = ev.ToolCall.model_construct(
            tool="exec_command", input={"cmd": f"pytest -k case_{i}"}, call_id=f"c{i}"
        )
    elif i % 50 == 1:
        data = ev.Message.model_construct(
            role="assistant", text=f"Step {i}: the tests pass; moving on to the next file."
        )
    elif i % 500 == 2:
        data = ev.Usage.model_construct(
            input_tokens=1200, output_tokens=300, cost_usd=0.002, cached_input_tokens=0
        )
    else:
        line = (
            f"{i:08d} compiling module_{i % 997}.py ... ok (build step of the task, with some padding text)"
        )
        data = ev.Output.model_construct(stream="stdout", line=line)
    kind = cast(ev.EventType, ev.TYPE_OF[type(data)])
    return ev.EventDraft.model_construct(worker=worker, task_id=f"t{i % WORKERS}", type=kind, data=data)


def _write(paths: SessionPaths, start: int, count: int, *, first: bool) -> None:
    with EventWriter.open(paths) as writer:
        if first:
            writer.emit("orchestrator", SessionCreated(prompt="generated session", repo="/repo"))
        for i in range(start, start + count):
            writer.append(_draft(i))
            if i % 5000 == 4999:
                writer.flush()


def generate(workspace: Path, size: int) -> SessionPaths:
    """A session of ``size`` events whose snapshot lags the log by ``TAIL`` events (a crash's worst)."""
    paths = SessionPaths.of(workspace, new_session_id())
    head = size - 1 - TAIL  # the session_created event counts
    _write(paths, 0, head, first=True)
    lagging = paths.snapshot.read_bytes()
    _write(paths, head, TAIL, first=False)
    paths.snapshot.write_bytes(lagging)
    return paths


def full_rebuild(paths: SessionPaths) -> SessionState:
    """The baseline: every line parsed as the store parses it, folded into a fresh state."""
    state = SessionState()
    for line, _ in iter_lines(paths.events):
        event = parse_line(line)
        if event is not None:
            apply(state, event)
    return state


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(variant: str, workspace: str, session_id: str) -> dict[str, Any]:
    """In the subprocess: rebuild one way; seconds, peak RSS growth (KiB) and the seq reached."""
    paths = SessionPaths.of(workspace, session_id)
    before = _rss_kib("VmRSS")
    begun = time.perf_counter()
    state = EventReader(paths).rebuild()[0] if variant == "ours" else full_rebuild(paths)
    seconds = time.perf_counter() - begun
    return {"seconds": seconds, "peak_kib": _rss_kib("VmHWM") - before, "last_seq": state.last_seq}


def measure(variant: str, paths: SessionPaths) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.b4_resume", variant, str(paths.workspace), paths.session_id],
        capture_output=True, text=True, timeout=900, check=False, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"rebuild subprocess ({variant}) failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def run(engine: BenchEngine, root: Path, quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    """Measure B4 (module docstring); the engine is not used (no containers)."""
    del engine
    config = Config.of(quick)
    figures: list[Figure] = []
    details: dict[str, Any] = {"config": {"sizes": config.sizes, "tail": TAIL}}
    for size in config.sizes:
        begun = time.perf_counter()
        paths = generate(root / f"s{size}", size)
        generated_s = time.perf_counter() - begun
        ours, full = measure("ours", paths), measure("full", paths)
        if ours["last_seq"] != size or full["last_seq"] != size:
            raise RuntimeError(
                f"rebuild of {size} events reached seq {ours['last_seq']} / {full['last_seq']}"
            )
        label = f"{size // 1000}k" if size < 1_000_000 else f"{size // 1_000_000}M"
        note = f"tail {TAIL} events after the snapshot; raw = full re-parse (pydantic) + fold"
        figures.append(Figure("B4", f"rebuild state, {label} events", "s", ours["seconds"], full["seconds"],
                              TIME_TARGET, note))  # fmt: skip
        figures.append(Figure("B4", f"rebuild peak RSS growth, {label} events", "MiB", ours["peak_kib"] / 1024,
                              full["peak_kib"] / 1024, None, "above the process's RSS before the call"))  # fmt: skip
        details[label] = {"ours": ours, "full": full, "log_bytes": paths.events.stat().st_size,
                          "generate_s": round(generated_s, 1)}  # fmt: skip
    peaks = [details[k]["ours"]["peak_kib"] / 1024 for k in details if k != "config"]
    figures.append(Figure("B4", "rebuild peak RSS, largest - smallest session", "MiB", max(peaks) - min(peaks), None,
                          Target("max", 16.0), "flat memory: growth with session length"))  # fmt: skip
    return figures, details


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2], sys.argv[3])))
