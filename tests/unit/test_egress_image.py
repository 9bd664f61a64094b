"""The proxy image's inputs: its package list, its hash, and the private apt state it is fetched with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.imagebuild.debs import apt_options, load_packages
from orchestrator.images import IMAGE_NAMES, ImageSources, image_refs

CHECKOUT = ImageSources.checkout()


@pytest.fixture
def sources(tmp_path: Path) -> ImageSources:
    """A private copy of images/ and of the model server package."""
    shutil.copytree(CHECKOUT.images_dir, tmp_path / "images")
    shutil.copytree(CHECKOUT.modelserver_dir, tmp_path / "orchestrator" / "modelserver")
    return ImageSources(tmp_path)


def test_the_proxy_image_installs_tinyproxy_from_debian() -> None:
    """The checked-in package list names the daemon-only package."""
    text = (CHECKOUT.image_dir("proxy") / "packages.toml").read_text()
    assert load_packages(text, "images/proxy/packages.toml").packages == ("tinyproxy-bin",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "packages"),
        ("packages = []", "packages"),
        ('packages = ["Tinyproxy"]', "not a Debian package name"),
        ('packages = ["tinyproxy; rm -rf /"]', "not a Debian package name"),
        ('packages = ["-o=evil"]', "not a Debian package name"),
        ('packages = "tinyproxy"', "packages"),
        ('packages = ["tinyproxy"]\nextra = 1', "extra"),
        ("packages = [", "packages.toml"),
    ],
)
def test_a_garbage_package_list_is_a_config_error_naming_the_file(text: str, problem: str) -> None:
    """Nothing that is not a plain Debian package name ever reaches apt-get's argv."""
    with pytest.raises(ConfigError, match=r"images/proxy/packages\.toml") as caught:
        load_packages(text, "images/proxy/packages.toml")
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("path", "moved"),
    [
        ("images/proxy/packages.toml", {"proxy"}),
        ("images/proxy/Dockerfile", {"proxy"}),
        ("orchestrator/modelserver/__main__.py", {"modelserver"}),
        ("images/base/recipe.toml", set(IMAGE_NAMES)),
    ],
)
def test_changing_a_proxy_input_moves_the_proxy_tag_only(
    settings: Settings, sources: ImageSources, path: str, moved: set[str]
) -> None:
    """The proxy's tag covers its Dockerfile, its package list and the base; nothing else moves it.

    (The server image ships every other image's inputs, so it moves with any of them: left out.)
    """
    before = image_refs(settings, IMAGE_NAMES, sources)
    target = sources.root / path
    target.write_bytes(target.read_bytes() + b"\n")
    after = image_refs(settings, IMAGE_NAMES, sources)
    assert {name for name in IMAGE_NAMES if before[name] != after[name]} - {"server"} == moved - {"server"}


def test_apt_runs_on_a_private_state_and_never_the_hosts(tmp_path: Path) -> None:
    """Every apt directory (sources, lists, cache, status, preferences) points under the build folder."""
    options = apt_options(tmp_path / "apt")
    paths = [value.split("=", 1)[1] for value in options[1::2] if value.startswith("Dir")]
    assert len(paths) == 7
    assert all(path.startswith(str(tmp_path / "apt")) for path in paths)
