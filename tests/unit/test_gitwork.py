"""Git isolation: clones per task, branches in the user's repo, merges that never touch a checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import DirtyRepository, UsageError
from orchestrator.gitwork import SessionRepo, git
from tests.support.repos import make_repo


def test_tasks_work_in_clones_and_their_branches_merge_into_the_session_branch(tmp_path: Path) -> None:
    """Two tasks change different files; both merge; the user's checkout is unchanged."""
    repo = make_repo(tmp_path)
    session = SessionRepo.prepare(repo, "sess0001", tmp_path / "ws")
    for task, name in (("t1", "a.txt"), ("t2", "b.txt")):
        clone = session.checkout_task(task)
        (clone / name).write_text(f"{task}\n")
        stat = session.collect(task, f"{task} work")
        assert (stat.files, stat.insertions) == ([name], 1)
        assert session.merge(task, f"merge {task}").merged
        session.remove_checkout(task)
    files = git(repo, "ls-tree", "--name-only", "orch/sess0001").stdout.split()
    assert files == ["a.txt", "app.py", "b.txt"]
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip() == "main"
    assert not (repo / "a.txt").exists()
    assert git(repo, "status", "--porcelain").stdout == ""


def test_a_dependent_task_starts_from_the_merged_work_of_its_dependency(tmp_path: Path) -> None:
    """A clone is taken at the integration tip, which holds merged dependencies."""
    repo = make_repo(tmp_path)
    session = SessionRepo.prepare(repo, "sess0001", tmp_path / "ws")
    clone = session.checkout_task("t1")
    (clone / "lib.py").write_text("x = 1\n")
    session.collect("t1", "t1")
    session.merge("t1", "merge t1")
    assert (session.checkout_task("t2") / "lib.py").read_text() == "x = 1\n"


def test_a_conflict_names_the_files_and_changes_nothing(tmp_path: Path) -> None:
    """Two tasks edit the same line: the second merge reports the file, the branch keeps the first."""
    repo = make_repo(tmp_path)
    session = SessionRepo.prepare(repo, "sess0001", tmp_path / "ws")
    clones = {t: session.checkout_task(t) for t in ("t1", "t2")}
    for task, clone in clones.items():
        (clone / "app.py").write_text(f"print('{task}')\n")
        session.collect(task, task)
    assert session.merge("t1", "merge t1").merged
    tip = session.tip()
    result = session.merge("t2", "merge t2")
    assert (result.merged, result.conflicts) == (False, ["app.py"])
    assert session.tip() == tip
    assert git(repo, "rev-parse", "--verify", "-q", "orch/sess0001-t2").returncode == 0


def test_a_dirty_repository_is_refused_unless_allowed(tmp_path: Path) -> None:
    """Uncommitted changes: refused naming the file; with allow_dirty they stay untouched."""
    repo = make_repo(tmp_path)
    (repo / "app.py").write_text("changed\n")
    with pytest.raises(DirtyRepository, match=r"app\.py"):
        SessionRepo.prepare(repo, "sess0001", tmp_path / "ws")
    session = SessionRepo.prepare(repo, "sess0001", tmp_path / "ws", allow_dirty=True)
    assert (session.checkout_task("t1") / "app.py").read_text() == "print('hi')\n"
    assert (repo / "app.py").read_text() == "changed\n"


def test_a_plain_folder_is_copied_never_modified(tmp_path: Path) -> None:
    """A non-git folder becomes a git copy in the workspace; the original gains nothing."""
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "notes.md").write_text("n\n")
    session = SessionRepo.prepare(folder, "sess0001", tmp_path / "ws")
    assert session.copied
    assert session.repo == tmp_path / "ws" / "repo"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.md"]


@pytest.mark.parametrize("bad", ["does/not/exist", "file.txt"])
def test_a_repository_that_is_not_a_folder_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    """--repo must name an existing folder."""
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UsageError, match="is not a folder"):
        SessionRepo.prepare(tmp_path / bad, "sess0001", tmp_path / "ws")
