"""The built images on a real engine: real CLIs at their pins, hardened runs, labels, no rebuilds.

Builds happen once, in the session fixture ``images``. Tests that must build something use a
throwaway tag prefix whose base is a retag of the real one, so they build only the small model
server image and remove their tags afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.errors import DockerUnavailable, ImageMissing
from orchestrator.imagebuild.inputs import source_files
from orchestrator.images import (
    IMAGE_NAMES,
    BuildStep,
    ImageSources,
    cli_version,
    ensure_images,
    image_ref,
    list_images,
    prune_images,
)

HARDENED = [
    "--rm",
    "--init",
    "--user",
    "1000:1000",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--read-only",
    "--tmpfs",
    "/tmp:size=64m",
    "--tmpfs",
    "/home/agent:size=64m,uid=1000,gid=1000,mode=0700",
    "--network",
    "none",
]
VERSION_LINES = {
    "claude": "2.1.197 (Claude Code)",
    "codex": "codex-cli 0.169.0",
    "gemini": "0.61.0",
}


def hardened_run(ref: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``docker run`` with the hardened flags the orchestrator uses, as uid 1000, no network."""
    return subprocess.run(
        ["docker", "run", *HARDENED, ref, *argv], capture_output=True, text=True, timeout=120, check=False
    )


def inspect(ref: str) -> dict[str, object]:
    done = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, text=True, check=True)
    found: dict[str, object] = json.loads(done.stdout)[0]
    return found


@pytest.mark.parametrize("name", ["claude", "codex", "gemini"])
def test_each_real_cli_prints_its_pinned_version_in_a_hardened_container(
    images: dict[str, str], name: str
) -> None:
    """``<cli> --version`` as uid 1000 with a read-only root, no capabilities and no network."""
    done = hardened_run(images[name], name, "--version")
    assert (done.returncode, done.stdout.strip()) == (0, VERSION_LINES[name]), done.stderr


def test_the_agent_images_run_as_uid_1000_in_the_workspace(images: dict[str, str]) -> None:
    """Agent images default to user 1000:1000, /workspace, HOME=/home/agent; the CLI is the command."""
    for name in ("claude", "codex", "gemini"):
        config = inspect(images[name])["Config"]
        assert isinstance(config, dict)
        assert (config["User"], config["WorkingDir"], config["Cmd"]) == ("1000:1000", "/workspace", [name])
        assert "HOME=/home/agent" in config["Env"]
        assert config["Entrypoint"] is None


def test_images_carry_their_name_hash_and_cli_version_labels(images: dict[str, str]) -> None:
    """Every image names itself and its input hash; agent images also their CLI's pinned version."""
    for name, ref in images.items():
        config = inspect(ref)["Config"]
        assert isinstance(config, dict)
        labels = config["Labels"]
        assert labels["meta-orchestrator.image"] == name
        assert labels["meta-orchestrator.inputs-hash"] == ref.rpartition(":")[2]
        version = cli_version(name)
        if version is not None:
            assert labels["meta-orchestrator.cli-version"] == version
            assert labels["org.opencontainers.image.version"] == version


def test_the_base_is_a_light_test_image(images: dict[str, str]) -> None:
    """bash, python3, coreutils and git work in the base as uid 1000 under the hardened flags."""
    script = "id -u; python3 -c 'print(6*7)'; stat -c %u /workspace; git --version | cut -d' ' -f1"
    done = hardened_run(images["base"], "bash", "-c", script)
    assert (done.returncode, done.stdout.split()) == (0, ["1000", "42", "1000", "git"]), done.stderr


def test_the_model_server_image_holds_exactly_the_package(images: dict[str, str]) -> None:
    """/opt/modelserver/orchestrator has an empty __init__.py and the checkout's modelserver files."""
    listing = "cd /opt/modelserver && find orchestrator -type f | sort && stat -c %s orchestrator/__init__.py"
    done = hardened_run(images["modelserver"], "bash", "-c", listing)
    expected = sorted(
        ["orchestrator/__init__.py"]
        + [
            f"orchestrator/modelserver/{relative}"
            for relative, _ in source_files(ImageSources.checkout().modelserver_dir)
        ]
    )
    assert (done.returncode, done.stdout.split()) == (0, [*expected, "0"]), done.stderr
    env = inspect(images["modelserver"])["Config"]
    assert isinstance(env, dict)
    assert "PYTHONPATH=/opt/modelserver" in env["Env"]


def test_a_second_ensure_builds_nothing(images: dict[str, str]) -> None:
    """With every tag present, ensure_images reports only 'present' steps and returns the same tags."""
    steps: list[BuildStep] = []
    again = ensure_images(Settings(_env_file=None), IMAGE_NAMES, progress=steps.append)
    assert again == images
    assert [(step.image, step.step, step.built) for step in steps] == [
        (name, "present", False) for name in IMAGE_NAMES
    ]


def test_list_images_shows_the_current_tags_with_cli_versions(images: dict[str, str]) -> None:
    """Each current tag is listed as built, with its size and the CLI version from its label."""
    listed = {info.ref: info for info in list_images(Settings(_env_file=None))}
    for name, ref in images.items():
        info = listed[ref]
        assert (info.name, info.current, info.built) == (name, True, True)
        assert info.size_bytes is not None and info.size_bytes > 0
        assert info.cli_version == cli_version(name)


@pytest.fixture
def scratch(images: dict[str, str], tmp_path: Path) -> Iterator[tuple[Settings, ImageSources]]:
    """A throwaway prefix whose base is the real base retagged, and a private copy of the inputs."""
    prefix = f"mo-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(_env_file=None, image_prefix=prefix)
    sources = ImageSources(tmp_path / "checkout")
    shutil.copytree(ImageSources.checkout().images_dir, sources.images_dir)
    shutil.copytree(ImageSources.checkout().modelserver_dir, sources.modelserver_dir, dirs_exist_ok=True)
    subprocess.run(["docker", "tag", images["base"], image_ref(settings, "base", sources)], check=True)
    yield settings, sources
    listed = subprocess.run(
        [
            "docker",
            "image",
            "ls",
            "--filter",
            f"reference={prefix}-*",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    tags = listed.stdout.split()
    if tags:
        subprocess.run(["docker", "rmi", "--force", *tags], capture_output=True, check=True)


def test_two_concurrent_builders_build_once(scratch: tuple[Settings, ImageSources]) -> None:
    """Two ensure_images calls at once: the file lock lets one build; the other then finds the tag."""
    settings, sources = scratch
    reports: list[list[BuildStep]] = [[], []]
    results: list[dict[str, str]] = []
    errors: list[BaseException] = []

    def build(index: int) -> None:
        try:
            results.append(ensure_images(settings, ["modelserver"], reports[index].append, sources=sources))
        except BaseException as err:  # collected and re-raised in the test thread
            errors.append(err)

    threads = [threading.Thread(target=build, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert errors == []
    assert results[0] == results[1] == {"modelserver": image_ref(settings, "modelserver", sources)}
    builds = [
        step for report in reports for step in report if step.image == "modelserver" and step.step == "built"
    ]
    assert len(builds) == 1


def test_a_failing_build_reports_the_log_tail_and_leaves_no_tag(
    scratch: tuple[Settings, ImageSources],
) -> None:
    """A Dockerfile step that fails gives ImageMissing quoting the build log; no tag is created."""
    settings, sources = scratch
    dockerfile = sources.image_dir("modelserver") / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + 'RUN echo "broken on purpose" && false\n')
    with pytest.raises(ImageMissing) as caught:
        ensure_images(settings, ["modelserver"], sources=sources)
    message = str(caught.value)
    assert "docker build of " in message
    assert "broken on purpose" in message
    assert "orchestrate images build" in message
    probe = ["docker", "image", "inspect", image_ref(settings, "modelserver", sources)]
    assert subprocess.run(probe, capture_output=True, check=False).returncode != 0


def test_prune_removes_outdated_tags_but_keeps_those_in_use(scratch: tuple[Settings, ImageSources]) -> None:
    """After an input changes, prune drops the old tag; a tag a container still uses is kept."""
    settings, sources = scratch
    old = ensure_images(settings, ["modelserver"], sources=sources)["modelserver"]
    dockerfile = sources.image_dir("modelserver") / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "# second revision\n")
    middle = ensure_images(settings, ["modelserver"], sources=sources)["modelserver"]
    dockerfile.write_text(dockerfile.read_text() + "# third revision\n")
    current = ensure_images(settings, ["modelserver"], sources=sources)["modelserver"]
    created = subprocess.run(["docker", "create", middle], capture_output=True, text=True, check=True)
    try:
        assert prune_images(settings, sources) == ([old], [middle])
    finally:
        subprocess.run(["docker", "rm", created.stdout.strip()], capture_output=True, check=True)
    remaining = {info.ref for info in list_images(settings, sources) if info.name == "modelserver"}
    assert remaining == {middle, current}


def test_an_unreachable_engine_is_docker_unavailable_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """DOCKER_HOST pointing nowhere: DockerUnavailable saying how to start or point at an engine."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DockerUnavailable, match=r"no Docker engine answers .*DOCKER_HOST"):
        ensure_images(settings, ["base"])
