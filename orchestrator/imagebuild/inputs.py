"""What each image is made of, and the content hash that names it.

An image's tag is ``<prefix>-<name>:<hash>`` where the 12-hex hash covers every input of that image:
its Dockerfile, its pins (package.json + package-lock.json), the sources it copies, the hash of the
base it is built FROM, the base-image override, and ``RECIPE_VERSION`` (bumped when the builder's
own behaviour changes). The host's apt mirror list is deliberately not an input: it says where
packages come from, not which ones.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ConfigError, EnvironmentProblem, UsageError

IMAGE_NAMES: tuple[str, ...] = ("base", "claude", "codex", "gemini", "modelserver", "proxy", "server")
AGENT_NAMES: tuple[str, ...] = ("claude", "codex", "gemini")
RECIPE_VERSION = "1"
HASH_LENGTH = 12

_REPO_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?"
_PREFIX_RE = re.compile(rf"{_REGISTRY}{_REPO_PART}(?:/{_REPO_PART})*")
_REFERENCE_RE = re.compile(
    rf"{_REGISTRY}{_REPO_PART}(?:/{_REPO_PART})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?"
)
_SKIPPED_PARTS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache"})
# What the server image's wheel is built from (the project itself), relative to the checkout.
PROJECT_FILES: tuple[str, ...] = ("pyproject.toml", "README.md")
PROJECT_PACKAGES: tuple[str, ...] = ("orchestrator", "api", "sandbox")
INSTALLED_INPUTS = Path("share") / "meta-orchestrator"


@dataclass(frozen=True)
class AgentTree:
    """How an agent CLI's npm tree becomes an image.

    ``keep`` are the subtrees of the ``npm ci`` output copied into ``/opt/<agent>/``; ``scripts``
    are the only packages whose install scripts run on the host (``npm rebuild``), everything else
    installs with ``--ignore-scripts``; ``command`` is the file ``/usr/local/bin/<agent>`` links to.
    """

    package: str
    keep: tuple[str, ...]
    scripts: tuple[str, ...]
    command: str


AGENT_TREES: dict[str, AgentTree] = {
    # Only the wrapper package: its postinstall puts the native binary at bin/claude.exe (a hard
    # link to the platform package, which would otherwise be stored twice).
    "claude": AgentTree(
        package="@anthropic-ai/claude-code",
        keep=("node_modules/@anthropic-ai/claude-code",),
        scripts=("@anthropic-ai/claude-code",),
        command="node_modules/@anthropic-ai/claude-code/bin/claude.exe",
    ),
    # codex.js finds the native binary in the platform package, so the whole tree stays.
    "codex": AgentTree(
        package="@openai/codex",
        keep=("node_modules",),
        scripts=(),
        command="node_modules/@openai/codex/bin/codex.js",
    ),
    # keytar's and node-pty's install scripts would download or compile; gemini works without
    # them (API-key auth, @lydell/node-pty ships prebuilt binaries).
    "gemini": AgentTree(
        package="@google/gemini-cli",
        keep=("node_modules",),
        scripts=(),
        command="node_modules/@google/gemini-cli/bundle/gemini.js",
    ),
}


@dataclass(frozen=True)
class ImageSources:
    """Where the inputs live: ``<root>/images``, ``<root>/orchestrator/modelserver``, ``<root>/build``."""

    root: Path

    @classmethod
    def checkout(cls) -> ImageSources:
        """The checkout this module was loaded from.

        An installed copy (the server image's venv) has no ``images/`` beside its package; the server
        image ships the other images' inputs in ``<sys.prefix>/share/meta-orchestrator`` instead, so
        the server computes the same tags as the checkout it was built from.
        """
        root = Path(__file__).resolve().parents[2]
        installed = Path(sys.prefix) / INSTALLED_INPUTS
        if not (root / "images").is_dir() and (installed / "images").is_dir():
            return cls(installed)
        return cls(root)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def modelserver_dir(self) -> Path:
        return self.root / "orchestrator" / "modelserver"

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    def image_dir(self, name: str) -> Path:
        return self.images_dir / check_name(name)


def check_name(name: str) -> str:
    """Return ``name`` if it is one of ``IMAGE_NAMES``; else raise ``UsageError`` listing them."""
    if name not in IMAGE_NAMES:
        raise UsageError(f"unknown image {name!r}: expected one of {', '.join(IMAGE_NAMES)}")
    return name


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can be the repository part of a Docker tag; else ``ConfigError``."""
    if not _PREFIX_RE.fullmatch(prefix) or len(prefix) > 200:
        raise ConfigError(
            f"image prefix {prefix!r} is not a valid Docker repository name: use lowercase letters, "
            "digits and . _ - separators, e.g. ORCH_IMAGE_PREFIX=meta-orchestrator"
        )
    return prefix


def check_base_image(reference: str) -> str:
    """Return ``reference`` if it is a Docker image reference; else ``ConfigError``."""
    if not _REFERENCE_RE.fullmatch(reference) or len(reference) > 255:
        raise ConfigError(
            f"base image {reference!r} is not a Docker image reference: "
            "set ORCH_BASE_IMAGE to e.g. debian:trixie-slim, or unset it to build the base with mmdebstrap"
        )
    return reference


def read_input(path: Path) -> bytes:
    """The bytes of one input file; a missing file is an ``EnvironmentProblem`` naming it."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise EnvironmentProblem(
            f"image input {path} cannot be read ({err.strerror}): restore it from the repository "
            "(git checkout -- images/) and build again"
        ) from err


def source_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, path)`` of every file under ``directory``, sorted, caches skipped.

    A missing directory yields nothing: the image is then built without it, and its hash changes
    when the directory appears.
    """
    if not directory.is_dir():
        return
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and not _SKIPPED_PARTS.intersection(relative.parts) and path.suffix != ".pyc":
            yield relative.as_posix(), path


def project_files(sources: ImageSources) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, path)`` of the project files the server's wheel is built from, sorted.

    Missing files are left out, as in ``source_files``: the wheel build then fails and names them.
    """
    for name in PROJECT_FILES:
        if (sources.root / name).is_file():
            yield name, sources.root / name
    for package in PROJECT_PACKAGES:
        for relative, path in source_files(sources.root / package):
            yield f"{package}/{relative}", path


def image_inputs(name: str, sources: ImageSources, base_image: str | None) -> list[tuple[str, bytes]]:
    """Every input of image ``name`` as ``(label, bytes)`` pairs, in a fixed order.

    ``base_image`` is the ``ORCH_BASE_IMAGE`` override (``None``: the base comes from mmdebstrap).
    Non-base images include the base's hash, so changing the base changes every tag.
    """
    check_name(name)
    inputs: list[tuple[str, bytes]] = [("recipe-version", RECIPE_VERSION.encode()), ("name", name.encode())]
    base_dir = sources.image_dir("base")
    if name == "base":
        inputs.append(("recipe.toml", read_input(base_dir / "recipe.toml")))
        if base_image is not None:
            inputs.append(("base-image", check_base_image(base_image).encode()))
            inputs.append(("Dockerfile", read_input(base_dir / "Dockerfile")))
        return inputs
    inputs.append(("base", image_hash("base", sources, base_image).encode()))
    here = sources.image_dir(name)
    inputs.append(("Dockerfile", read_input(here / "Dockerfile")))
    if name in AGENT_TREES:
        inputs.append(("package.json", read_input(here / "package.json")))
        inputs.append(("package-lock.json", read_input(here / "package-lock.json")))
        inputs.append(("tree", repr(AGENT_TREES[name]).encode()))
    elif name == "modelserver":
        inputs.extend(
            (f"modelserver/{relative}", read_input(path))
            for relative, path in source_files(sources.modelserver_dir)
        )
    elif name == "server":
        # The server ships the other images' inputs to compute their tags, so their hashes are its inputs.
        inputs.append(("requirements.txt", read_input(here / "requirements.txt")))
        inputs.extend(
            (f"image/{other}", image_hash(other, sources, base_image).encode())
            for other in IMAGE_NAMES
            if other not in ("base", "server")
        )
        inputs.extend((f"project/{relative}", read_input(path)) for relative, path in project_files(sources))
    else:  # proxy: its packages.toml (the Dockerfile is already in)
        inputs.extend(
            (f"{name}/{relative}", read_input(path))
            for relative, path in source_files(here)
            if relative != "Dockerfile"
        )
    return inputs


def digest(inputs: list[tuple[str, bytes]]) -> str:
    """The 12-hex sha256 of labelled inputs; each part is length-prefixed so no two lists collide."""
    hasher = hashlib.sha256()
    for label, data in inputs:
        encoded = label.encode()
        hasher.update(len(encoded).to_bytes(8, "big") + encoded + len(data).to_bytes(8, "big") + data)
    return hasher.hexdigest()[:HASH_LENGTH]


def image_hash(name: str, sources: ImageSources, base_image: str | None) -> str:
    """The content hash of image ``name`` (see the module docstring for what it covers)."""
    return digest(image_inputs(name, sources, base_image))
