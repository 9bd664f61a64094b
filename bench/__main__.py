"""``python -m bench [b1 ... b5] [--quick] [--out PATH]``: run benchmarks, print the table, store it.

Without names every benchmark runs. A full run (all five, not ``--quick``) writes
``bench/results/latest.json`` and the table in ``bench/README.md`` and the project README; any other run writes
``build/bench/<quick|partial>.json`` unless ``--out`` says where. Exit status: 0 when every chosen
benchmark ran (missed targets are figures, not failures), 1 when one of them failed, 2 for a bad
command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench import b1_launch, b2_pipeline, b3_fanout, b4_resume, b5_scale
from bench.engine import BenchEngine, BenchSetupError, open_engine
from bench.lab import bench_settings
from bench.report import Results, machine, render_markdown, render_text, update_readme, write_results
from orchestrator import gc_tuning
from orchestrator.errors import OrchestratorError
from orchestrator.log import configure_logging

Bench = Callable[[BenchEngine, Path, bool], Awaitable[tuple[list[Any], dict[str, Any]]]]
BENCHES: dict[str, tuple[str, Bench]] = {
    "b1": ("launch overhead", b1_launch.run),
    "b2": ("event pipeline", b2_pipeline.run),
    "b3": ("SSE fan-out", b3_fanout.run),
    "b4": ("resume", b4_resume.run),
    "b5": ("scale", b5_scale.run),
}
HERE = Path(__file__).resolve().parent
LATEST = HERE / "results" / "latest.json"
READMES = (HERE / "README.md", HERE.parent / "README.md")  # the benchmarks' own, and the project's


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line; unknown benchmark names exit 2 with the list of known ones."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n", 1)[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="small and fast configuration (CI)")
    parser.add_argument("--out", type=Path, help="where to write the JSON results")
    args = parser.parse_args(argv)
    names = [name.lower() for name in args.names]
    unknown = [name for name in names if name not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(map(repr, unknown))}: choose from {', '.join(BENCHES)}")
    args.names = [name for name in BENCHES if name in names] or list(BENCHES)
    return args


def output_path(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return Path(args.out)
    if not args.quick and args.names == list(BENCHES):
        return LATEST
    return HERE.parent / "build" / "bench" / ("quick.json" if args.quick else "partial.json")


async def run(args: argparse.Namespace) -> Results:
    """Run the chosen benchmarks one after the other, each in its own temp folder."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        settings = bench_settings(Path(tmp))
        with open_engine(settings) as engine:
            results = Results(mode="quick" if args.quick else "full", machine=machine(engine.info()))
            for name in args.names:
                title, bench = BENCHES[name]
                print(f"== {name.upper()} {title} ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                root = Path(tmp) / name
                root.mkdir()
                try:
                    figures, details = await bench(engine, root, args.quick)
                except Exception as err:  # one benchmark failing must not hide the others' figures
                    traceback.print_exc()
                    results.errors[name] = f"{type(err).__name__}: {err}"
                    continue
                finally:
                    engine.remove_all()
                details["seconds"] = round(time.monotonic() - started, 1)
                results.figures += figures
                results.details[name] = details
                print(render_text(figures), file=sys.stderr, flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(level="warning")
    gc_tuning.tune()  # as ``orchestrate run``/``serve`` do: ours runs in this process
    try:
        results = asyncio.run(run(args))
    except (BenchSetupError, OrchestratorError) as err:
        print(f"bench: {err}", file=sys.stderr)
        return 1
    results.machine["load_avg_at_end"] = list(os.getloadavg())
    out = output_path(args)
    write_results(results, out)
    print(render_text(results.figures))
    for name, error in results.errors.items():
        print(f"{name}: FAILED: {error}")
    print(f"results: {out}")
    if out == LATEST and not results.errors:
        table = render_markdown(results.figures, results.machine, results.when, results.mode)
        for readme in READMES:
            update_readme(readme, table)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
