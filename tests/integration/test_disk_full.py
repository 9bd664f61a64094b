"""Disk full while appending: a clear error, a readable log, nothing lost once space is freed.

A real tmpfs of 1 MiB holds the workspace (mounting needs root, as CI has; the Docker engine the
integration tier needs is root's too).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import StoreFull
from orchestrator.models import EventDraft, Output
from orchestrator.paths import SessionPaths
from orchestrator.store import EventReader, EventWriter


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_clear_error_and_the_log_stays_whole(small_disk: Path) -> None:
    """StoreFull names the fix; readers see a gap-free log; after freeing space the same writer and a
    resumed one continue with nothing lost."""
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * 600_000)
    paths = SessionPaths.of(small_disk, "sess0001")
    writer = EventWriter.open(paths, snapshot_every=10_000_000)
    appended = 0
    with pytest.raises(StoreFull, match="free space in the workspace"):
        for _ in range(100_000):
            writer.append(EventDraft.of("codex-t1", Output(stream="stdout", line="y" * 500), "t1"))
            appended += 1
            if appended % 20 == 0:
                writer.flush()
    stored = [e.seq for e in EventReader(paths).read()]
    assert stored == list(range(1, len(stored) + 1))
    assert paths.events.read_bytes().endswith(b"\n")
    assert writer.pending == appended - len(stored)
    filler.unlink()
    assert writer.flush() == appended
    writer.close()
    with EventWriter.open(paths) as resumed:
        assert (
            resumed.append(EventDraft.of("codex-t1", Output(stream="stdout", line="after"), "t1")).seq
            == appended + 1
        )
    assert [e.seq for e in EventReader(paths).read()] == list(range(1, appended + 2))
