"""``python -m bench.stages [LINES]``: the per-line cost of each stage of the B2 pipeline, alone.

No Docker: the stages run on lines made here (about 110 B each), one core, in this process. It
prints microseconds per line for the raw attach reader's own work (split 64 KiB chunks), the
runtime's runs of lines (``AttachLines``), the Codex adapter on a plain line (one ``parse_line`` each, and
``parse_lines`` on the runtime's batches), storing (``append_output`` with group commit and the state fold)
and the SSE messages of stored events (``Recent.sse``, a run at once, as the fan-out writes them),
per line they hold.
Where B2's time goes.
"""

from __future__ import annotations

import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.agents import get_adapter
from orchestrator.paths import SessionPaths
from orchestrator.runtime.batches import BATCH
from orchestrator.runtime.lines import AttachLines
from orchestrator.runtime.spec import LineRun
from orchestrator.store import EventWriter

CHUNK = 64 * 1024


def timed(label: str, lines: int, work: Callable[[], object]) -> float:
    begun = time.perf_counter()
    work()
    per_line = (time.perf_counter() - begun) / lines * 1e6
    print(f"{label:56s} {per_line:6.2f} us/line")
    return per_line


def main(lines: int) -> None:
    texts = [f"{i:08d} line of output " + "y" * 80 for i in range(lines)]
    blob = ("\n".join(texts) + "\n").encode()
    chunks = [blob[k : k + CHUNK] for k in range(0, len(blob), CHUNK)]

    def raw_split() -> int:
        rest, count = b"", 0
        for chunk in chunks:
            *done, rest = (rest + chunk).split(b"\n")
            count += len(done)
        return count

    framed = [struct.pack(">B3xL", 1, len(chunk)) + chunk for chunk in chunks]  # attach's stdout frames
    made: list[LineRun] = []

    def runtime_lines() -> None:
        assembler = AttachLines()
        for chunk in framed:
            made.extend(assembler.feed(chunk, time.time_ns()))

    parser = get_adapter("codex").parser()
    batches = [texts[start : start + BATCH] for start in range(0, lines, BATCH)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        EventWriter.open(SessionPaths.of(Path(tmp), "stages01")) as writer,
    ):

        def store() -> None:
            for start in range(0, lines, BATCH):
                writer.append_output("codex-t1", "t1", "stdout", texts[start : start + BATCH])
                if start % (BATCH * 8) == 0:
                    writer.flush()
            writer.flush()

        timed("raw attach reader: split 64 KiB chunks", lines, raw_split)
        timed("runtime: attach frames -> runs of lines", lines, runtime_lines)
        timed(
            "adapter: Codex parse_line, plain line",
            lines,
            lambda: [parser.parse_line("stdout", t) for t in texts],
        )
        timed(
            f"adapter: Codex parse_lines, batches of {BATCH} plain lines",
            lines,
            lambda: [parser.parse_lines("stdout", batch) for batch in batches],
        )
        timed("store: append_output + group commit + fold", lines, store)
        kept = writer.recent(max(writer.last_seq - 50, 0))
        if kept is None:
            raise RuntimeError("the writer no longer holds its last 50 events")
        timed(
            "SSE: the messages of stored lines, a run at once", min(len(kept) * BATCH, lines) or 1, kept.sse
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
