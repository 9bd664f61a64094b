"""Build contexts under ``build/``: the host-side npm trees and the directories ``docker build`` reads.

The npm registry is reached here, on the host, so the ``docker build`` itself runs with
``--network none``. Install scripts run only for the packages an ``AgentTree`` names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from orchestrator.imagebuild.inputs import AGENT_TREES, ImageSources, digest, read_input, source_files
from orchestrator.imagebuild.process import run_logged

COMPLETE_MARKER = ".complete"
NPM_FLAGS = ("--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=warn")


def _link_or_copy(source: str, target: str) -> str:
    """Hard-link when possible (same filesystem, no extra disk), else copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def _fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def lock_version(lock_text: bytes, package: str) -> str:
    """The version of ``package`` pinned in a package-lock.json ('' when it is not there)."""
    try:
        entry = json.loads(lock_text).get("packages", {}).get(f"node_modules/{package}", {})
    except (ValueError, AttributeError):
        return ""
    version = entry.get("version", "") if isinstance(entry, dict) else ""
    return version if isinstance(version, str) else ""


def npm_tree(name: str, sources: ImageSources, log_path: Path) -> Path:
    """The ``npm ci`` output for agent ``name``, reused while its pins are unchanged.

    Lives in ``build/npm/<name>-<pins hash>/``; a ``.complete`` marker is written last, so an
    interrupted install is redone, and older trees of the same agent are removed.
    """
    spec = AGENT_TREES[name]
    here = sources.image_dir(name)
    manifest = read_input(here / "package.json")
    lock = read_input(here / "package-lock.json")
    key = digest([("package.json", manifest), ("package-lock.json", lock), ("tree", repr(spec).encode())])
    npm_root = sources.build_dir / "npm"
    target = npm_root / f"{name}-{key}"
    if (target / COMPLETE_MARKER).exists():
        return target
    for stale in npm_root.glob(f"{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    _fresh(target)
    (target / "package.json").write_bytes(manifest)
    (target / "package-lock.json").write_bytes(lock)
    run_logged(["npm", "ci", *NPM_FLAGS], log_path, f"npm ci for the {name} image", cwd=target)
    if spec.scripts:
        run_logged(
            ["npm", "rebuild", "--foreground-scripts", *spec.scripts],
            log_path,
            f"install scripts of {', '.join(spec.scripts)}",
            cwd=target,
        )
    (target / COMPLETE_MARKER).touch()
    return target


def agent_context(name: str, tree: Path, sources: ImageSources) -> Path:
    """``build/contexts/<name>/``: the Dockerfile plus ``tree/`` holding the kept npm subtrees."""
    context = _fresh(sources.build_dir / "contexts" / name)
    shutil.copy2(sources.image_dir(name) / "Dockerfile", context / "Dockerfile")
    for keep in AGENT_TREES[name].keep:
        shutil.copytree(tree / keep, context / "tree" / keep, symlinks=True, copy_function=_link_or_copy)
    return context


def modelserver_context(sources: ImageSources) -> Path:
    """``build/contexts/modelserver/``: the Dockerfile plus ``tree/orchestrator/{__init__.py,modelserver/}``.

    The ``orchestrator/__init__.py`` is generated empty so the image holds only the server package.
    """
    context = _fresh(sources.build_dir / "contexts" / "modelserver")
    shutil.copy2(sources.image_dir("modelserver") / "Dockerfile", context / "Dockerfile")
    package = context / "tree" / "orchestrator"
    (package / "modelserver").mkdir(parents=True)
    (package / "__init__.py").write_bytes(b"")
    for relative, path in source_files(sources.modelserver_dir):
        target = package / "modelserver" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return context
