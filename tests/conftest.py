"""Shared fixtures.

Integration tests (marker ``integration``) need a Docker engine. Outside CI they are skipped with a
reason when none answers; under ``CI=true`` a missing engine is a failure, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.config import Settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def docker_answers() -> bool:
    import docker

    try:
        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker engine answers (fails under CI=true when it does not)."""
    if docker_answers():
        return
    if IN_CI:
        pytest.fail("CI=true but no Docker engine answers: integration tests must run in CI")
    pytest.skip("no Docker engine answers (run scripts/docker-engine)")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a workspace in a temp folder and no environment leaking in."""
    return Settings(_env_file=None, workspace=tmp_path / "workspace")  # type: ignore[call-arg]


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "workspace"
    path.mkdir()
    yield path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration is marked ``integration`` and uses the engine fixture."""
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if "docker_engine" not in getattr(item, "fixturenames", []):
                item.fixturenames.insert(0, "docker_engine")  # type: ignore[attr-defined]
