"""Fixtures shared by the integration tests (real Docker).

``images`` builds the agent images once per test session with ``ensure_images`` and returns
``{name: tag}`` for every name in ``IMAGE_NAMES``. When the images exist (the usual case: tags are
content hashes, and CI runs on a machine where they were built) it only checks that each tag exists.
``sandbox`` is a ``hardened.Sandbox`` on the light ``base`` image, its containers removed afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.images import IMAGE_NAMES, BuildStep, ensure_images
from tests.integration.hardened import Sandbox


@pytest.fixture(scope="session")
def images(docker_engine: None) -> dict[str, str]:
    """``{name: tag}`` of base, claude, codex, gemini and modelserver, built if missing."""
    settings = Settings(_env_file=None)

    def show(step: BuildStep) -> None:
        if step.built:
            print(f"[images] {step.image} {step.step} {step.seconds:.1f} s {step.detail}")

    return ensure_images(settings, IMAGE_NAMES, progress=show)


@pytest.fixture
async def sandbox(tmp_path: Path, images: dict[str, str]) -> AsyncIterator[Sandbox]:
    box = Sandbox(tmp_path, images["base"])
    try:
        yield box
    finally:
        await box.cleanup()
