"""Image tags are content hashes of their inputs; names, prefixes and overrides are validated.

These tests need no Docker: they work on a copy of ``images/`` in a temp folder, change one input at
a time, and check which tags move. The argv builders of the base recipe are pure and checked here too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.config import Settings
from orchestrator.errors import ConfigError, EnvironmentProblem, UsageError
from orchestrator.imagebuild.context import lock_version
from orchestrator.imagebuild.inputs import HASH_LENGTH, digest
from orchestrator.imagebuild.recipe import (
    host_codename,
    import_argv,
    load_recipe,
    mmdebstrap_argv,
    rewrite_sources,
)
from orchestrator.images import IMAGE_NAMES, ImageSources, cli_version, image_ref, image_refs
from orchestrator.main import main

CHECKOUT = ImageSources.checkout()
PINNED = {"claude": "2.1.197", "codex": "0.169.0", "gemini": "0.61.0"}


@pytest.fixture
def sources(tmp_path: Path) -> ImageSources:
    """A private copy of the image inputs (images/ and a small model server package)."""
    shutil.copytree(CHECKOUT.images_dir, tmp_path / "images")
    package = tmp_path / "orchestrator" / "modelserver"
    package.mkdir(parents=True)
    (package / "__main__.py").write_text("print('serving')\n")
    return ImageSources(tmp_path)


def refs(settings: Settings, sources: ImageSources) -> dict[str, str]:
    return image_refs(settings, IMAGE_NAMES, sources)


def test_tags_have_the_prefix_the_name_and_a_12_hex_hash(settings: Settings, sources: ImageSources) -> None:
    """Each tag is ``<prefix>-<name>:<12 hex>``."""
    for name, ref in refs(settings, sources).items():
        repository, _, tag = ref.partition(":")
        assert f"meta-orchestrator-{name}" == repository
        assert len(tag) == HASH_LENGTH
        assert set(tag) <= set("0123456789abcdef")


def test_the_hash_is_stable(settings: Settings, sources: ImageSources) -> None:
    """Computing the tags twice, or from an identical copy of the inputs, gives the same tags."""
    first = refs(settings, sources)
    assert first == refs(settings, sources)
    again = ImageSources(sources.root.parent / "again")
    shutil.copytree(sources.root, again.root)
    assert first == refs(settings, again)


def test_the_tags_differ_per_image(settings: Settings, sources: ImageSources) -> None:
    """No two images share a hash."""
    hashes = [ref.partition(":")[2] for ref in refs(settings, sources).values()]
    assert len(IMAGE_NAMES) == len(set(hashes))


# (file changed, images whose tag must move); every non-base image is built FROM the base, and the
# server ships every other image's inputs (tests/unit/test_server_image.py has its own inputs).
INPUT_CHANGES = [
    ("images/base/recipe.toml", set(IMAGE_NAMES)),
    ("images/claude/Dockerfile", {"claude", "server"}),
    ("images/claude/package-lock.json", {"claude", "server"}),
    ("images/claude/package.json", {"claude", "server"}),
    ("images/codex/package-lock.json", {"codex", "server"}),
    ("images/gemini/Dockerfile", {"gemini", "server"}),
    ("images/modelserver/Dockerfile", {"modelserver", "server"}),
    ("orchestrator/modelserver/__main__.py", {"modelserver", "server"}),
    # Without an override the base's Dockerfile is unused, so it is no input.
    ("images/base/Dockerfile", set()),
    ("images/README.md", set()),
]


@pytest.mark.parametrize(("path", "moved"), INPUT_CHANGES)
def test_changing_an_input_moves_exactly_the_tags_built_from_it(
    settings: Settings, sources: ImageSources, path: str, moved: set[str]
) -> None:
    """Appending one byte to an input changes the tags of the images that use it, and only those."""
    before = refs(settings, sources)
    target = sources.root / path
    target.write_bytes((target.read_bytes() if target.exists() else b"") + b"\n")
    after = refs(settings, sources)
    assert moved == {name for name in IMAGE_NAMES if before[name] != after[name]}


def test_a_new_model_server_file_moves_its_tag(settings: Settings, sources: ImageSources) -> None:
    """Adding a module to the model server package changes its tag; bytecode caches do not."""
    before = image_ref(settings, "modelserver", sources)
    cache = sources.modelserver_dir / "__pycache__"
    cache.mkdir()
    (cache / "x.cpython-311.pyc").write_bytes(b"\0")
    assert before == image_ref(settings, "modelserver", sources)
    (sources.modelserver_dir / "scenarios.py").write_text("SCENARIOS = {}\n")
    assert before != image_ref(settings, "modelserver", sources)


def test_the_base_override_moves_every_tag(settings: Settings, sources: ImageSources) -> None:
    """ORCH_BASE_IMAGE changes the base, hence every image; then the base Dockerfile is an input."""
    plain = refs(settings, sources)
    stock = settings.model_copy(update={"base_image": "debian:trixie-slim"})
    other = settings.model_copy(update={"base_image": "debian:trixie-20250520-slim"})
    with_stock = refs(stock, sources)
    assert all(plain[name] != with_stock[name] for name in IMAGE_NAMES)
    assert all(with_stock[name] != refs(other, sources)[name] for name in IMAGE_NAMES)
    dockerfile = sources.image_dir("base") / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "# changed\n")
    assert with_stock["base"] != image_ref(stock, "base", sources)


def test_the_prefix_names_the_repository_but_not_the_hash(settings: Settings, sources: ImageSources) -> None:
    """ORCH_IMAGE_PREFIX only renames: the content hash stays."""
    renamed = settings.model_copy(update={"image_prefix": "registry.example:5000/team/mo"})
    expected = (
        "registry.example:5000/team/mo-claude:" + image_ref(settings, "claude", sources).partition(":")[2]
    )
    assert expected == image_ref(renamed, "claude", sources)


@pytest.mark.parametrize("name", ["", "Claude", "claude ", "../base", "base:latest", "docker", "gemini-cli"])
def test_unknown_image_names_are_refused_with_the_valid_ones(settings: Settings, name: str) -> None:
    """A garbage image name is a UsageError that lists the valid names."""
    with pytest.raises(UsageError) as caught:
        image_ref(settings, name)
    assert (
        f"unknown image {name!r}: expected one of base, claude, codex, gemini, modelserver, proxy, server"
        == str(caught.value)
    )


@given(st.text(max_size=30).filter(lambda text: text not in IMAGE_NAMES))
def test_every_other_name_is_refused(name: str) -> None:
    """For all strings that are not image names, image_refs raises UsageError (never anything else)."""
    settings = Settings(_env_file=None)
    with pytest.raises(UsageError):
        image_refs(settings, ["claude", name])


@pytest.mark.parametrize("prefix", ["", "Upper", "has space", "trailing-", "a//b", "-lead", "x:tag"])
def test_a_bad_prefix_is_a_config_error_naming_the_setting(settings: Settings, prefix: str) -> None:
    """A prefix Docker would reject fails early with the setting's name in the fix."""
    bad = settings.model_copy(update={"image_prefix": prefix})
    with pytest.raises(ConfigError, match="ORCH_IMAGE_PREFIX"):
        image_ref(bad, "base")


@pytest.mark.parametrize(
    "base", ["", "debian trixie", "Debian:trixie", "debian:", "debian:trixie; rm -rf /", "a@sha256:zz"]
)
def test_a_bad_base_override_is_a_config_error_naming_the_setting(settings: Settings, base: str) -> None:
    """A base override that is not an image reference fails early with the setting's name in the fix."""
    bad = settings.model_copy(update={"base_image": base})
    with pytest.raises(ConfigError, match="ORCH_BASE_IMAGE"):
        image_ref(bad, "claude")


def test_a_missing_input_is_an_environment_problem_naming_the_file(
    settings: Settings, sources: ImageSources
) -> None:
    """A deleted Dockerfile is reported with its path and how to restore it."""
    (sources.image_dir("codex") / "Dockerfile").unlink()
    with pytest.raises(EnvironmentProblem, match=r"images/codex/Dockerfile cannot be read .*git checkout"):
        image_ref(settings, "codex", sources)


def test_the_pinned_cli_versions_come_from_the_locks() -> None:
    """The locks in the checkout pin the CLI versions the recorded transcripts were made with."""
    assert {name: cli_version(name) for name in PINNED} == PINNED
    assert cli_version("base") is None
    assert cli_version("modelserver") is None


@pytest.mark.parametrize(
    ("lock", "expected"),
    [
        (b'{"packages": {"node_modules/x": {"version": "1.2.3"}}}', "1.2.3"),
        (b'{"packages": {}}', ""),
        (b'{"packages": {"node_modules/x": "1.2.3"}}', ""),
        (b"not json", ""),
        (b"[]", ""),
    ],
)
def test_lock_version_reads_the_pin_and_tolerates_garbage(lock: bytes, expected: str) -> None:
    """The version comes from ``packages["node_modules/<pkg>"].version``; anything else gives ''."""
    assert expected == lock_version(lock, "x")


def test_digest_separates_labels_from_data() -> None:
    """Moving bytes between a label and its data changes the digest (parts are length-prefixed)."""
    assert digest([("ab", b"c")]) != digest([("a", b"bc")])
    assert digest([("a", b""), ("b", b"")]) != digest([("a", b"\x00"), ("b", b"")])


SOURCES = """Types: deb
# snapshot comment
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_host_sources_are_renamed_to_the_recipe_suite() -> None:
    """The host's bookworm suites become trixie suites; everything else is kept."""
    expected = SOURCES.replace("bookworm", "trixie")
    assert expected == rewrite_sources(SOURCES, "bookworm", "trixie")


@pytest.mark.parametrize("codename", ["", "trixie"])
def test_sources_are_kept_when_the_host_suite_is_unknown_or_equal(codename: str) -> None:
    """Nothing to rename when the host has no codename or already runs the recipe's suite."""
    assert rewrite_sources(SOURCES, codename, "trixie") == SOURCES


@pytest.mark.parametrize(
    ("os_release", "expected"),
    [
        ('NAME="Debian"\nVERSION_CODENAME=bookworm\n', "bookworm"),
        ('VERSION_CODENAME="trixie"', "trixie"),
        ("", ""),
    ],
)
def test_host_codename_is_read_from_os_release(os_release: str, expected: str) -> None:
    """VERSION_CODENAME, with or without quotes; '' when absent."""
    assert expected == host_codename(os_release)


def test_the_base_recipe_becomes_argv_lists() -> None:
    """mmdebstrap writes a tar to stdout from the given sources file; docker import tags and labels it."""
    recipe = load_recipe((CHECKOUT.image_dir("base") / "recipe.toml").read_text())
    argv = mmdebstrap_argv(recipe, Path("/b/trixie.sources"))
    assert argv[:2] == ["mmdebstrap", "--variant=minbase"]
    assert "--include=bash,ca-certificates,coreutils,git,nodejs,python3" in argv
    assert argv[-3:] == ["trixie", "-", "/b/trixie.sources"]
    assert mmdebstrap_argv(recipe, None)[-2:] == ["trixie", "-"]
    imported = import_argv(recipe, "mo-base:abc", {"meta-orchestrator.image": "base"})
    assert imported[:2] == ["docker", "import"]
    assert imported[-2:] == ["-", "mo-base:abc"]
    assert '--change=LABEL meta-orchestrator.image="base"' in imported


@pytest.mark.parametrize(
    "text",
    [
        "not toml [",
        'suite = "trixie"',
        'suite = "Trixie!"\nvariant="minbase"\npackages=["a"]\nsource_date_epoch=0',
    ],
)
def test_a_broken_recipe_is_a_config_error(text: str) -> None:
    """Unparseable or incomplete recipes fail with the file's name and the fix."""
    with pytest.raises(ConfigError, match=r"(?s)recipe.toml is not a valid base recipe: .*fix the file"):
        load_recipe(text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["images", "build", "--only", "nonsense"],
            "error: unknown image 'nonsense': expected one of base, claude",
        ),
        (
            ["images", "build", "--only", "claude", "--only", ""],
            "error: unknown image '': expected one of base",
        ),
    ],
)
def test_the_cli_refuses_garbage_names_before_touching_docker(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``orchestrate images build --only <garbage>`` exits 2 (usage) with the valid names."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_prefix_from_the_environment_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ORCH_IMAGE_PREFIX garbage reaches the user as a config error, exit 2, naming the setting."""
    monkeypatch.setenv("ORCH_IMAGE_PREFIX", "Not A Prefix")
    with pytest.raises(SystemExit) as exited:
        main(["images", "list"])
    assert exited.value.code == 2
    assert "ORCH_IMAGE_PREFIX" in capsys.readouterr().err
