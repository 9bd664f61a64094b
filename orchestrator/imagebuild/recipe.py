"""The base image recipe (``images/base/recipe.toml``) and the argv lists that carry it out.

Pure functions: they read text and return argv lists; running them is ``orchestrator.images``'s job.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import ConfigError

HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_OS_RELEASE = Path("/etc/os-release")


class BaseRecipe(BaseModel):
    """How the base rootfs is made: the mmdebstrap arguments and the ``docker import`` changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str = Field(pattern=r"^[a-z][a-z0-9-]*$", description="Debian codename, e.g. trixie")
    variant: str = Field(pattern=r"^[a-z]+$", description="mmdebstrap --variant")
    packages: tuple[str, ...] = Field(min_length=1, description="installed on top of the variant")
    source_date_epoch: int = Field(ge=0, description="SOURCE_DATE_EPOCH for a repeatable rootfs")
    dpkg_options: tuple[str, ...] = ()
    customize_hooks: tuple[str, ...] = ()
    import_changes: tuple[str, ...] = ()


def load_recipe(text: str, origin: str = "images/base/recipe.toml") -> BaseRecipe:
    """Parse the recipe; a malformed one is a ``ConfigError`` naming ``origin`` and the problem."""
    try:
        return BaseRecipe.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as err:
        raise ConfigError(
            f"{origin} is not a valid base recipe: {err}; fix the file and build again"
        ) from err


def rewrite_sources(text: str, host_codename: str, suite: str) -> str:
    """The host's deb822 sources with the host's suites renamed to ``suite``.

    ``bookworm`` becomes ``trixie``, ``bookworm-updates`` becomes ``trixie-updates`` and so on;
    other lines (URIs, keyrings, comments) are kept, so the image uses the host's mirror.
    """
    if not host_codename or host_codename == suite:
        return text
    out = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "suites":
            words = [
                suite + word[len(host_codename) :]
                if word == host_codename or word.startswith(host_codename + "-")
                else word
                for word in value.split()
            ]
            out.append(f"{key}: {' '.join(words)}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def host_codename(os_release: str) -> str:
    """``VERSION_CODENAME`` from the text of ``/etc/os-release`` ('' when absent)."""
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION_CODENAME":
            return value.strip().strip("\"'")
    return ""


def mmdebstrap_argv(recipe: BaseRecipe, sources_file: Path | None) -> list[str]:
    """argv writing the rootfs as a tar to stdout; ``sources_file`` (deb822) replaces the default mirror."""
    argv = [
        "mmdebstrap",
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        *(f"--dpkgopt={option}" for option in recipe.dpkg_options),
        *(f"--customize-hook={hook}" for hook in recipe.customize_hooks),
        recipe.suite,
        "-",
    ]
    if sources_file is not None:
        argv.append(str(sources_file))
    return argv


def import_argv(recipe: BaseRecipe, ref: str, labels: dict[str, str]) -> list[str]:
    """argv of ``docker import`` reading the rootfs tar from stdin and tagging it ``ref``."""
    changes = [
        *recipe.import_changes,
        *(f"LABEL {key}={json.dumps(value)}" for key, value in sorted(labels.items())),
    ]
    return ["docker", "import", *(f"--change={change}" for change in changes), "-", ref]


def apt_build_args(recipe: BaseRecipe, base_image: str) -> dict[str, str]:
    """Build args of ``images/base/Dockerfile`` for the stock-image path (``ORCH_BASE_IMAGE``)."""
    return {"BASE_IMAGE": base_image, "PACKAGES": " ".join(recipe.packages)}
