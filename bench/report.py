"""The results of a run: figures with their baselines and targets, the machine, the table, the files.

A ``Figure`` is one measured number of the orchestrator (``ours``) beside the same number on the raw
path (``baseline``), measured in the same run; ``ratio`` is ``ours / baseline``. Its ``Target`` says
which of the two is judged (the ratio or the absolute value) and against what bound, so ``met`` is
computed, never typed in. ``write_results`` stores a run as JSON; ``update_readme`` puts its table
between the markers of ``bench/README.md``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

TargetKind = Literal["ratio_max", "ratio_min", "max", "min"]
README_START = "<!-- bench:table:start -->"
README_END = "<!-- bench:table:end -->"
LIBRARIES = ("docker", "pydantic", "orjson", "fastapi", "starlette", "sse-starlette", "uvicorn", "httpx")


@dataclass(frozen=True)
class Target:
    """A bound on the ratio (``ratio_max``/``ratio_min``) or on ``ours`` itself (``max``/``min``)."""

    kind: TargetKind
    bound: float

    def text(self, unit: str) -> str:
        symbol = "≤" if self.kind in ("ratio_max", "max") else "≥"
        if self.kind.startswith("ratio"):
            return f"ratio {symbol} {self.bound:g}"
        return f"{symbol} {self.bound:g} {unit}"

    def met(self, ours: float | None, ratio: float | None) -> bool | None:
        """Whether the figure meets the bound; None when the judged number was not measured."""
        value = ratio if self.kind.startswith("ratio") else ours
        if value is None:
            return None
        return value <= self.bound if self.kind in ("ratio_max", "max") else value >= self.bound


@dataclass(frozen=True)
class Figure:
    """One row of the table (see the module docstring); ``note`` says what the baseline is."""

    bench: str
    name: str
    unit: str
    ours: float | None
    baseline: float | None = None
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.ours, self.ratio)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench, "name": self.name, "unit": self.unit, "ours": self.ours,
            "baseline": self.baseline, "ratio": self.ratio,
            "target": None if self.target is None else {"kind": self.target.kind, "bound": self.target.bound,
                                                        "text": self.target.text(self.unit)},
            "met": self.met, "note": self.note,
        }  # fmt: skip


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def _met(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "—"}[value]


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"  # noqa: RUF001 - the multiplication sign is meant


def rows(figures: Sequence[Figure]) -> list[list[str]]:
    """The table as text cells: figure, ours, baseline, ratio, target, met?"""
    header = ["figure", "ours", "baseline", "ratio", "target", "met?"]
    body = [
        [
            f"{f.bench} {f.name}",
            _number(f.ours, f.unit),
            _number(f.baseline, f.unit),
            _ratio(f.ratio),
            "—" if f.target is None else f.target.text(f.unit),
            _met(f.met),
        ]
        for f in figures
    ]
    return [header, *body]


def render_text(figures: Sequence[Figure]) -> str:
    """The table with aligned columns, for the terminal."""
    table = rows(figures)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(figures: Sequence[Figure], machine: dict[str, Any], when: str, mode: str) -> str:
    """The table as Markdown, preceded by the machine it ran on."""
    table = rows(figures)
    lines = [
        f"Run of {when} ({mode}) on: {machine.get('cpu_model', '?')}, {machine.get('cores', '?')} cores, "
        f"{machine.get('ram_gib', '?')} GiB RAM, Docker {machine.get('docker_version', '?')} "
        f"({machine.get('storage_driver', '?')}, cgroup v{machine.get('cgroup_version', '?')}), "
        f"Python {machine.get('python', '?')}, kernel {machine.get('kernel', '?')}; load average (1 min) "
        f"{_load(machine, 'load_avg_at_start')} at the start, {_load(machine, 'load_avg_at_end')} at the end "
        "(the machine is shared).",
        "",
        "| " + " | ".join(table[0]) + " |",
        "|" + "|".join("---" for _ in table[0]) + "|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table[1:]]
    return "\n".join(lines)


def _load(machine: dict[str, Any], key: str) -> str:
    found = machine.get(key)
    return f"{found[0]:.1f}" if isinstance(found, list) and found else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        found = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        return None
    return round(int(found.group(1)) / 1024**2, 1) if found else None


def machine(docker_info: dict[str, Any]) -> dict[str, Any]:
    """What the results depend on: CPU, cores, RAM, kernel, Docker, Python and library versions."""
    libraries: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libraries[name] = "absent"
    return {
        "cpu_model": _cpu_model(), "cores": os.cpu_count(), "ram_gib": _ram_gib(),
        "kernel": platform.release(), "python": platform.python_version(),
        "docker_version": docker_info.get("ServerVersion"), "storage_driver": docker_info.get("Driver"),
        "cgroup_version": docker_info.get("CgroupVersion"), "logging_driver": docker_info.get("LoggingDriver"),
        "load_avg_at_start": list(os.getloadavg()), "libraries": libraries, "commit": _commit(),
    }  # fmt: skip


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5, cwd=Path(__file__).parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


@dataclass
class Results:
    """One run: its mode, machine, figures and the per-benchmark details (distributions, counts)."""

    mode: str
    machine: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    when: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "when": self.when, "mode": self.mode, "machine": self.machine,
            "figures": [f.as_dict() for f in self.figures], "details": self.details, "errors": self.errors,
        }  # fmt: skip


def write_results(results: Results, path: Path) -> None:
    """Store ``results`` as JSON at ``path`` (through a temp file, so a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results.as_dict(), indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def update_readme(readme: Path, markdown: str) -> bool:
    """Replace the text between the table markers of ``readme``; False when the markers are missing."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start == -1 or end == -1 or end < start:
        return False
    readme.write_text(text[: start + len(README_START)] + "\n" + markdown + "\n" + text[end:])
    return True
