"""The server image's build context: the project as a wheel plus its pinned dependencies, made on the host.

``docker build --network none`` cannot reach PyPI, so the host does, before the build:

* ``pip download --require-hashes`` of ``images/server/requirements.txt`` (every runtime dependency
  pinned with its hash) for the image's CPython (``IMAGE_PYTHON``, manylinux x86_64), kept in
  ``build/wheels/server-<hash of the pins>/`` while the pins are unchanged;
* ``pip wheel`` of the project from a staged copy holding exactly the files its tag hashes
  (``project_files``), so nothing else of the checkout (caches, ``build/``) gets in.

The image installs them with ``--no-index``. It also gets the other images' inputs under
``share/meta-orchestrator`` (``INSTALLED_INPUTS``): installed from a wheel, the server computes the
same content-hashed tags as the checkout it was built from (``ImageSources.checkout``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from orchestrator.imagebuild.inputs import (
    INSTALLED_INPUTS,
    ImageSources,
    digest,
    project_files,
    read_input,
    source_files,
)
from orchestrator.imagebuild.process import run_logged

COMPLETE_MARKER = ".complete"
IMAGE_PYTHON = "3.13"  # Debian trixie's python3, the base image's (images/base/recipe.toml)
PLATFORMS = (
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
)
# The files of images/ the server does not ship: its own inputs and the documentation.
_NOT_SHIPPED = ("server/", "README.md")


def build_args() -> dict[str, str]:
    """Build arguments of ``images/server/Dockerfile`` besides ``BASE_IMAGE``."""
    return {"PYTHON_VERSION": IMAGE_PYTHON}


def download_argv(requirements: Path, target: Path) -> list[str]:
    """``pip download`` of the pinned wheels for the image's CPython and platform (never an sdist)."""
    abi = "cp" + IMAGE_PYTHON.replace(".", "")
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    return [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
        "--only-binary=:all:", "--python-version", IMAGE_PYTHON, "--implementation", "cp", "--abi", abi,
        *platforms, "--dest", str(target), "--requirement", str(requirements),
    ]  # fmt: skip


def wheel_argv(project: Path, target: Path) -> list[str]:
    """``pip wheel`` of the project alone (its dependencies come from ``download_argv``)."""
    return [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--wheel-dir",
        str(target),
        str(project),
    ]


def dependency_wheels(sources: ImageSources, log_path: Path) -> Path:
    """The downloaded dependency wheels, reused while ``requirements.txt`` is unchanged.

    Lives in ``build/wheels/server-<hash>/``; a ``.complete`` marker is written last, so an
    interrupted download is redone, and older downloads are removed.
    """
    requirements = sources.image_dir("server") / "requirements.txt"
    key = digest([("requirements.txt", read_input(requirements)), ("python", IMAGE_PYTHON.encode())])
    root = sources.build_dir / "wheels"
    target = root / f"server-{key}"
    if (target / COMPLETE_MARKER).exists():
        return target
    for stale in root.glob("server-*"):
        shutil.rmtree(stale, ignore_errors=True)
    target.mkdir(parents=True)
    run_logged(download_argv(requirements, target), log_path, "pip download of the server's dependencies")
    (target / COMPLETE_MARKER).touch()
    return target


def shipped_inputs(sources: ImageSources) -> list[tuple[str, Path]]:
    """``(path under share/meta-orchestrator, path)`` of the other images' inputs the server ships."""
    shipped = [
        (f"images/{relative}", path)
        for relative, path in source_files(sources.images_dir)
        if not relative.startswith(_NOT_SHIPPED)
    ]
    shipped += [
        (f"orchestrator/modelserver/{relative}", path)
        for relative, path in source_files(sources.modelserver_dir)
    ]
    return shipped


def _fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def _place(pairs: list[tuple[str, Path]], target: Path) -> None:
    for relative, path in pairs:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)


def server_context(sources: ImageSources, log_path: Path) -> Path:
    """``build/contexts/server/``: Dockerfile, requirements.txt, ``wheels/`` and ``share/``.

    ``wheels/`` holds the pinned dependencies (hard-linked from the download cache) and the
    project's own wheel, built from ``build/server-project/`` (the staged ``project_files``).
    Raises ``ImageMissing`` with the log's tail when pip fails (no PyPI, a hash mismatch).
    """
    here = sources.image_dir("server")
    context = _fresh(sources.build_dir / "contexts" / "server")
    shutil.copy2(here / "Dockerfile", context / "Dockerfile")
    shutil.copy2(here / "requirements.txt", context / "requirements.txt")
    wheels = context / "wheels"
    wheels.mkdir()
    for wheel in sorted(dependency_wheels(sources, log_path).glob("*.whl")):
        try:
            os.link(wheel, wheels / wheel.name)
        except OSError:
            shutil.copy2(wheel, wheels / wheel.name)
    staged = _fresh(sources.build_dir / "server-project")
    _place(list(project_files(sources)), staged)
    run_logged(wheel_argv(staged, wheels), log_path, "pip wheel of the project")
    shutil.rmtree(staged, ignore_errors=True)
    _place(shipped_inputs(sources), context / "share" / INSTALLED_INPUTS.name)
    return context
