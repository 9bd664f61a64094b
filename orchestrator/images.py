"""Agent images, built on this machine with no registry.

Tags are content-addressed: ``image_ref(settings, name)`` is ``<prefix>-<name>:<hash>``, the hash
covering every input of the image (``orchestrator.imagebuild.inputs``), so a tag that exists is up to
date and ``ensure_images`` builds only what is missing, base first:

* ``base``: ``mmdebstrap`` of Debian (``images/base/recipe.toml``) piped into ``docker import``; or,
  with ``ORCH_BASE_IMAGE`` set, ``images/base/Dockerfile`` FROM that image, installing the same
  packages with apt (the only step with network).
* ``claude``/``codex``/``gemini``: ``npm ci`` of the pinned lock on the host, then
  ``docker build --network none`` FROM the base, copying the tree in.
* ``modelserver``: the stdlib-only ``orchestrator/modelserver`` package on the base.
* ``proxy``: tinyproxy for the egress allowlist, its ``.deb`` fetched on the host
  (``orchestrator.imagebuild.debs``), installed by ``docker build --network none`` FROM the base.
* ``server``: ``orchestrate serve`` for compose.yaml: the project's wheel and its pinned dependencies,
  made on the host with pip (``orchestrator.imagebuild.server``), installed with ``--no-index`` by
  ``docker build --network none`` FROM the base.

Two processes may call ``ensure_images`` at once: builds are serialised by a file lock under
``build/``, and each image is checked again once the lock is held.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrator.config import Settings
from orchestrator.imagebuild.context import agent_context, lock_version, modelserver_context, npm_tree
from orchestrator.imagebuild.debs import deb_context
from orchestrator.imagebuild.docker_cli import DockerCli
from orchestrator.imagebuild.inputs import (
    AGENT_NAMES,
    AGENT_TREES,
    IMAGE_NAMES,
    ImageSources,
    check_base_image,
    check_name,
    check_prefix,
    image_hash,
    read_input,
)
from orchestrator.imagebuild.process import pipe_logged, require_tool
from orchestrator.imagebuild.recipe import (
    HOST_OS_RELEASE,
    HOST_SOURCES,
    apt_build_args,
    host_codename,
    import_argv,
    load_recipe,
    mmdebstrap_argv,
    rewrite_sources,
)
from orchestrator.imagebuild.server import build_args as server_build_args
from orchestrator.imagebuild.server import server_context
from orchestrator.log import get_logger

__all__ = [
    "IMAGE_NAMES",
    "BuildStep",
    "ImageInfo",
    "ImageSources",
    "Progress",
    "cli_version",
    "ensure_images",
    "image_ref",
    "image_refs",
    "list_images",
    "prune_images",
]

LABEL_IMAGE = "meta-orchestrator.image"
LABEL_HASH = "meta-orchestrator.inputs-hash"
LABEL_CLI_VERSION = "meta-orchestrator.cli-version"
LABEL_OCI_VERSION = "org.opencontainers.image.version"

log = get_logger("orchestrator.images")


@dataclass(frozen=True)
class BuildStep:
    """One reported step: ``built`` is False for steps that changed nothing (an image already present)."""

    image: str
    step: str
    seconds: float
    built: bool
    detail: str = ""


Progress = Callable[[BuildStep], None]


class ImageInfo(BaseModel):
    """One image as ``orchestrate images list`` shows it."""

    model_config = ConfigDict(frozen=True)

    name: str
    ref: str
    current: bool  # the tag the current inputs hash to
    built: bool
    size_bytes: int | None = None
    created: str | None = None
    cli_version: str | None = None


def _sources(sources: ImageSources | None) -> ImageSources:
    return sources if sources is not None else ImageSources.checkout()


def image_ref(settings: Settings, name: str, sources: ImageSources | None = None) -> str:
    """The tag image ``name`` has when built from the current inputs: ``<prefix>-<name>:<hash>``.

    Raises ``UsageError`` for an unknown name and ``ConfigError`` for a bad prefix or base override.
    """
    check_name(name)
    prefix = check_prefix(settings.image_prefix)
    return f"{prefix}-{name}:{image_hash(name, _sources(sources), settings.base_image)}"


def image_refs(
    settings: Settings, names: Sequence[str] = IMAGE_NAMES, sources: ImageSources | None = None
) -> dict[str, str]:
    """``image_ref`` of each name (validated first, so garbage fails before any work)."""
    for name in names:
        check_name(name)
    return {name: image_ref(settings, name, sources) for name in names}


def cli_version(name: str, sources: ImageSources | None = None) -> str | None:
    """The CLI version pinned for agent ``name`` in its package-lock.json (None for other images)."""
    if check_name(name) not in AGENT_TREES:
        return None
    lock = read_input(_sources(sources).image_dir(name) / "package-lock.json")
    return lock_version(lock, AGENT_TREES[name].package) or None


def _build_order(names: Sequence[str]) -> list[str]:
    """The requested names plus the base they need, in ``IMAGE_NAMES`` order (base first)."""
    wanted = {check_name(name) for name in names}
    if wanted:
        wanted.add("base")
    return [name for name in IMAGE_NAMES if name in wanted]


def ensure_images(
    settings: Settings,
    names: Sequence[str] = IMAGE_NAMES,
    progress: Progress | None = None,
    *,
    force: bool = False,
    sources: ImageSources | None = None,
    docker: DockerCli | None = None,
) -> dict[str, str]:
    """Build the images of ``names`` that are missing (and the base they need); return name -> tag.

    ``force`` rebuilds the named images even when their tag exists (not the base, unless named).
    Every step is reported to ``progress`` with its duration. Raises ``UsageError`` for unknown
    names, ``DockerUnavailable`` when no engine answers, ``EnvironmentProblem`` for a missing tool,
    and ``ImageMissing`` (with the log's tail) when a build fails.
    """
    src = _sources(sources)
    order = _build_order(names)
    refs = image_refs(settings, order, src)
    report: Progress = progress if progress is not None else _ignore
    engine = docker if docker is not None else DockerCli()
    engine.server_version()
    forced = set(names) if force else set()

    def missing(name: str) -> bool:
        return name in forced or not engine.exists(refs[name])

    if any(missing(name) for name in order):
        with _build_lock(src.build_dir, report):
            for name in order:
                if missing(name):
                    _build(name, settings, refs, src, engine, report)
                    forced.discard(name)
                else:
                    report(BuildStep(name, "present", 0.0, built=False, detail=refs[name]))
    else:
        for name in order:
            report(BuildStep(name, "present", 0.0, built=False, detail=refs[name]))
    return {name: refs[name] for name in names}


def list_images(
    settings: Settings, sources: ImageSources | None = None, docker: DockerCli | None = None
) -> list[ImageInfo]:
    """Every image under the prefix, plus a ``built=False`` row for each current tag not built yet."""
    src = _sources(sources)
    prefix = check_prefix(settings.image_prefix)
    current = image_refs(settings, IMAGE_NAMES, src)
    engine = docker if docker is not None else DockerCli()
    engine.server_version()
    seen: dict[str, ImageInfo] = {}
    for tag in engine.tags(f"{prefix}-*"):
        name = tag.rpartition(":")[0][len(prefix) + 1 :]
        if name in IMAGE_NAMES:
            seen[tag] = _info(name, tag, current[name] == tag, engine.inspect([tag]))
    for name, ref in current.items():
        seen.setdefault(
            ref, ImageInfo(name=name, ref=ref, current=True, built=False, cli_version=cli_version(name, src))
        )
    order = {name: index for index, name in enumerate(IMAGE_NAMES)}
    return sorted(seen.values(), key=lambda info: (order[info.name], not info.current, info.ref))


def prune_images(
    settings: Settings, sources: ImageSources | None = None, docker: DockerCli | None = None
) -> tuple[list[str], list[str]]:
    """Remove the tags under the prefix that the current inputs no longer hash to.

    Returns ``(removed, kept)``: a tag still used by a container is kept (``docker rmi`` without
    force refuses it), so a running session never loses its image.
    """
    engine = docker if docker is not None else DockerCli()
    removed: list[str] = []
    kept: list[str] = []
    for info in list_images(settings, sources, engine):
        if info.built and not info.current:
            (removed if engine.remove(info.ref) else kept).append(info.ref)
    return removed, kept


def _info(name: str, ref: str, current: bool, inspected: list[dict[str, Any]]) -> ImageInfo:
    if not inspected:
        return ImageInfo(name=name, ref=ref, current=current, built=False)
    data = inspected[0]
    labels = (data.get("Config") or {}).get("Labels") or {}
    return ImageInfo(
        name=name,
        ref=ref,
        current=current,
        built=True,
        size_bytes=data.get("Size"),
        created=data.get("Created"),
        cli_version=labels.get(LABEL_CLI_VERSION),
    )


def _ignore(_: BuildStep) -> None:
    """The default progress callback: reports go to the structured log only."""


@contextmanager
def _build_lock(build_dir: Path, report: Progress) -> Iterator[None]:
    """Hold ``build/images.lock`` (flock): one builder at a time on this machine."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with (build_dir / "images.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            report(BuildStep("*", "waited for another build", time.monotonic() - started, built=False))
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _timed(report: Progress, image: str, step: str, detail: str = "") -> Iterator[None]:
    started = time.monotonic()
    yield
    seconds = time.monotonic() - started
    log.info("image_step", image=image, step=step, seconds=round(seconds, 1), detail=detail)
    report(BuildStep(image, step, seconds, built=True, detail=detail))


def _build(
    name: str,
    settings: Settings,
    refs: dict[str, str],
    src: ImageSources,
    engine: DockerCli,
    report: Progress,
) -> None:
    """Build one image into ``refs[name]``; its base (``refs['base']``) already exists."""
    logs = src.build_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    log_path.write_bytes(b"")
    ref = refs[name]
    labels = {LABEL_IMAGE: name, LABEL_HASH: ref.rpartition(":")[2]}
    started = time.monotonic()
    if name == "base":
        _build_base(settings, ref, labels, src, engine, report, log_path)
    elif name in AGENT_NAMES:
        version = cli_version(name, src) or "unknown"
        with _timed(report, name, "npm ci (host)"):
            tree = npm_tree(name, src, log_path)
        with _timed(report, name, "context"):
            context = agent_context(name, tree, src)
        with _timed(report, name, "docker build --network none", detail=version):
            engine.build(
                context,
                ref,
                build_args={"BASE_IMAGE": refs["base"], "CLI_VERSION": version},
                labels=labels,
                log_path=log_path,
            )
    elif name == "server":
        with _timed(report, name, "pip wheel + pip download (host)"):
            context = server_context(src, log_path)
        with _timed(report, name, "docker build --network none"):
            engine.build(
                context,
                ref,
                build_args={"BASE_IMAGE": refs["base"], **server_build_args()},
                labels=labels,
                log_path=log_path,
            )
    else:
        with _timed(report, name, "context"):
            context = modelserver_context(src) if name == "modelserver" else _deb_context(name, src, log_path)
        with _timed(report, name, "docker build --network none"):
            engine.build(
                context, ref, build_args={"BASE_IMAGE": refs["base"]}, labels=labels, log_path=log_path
            )
    report(BuildStep(name, "built", time.monotonic() - started, built=True, detail=ref))


def _deb_context(name: str, src: ImageSources, log_path: Path) -> Path:
    """The context of an image made of Debian packages (the proxy), for the base's suite."""
    suite = load_recipe(read_input(src.image_dir("base") / "recipe.toml").decode()).suite
    return deb_context(name, src, suite, log_path)


def _build_base(
    settings: Settings,
    ref: str,
    labels: dict[str, str],
    src: ImageSources,
    engine: DockerCli,
    report: Progress,
    log_path: Path,
) -> None:
    base_dir = src.image_dir("base")
    recipe = load_recipe(read_input(base_dir / "recipe.toml").decode())
    if settings.base_image is not None:
        stock = check_base_image(settings.base_image)
        with _timed(report, "base", f"docker build FROM {stock} (apt, network)"):
            engine.build(
                base_dir,
                ref,
                build_args=apt_build_args(recipe, stock),
                labels=labels,
                log_path=log_path,
                network="default",
            )
        return
    require_tool("mmdebstrap")
    sources_file: Path | None = None
    if HOST_SOURCES.is_file():
        # The host's mirror (and its snapshot comments), renamed to the recipe's suite.
        codename = host_codename(HOST_OS_RELEASE.read_text()) if HOST_OS_RELEASE.is_file() else ""
        sources_file = src.build_dir / "base" / f"{recipe.suite}.sources"
        sources_file.parent.mkdir(parents=True, exist_ok=True)
        sources_file.write_text(rewrite_sources(HOST_SOURCES.read_text(), codename, recipe.suite))
    with _timed(report, "base", "mmdebstrap | docker import", detail=recipe.suite):
        pipe_logged(
            mmdebstrap_argv(recipe, sources_file),
            import_argv(recipe, ref, labels),
            log_path,
            "building the base image",
            producer_env={"SOURCE_DATE_EPOCH": str(recipe.source_date_epoch)},
        )
