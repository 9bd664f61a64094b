"""Debian packages for an image, fetched on the host so that ``docker build`` runs with ``--network none``.

The proxy image (``images/proxy``) installs the ``.deb`` files named in its ``packages.toml``. They
are fetched with ``apt-get download`` against a private apt state under ``build/apt/<suite>/``: the
host's mirror list (``/etc/apt/sources.list.d/debian.sources``) with its suites renamed to the
base's suite, so the packages match the base image and the host's own apt state is never touched.
``dpkg`` checks their dependencies against the base during the build.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import ConfigError, EnvironmentProblem
from orchestrator.imagebuild.inputs import ImageSources, read_input
from orchestrator.imagebuild.process import run_logged
from orchestrator.imagebuild.recipe import HOST_OS_RELEASE, HOST_SOURCES, host_codename, rewrite_sources

PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}")


class DebPackages(BaseModel):
    """``images/<name>/packages.toml``: the Debian packages an image installs with dpkg."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    packages: tuple[str, ...] = Field(min_length=1, description="Debian package names, no versions")


def load_packages(text: str, origin: str) -> DebPackages:
    """Parse a packages file; a malformed one is a ``ConfigError`` naming ``origin`` and the problem."""
    try:
        parsed = DebPackages.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as err:
        raise ConfigError(f"{origin} is not a valid packages file: {err}; fix the file") from err
    bad = [name for name in parsed.packages if not PACKAGE_RE.fullmatch(name)]
    if bad:
        raise ConfigError(
            f"{origin} names {bad[0]!r}, which is not a Debian package name (lowercase letters, "
            "digits, + . -): fix the file"
        )
    return parsed


def apt_options(state: Path) -> list[str]:
    """``-o`` options that give apt a private state, cache and sources under ``state``."""
    return [
        "-o", f"Dir::Etc::SourceList={state / 'empty.list'}",
        "-o", f"Dir::Etc::SourceParts={state / 'sources'}",
        "-o", f"Dir::Etc::PreferencesParts={state / 'preferences'}",
        "-o", f"Dir::State={state / 'state'}",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::State::status={state / 'status'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
        "-o", "Acquire::Languages=none",
    ]  # fmt: skip


def _private_state(build_dir: Path, suite: str) -> Path:
    """``build/apt/<suite>/`` laid out for ``apt_options``, its sources renamed to ``suite``."""
    if not HOST_SOURCES.is_file():
        raise EnvironmentProblem(
            f"{HOST_SOURCES} is missing, and the proxy image fetches its Debian packages from the "
            "host's mirror list: build on a Debian host (or one with that deb822 file)"
        )
    state = build_dir / "apt" / suite
    for folder in ("sources", "preferences", "state", "lists/partial", "cache/archives/partial"):
        (state / folder).mkdir(parents=True, exist_ok=True)
    (state / "empty.list").write_text("")
    (state / "status").touch()
    codename = host_codename(HOST_OS_RELEASE.read_text()) if HOST_OS_RELEASE.is_file() else ""
    (state / "sources" / "debian.sources").write_text(
        rewrite_sources(HOST_SOURCES.read_text(), codename, suite)
    )
    return state


def download_debs(
    packages: DebPackages, suite: str, build_dir: Path, target: Path, log_path: Path
) -> list[Path]:
    """Fetch the ``.deb`` of each package for ``suite`` into ``target`` (emptied first); return them."""
    state = _private_state(build_dir, suite)
    options = apt_options(state)
    run_logged(["apt-get", "-q", *options, "update"], log_path, f"apt-get update for {suite}")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    run_logged(
        ["apt-get", "-q", *options, "download", *packages.packages],
        log_path,
        f"apt-get download {' '.join(packages.packages)}",
        cwd=target,
    )
    found = sorted(target.glob("*.deb"))
    if len(found) != len(packages.packages):
        raise EnvironmentProblem(
            f"apt-get download of {list(packages.packages)} gave {[p.name for p in found]}; "
            f"see {log_path} and check the host's mirror list"
        )
    return found


def deb_context(name: str, sources: ImageSources, suite: str, log_path: Path) -> Path:
    """``build/contexts/<name>/``: the image's Dockerfile plus ``debs/`` with its packages for ``suite``."""
    here = sources.image_dir(name)
    packages = load_packages(read_input(here / "packages.toml").decode(), f"images/{name}/packages.toml")
    context = sources.build_dir / "contexts" / name
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copy2(here / "Dockerfile", context / "Dockerfile")
    download_debs(packages, suite, sources.build_dir, context / "debs", log_path)
    return context
