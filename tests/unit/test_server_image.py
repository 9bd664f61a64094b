"""The server image: what its tag hashes, what it ships, and the pip commands that fill its context.

No Docker and no network: the inputs are a temp copy of ``images/`` plus a small fake project; the
pip argv builders are pure. The real build is exercised by tests/integration/test_compose.py.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from orchestrator.config import Settings
from orchestrator.errors import EnvironmentProblem
from orchestrator.imagebuild.inputs import IMAGE_NAMES, project_files
from orchestrator.imagebuild.server import IMAGE_PYTHON, download_argv, shipped_inputs, wheel_argv
from orchestrator.images import ImageSources, image_ref, image_refs
from orchestrator.main import main

CHECKOUT = ImageSources.checkout()
REQUIREMENTS = CHECKOUT.image_dir("server") / "requirements.txt"
PIN_RE = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^ ]+) --hash=sha256:[0-9a-f]{64}$")


@pytest.fixture
def sources(tmp_path: Path) -> ImageSources:
    """``images/`` copied, plus a tiny project: pyproject, README, one module per package."""
    shutil.copytree(CHECKOUT.images_dir, tmp_path / "images")
    for relative in ("pyproject.toml", "README.md", "orchestrator/modelserver/__main__.py",
                     "orchestrator/coordinator.py", "api/app.py", "sandbox/safety.py"):  # fmt: skip
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"# {relative}\n")
    return ImageSources(tmp_path)


# (file changed, images whose tag must move): the project's own files move only the server.
SERVER_INPUTS = [
    ("pyproject.toml", {"server"}),
    ("README.md", {"server"}),
    ("api/app.py", {"server"}),
    ("orchestrator/coordinator.py", {"server"}),
    ("sandbox/safety.py", {"server"}),
    ("api/static/dashboard.html", {"server"}),
    ("images/server/Dockerfile", {"server"}),
    ("images/server/requirements.txt", {"server"}),
    ("tests/unit/test_x.py", set()),
    ("docs/deploy.md", set()),
    ("compose.yaml", set()),
    ("build/contexts/server/Dockerfile", set()),
    ("orchestrator/__pycache__/coordinator.cpython-311.pyc", set()),
]


@pytest.mark.parametrize(("path", "moved"), SERVER_INPUTS)
def test_changing_a_project_file_moves_only_the_server_tag(
    settings: Settings, sources: ImageSources, path: str, moved: set[str]
) -> None:
    """Appending to (or adding) a file changes the server's tag iff the server's wheel is built from it."""
    before = image_refs(settings, IMAGE_NAMES, sources)
    target = sources.root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((target.read_bytes() if target.exists() else b"") + b"\n")
    after = image_refs(settings, IMAGE_NAMES, sources)
    assert moved == {name for name in IMAGE_NAMES if before[name] != after[name]}


def test_the_project_files_are_the_packages_and_the_metadata(sources: ImageSources) -> None:
    """The wheel is built from pyproject.toml, README.md and the three packages, nothing else."""
    expected = [
        "pyproject.toml",
        "README.md",
        "orchestrator/coordinator.py",
        "orchestrator/modelserver/__main__.py",
        "api/app.py",
        "sandbox/safety.py",
    ]
    assert expected == [relative for relative, _ in project_files(sources)]


def test_the_server_ships_the_other_images_inputs_but_not_its_own(sources: ImageSources) -> None:
    """share/meta-orchestrator gets images/* (minus server/ and the README) and the model server."""
    shipped = [relative for relative, _ in shipped_inputs(sources)]
    assert "images/claude/package-lock.json" in shipped
    assert "images/base/recipe.toml" in shipped
    assert "orchestrator/modelserver/__main__.py" in shipped
    assert [r for r in shipped if r.startswith("images/server/") or r == "images/README.md"] == []


def test_a_missing_requirements_file_is_an_environment_problem_naming_it(
    settings: Settings, sources: ImageSources
) -> None:
    """Without its pins the server has no tag: the error names the file and how to restore it."""
    (sources.image_dir("server") / "requirements.txt").unlink()
    with pytest.raises(
        EnvironmentProblem, match=r"images/server/requirements.txt cannot be read .*git checkout"
    ):
        image_ref(settings, "server", sources)


def test_download_fetches_only_hashed_wheels_for_the_images_python(tmp_path: Path) -> None:
    """pip download: pinned and hashed, binary only, for CPython 3.13 on manylinux x86_64, no deps."""
    argv = download_argv(tmp_path / "requirements.txt", tmp_path / "out")
    assert argv[1:4] == ["-m", "pip", "download"]
    for flag in ("--require-hashes", "--only-binary=:all:", "--no-deps"):
        assert flag in argv
    assert argv[argv.index("--python-version") + 1] == IMAGE_PYTHON
    assert (argv[argv.index("--implementation") + 1], argv[argv.index("--abi") + 1]) == ("cp", "cp313")
    platforms = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--platform"]
    assert platforms and all(p.endswith("_x86_64") for p in platforms)
    assert [str(tmp_path / "requirements.txt"), str(tmp_path / "out")] == [
        argv[argv.index("--requirement") + 1],
        argv[argv.index("--dest") + 1],
    ]


def test_the_project_wheel_is_built_without_its_dependencies(tmp_path: Path) -> None:
    """pip wheel of the staged project only; the pins come from the download."""
    argv = wheel_argv(tmp_path / "project", tmp_path / "wheels")
    assert ["-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "wheels")] == argv[
        1:8
    ]
    assert str(tmp_path / "project") == argv[-1]


def test_every_pin_is_exact_and_hashed_and_covers_the_runtime_dependencies() -> None:
    """requirements.txt pins each runtime dependency of pyproject.toml (and pip) with a version it allows."""
    lines = [line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    pins: dict[str, str] = {}
    for line in lines:
        match = PIN_RE.fullmatch(line)
        assert match is not None, f"not an exact, hashed pin: {line!r}"
        pins[canonicalize_name(match["name"])] = match["version"]
    project = tomllib.loads((CHECKOUT.root / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency of the project but not pinned for the server image"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {spec}"
    assert "pip" in pins


@pytest.mark.parametrize("name", ["", "Server", "server:latest", "../server"])
def test_images_ref_refuses_garbage_names(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``orchestrate images ref <garbage>`` exits 2 and lists the valid names, server included."""
    with pytest.raises(SystemExit) as exited:
        main(["images", "ref", name])
    assert exited.value.code == 2
    assert (
        f"unknown image {name!r}: expected one of base, claude, codex, gemini, modelserver, proxy, server"
        in (capsys.readouterr().err)
    )


def test_images_ref_prints_the_current_tag(capsys: pytest.CaptureFixture[str]) -> None:
    """``orchestrate images ref server`` prints the tag ``orchestrate images build`` gives the server."""
    with pytest.raises(SystemExit) as exited:
        main(["images", "ref", "server"])
    assert exited.value.code == 0
    assert image_ref(Settings(_env_file=None), "server") + "\n" == capsys.readouterr().out
