"""Git isolation of a session's work: a clone per task, branches, merges that never touch a checkout.

Layout and rules:
- The user's repository is only ever *read* and given new branches: ``orch/<session>`` (the
  integration branch, starting at the user's HEAD) and ``orch/<session>-<task>`` per write task (git
  refuses ``orch/<session>/<task>`` beside a branch ``orch/<session>``: a ref cannot be a folder too).
  Their working tree, index and current branch are never changed.
- Each task works in its own clone under ``workspace/<session>/worktrees/<task>`` (``--no-hardlinks``,
  so it can be handed to the container's uid without touching the user's files), checked out on
  ``orch/<session>-<task>`` at the tip of ``orch/<session>`` — so it sees the merged work of the
  tasks it depends on. Its ``.git`` lives inside the mount, so the agent can use git in the container.
- After the worker, the orchestrator commits what the agent left uncommitted and fetches the task
  branch into the user's repository; only then is the clone removed (its commits are safe).
- Merging uses ``git merge-tree --write-tree`` + ``commit-tree`` + ``update-ref``: no work tree is
  needed; a conflict changes nothing and reports the conflicting files.
- A folder that is not a git repository is copied into ``workspace/<session>/repo`` and committed
  there; the copy then plays the repository. The user's folder is never modified.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import DirtyRepository, OrchestratorError, UsageError
from orchestrator.log import get_logger

log = get_logger(__name__)
AUTHOR = ("Meta-Orchestrator", "orchestrator@localhost")


class GitError(OrchestratorError):
    """A git command failed."""

    code = "git"


@dataclass(frozen=True)
class DiffStat:
    files: list[str] = field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    diff: str = ""


@dataclass(frozen=True)
class MergeResult:
    merged: bool
    commit: str = ""
    conflicts: list[str] = field(default_factory=list)


@functools.cache
def _global_config() -> str:
    """A global git config for the orchestrator's own git calls: clones may belong to the
    container's uid, and ``safe.directory`` is honoured only from protected (global) config, also
    by the ``upload-pack`` a local fetch starts."""
    handle, path = tempfile.mkstemp(prefix="orchestrator-gitconfig-")
    os.write(handle, b"[safe]\n\tdirectory = *\n[core]\n\thooksPath = /dev/null\n")
    os.close(handle)
    return path


def _env() -> dict[str, str]:
    name, email = AUTHOR
    return {**os.environ, "GIT_CONFIG_GLOBAL": _global_config(), "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}  # fmt: skip


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git in ``cwd`` (ownership checks off: clones may belong to the container's uid)."""
    argv = ["git", "-c", "safe.directory=*", "-c", "core.hooksPath=/dev/null", "-C", str(cwd), *args]
    result = subprocess.run(argv, capture_output=True, text=True, env=_env(), check=False)
    if check and result.returncode != 0:
        raise GitError(
            f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def is_git_repo(path: Path) -> bool:
    return git(path, "rev-parse", "--is-inside-work-tree", check=False).stdout.strip() == "true"


def repo_owner(path: Path) -> tuple[int, int]:
    """The uid/gid that owns the repository folder."""
    stat = path.stat()
    return stat.st_uid, stat.st_gid


@dataclass
class SessionRepo:
    """The git side of one session."""

    repo: Path
    session_id: str
    worktrees: Path
    copied: bool = False

    @property
    def branch(self) -> str:
        return f"orch/{self.session_id}"

    def task_branch(self, task_id: str) -> str:
        """``orch/<session>-<task>``: git cannot hold ``orch/<session>/<task>`` next to ``orch/<session>``."""
        return f"orch/{self.session_id}-{task_id}"

    @classmethod
    def prepare(
        cls, repo: Path, session_id: str, session_root: Path, allow_dirty: bool = False
    ) -> SessionRepo:
        """Check the repository and create the integration branch (idempotent, for resume)."""
        repo = repo.expanduser().resolve()
        if not repo.is_dir():
            raise UsageError(f"repository {str(repo)!r} is not a folder: give --repo an existing folder")
        worktrees = session_root / "worktrees"
        copied = False
        if not is_git_repo(repo):
            repo = _copy_into_git(repo, session_root / "repo")
            copied = True
        else:
            top = Path(git(repo, "rev-parse", "--show-toplevel").stdout.strip())
            repo = top
            if git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
                raise UsageError(f"repository {str(repo)!r} has no commit yet: commit something first")
            dirty = [
                line
                for line in git(repo, "status", "--porcelain", "--untracked-files=no").stdout.splitlines()
                if line
            ]
            if dirty and not allow_dirty:
                files = ", ".join(line[3:] for line in dirty[:5])
                raise DirtyRepository(
                    f"repository {str(repo)!r} has uncommitted changes ({files}); commit or stash them, "
                    "or pass --allow-dirty (agents then work from the last commit; your changes stay untouched)"
                )
        session = cls(repo, session_id, worktrees, copied)
        if (
            git(repo, "rev-parse", "--verify", "-q", f"refs/heads/{session.branch}", check=False).returncode
            != 0
        ):
            git(repo, "branch", session.branch, "HEAD")
        return session

    def tip(self) -> str:
        return git(self.repo, "rev-parse", f"refs/heads/{self.branch}").stdout.strip()

    def checkout_task(
        self, task_id: str, uid: int | None = None, gid: int | None = None, reuse: bool = False
    ) -> Path:
        """A fresh clone on the task's branch at the integration tip; owned by ``uid`` when given.

        ``reuse``: keep an existing clone on the task's branch (a resumed session: the agent's
        uncommitted work is there).
        """
        dest = self.worktrees / task_id
        if reuse and (dest / ".git").is_dir():
            head = git(dest, "rev-parse", "--abbrev-ref", "HEAD", check=False).stdout.strip()
            if head == self.task_branch(task_id):
                return dest
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        git(self.repo, "clone", "--quiet", "--no-hardlinks", "--no-checkout", str(self.repo), str(dest))
        git(dest, "checkout", "--quiet", "-B", self.task_branch(task_id), self.tip())
        git(dest, "config", "user.name", AUTHOR[0])
        git(dest, "config", "user.email", AUTHOR[1])
        if uid is not None and os.geteuid() == 0:
            _chown_tree(dest, uid, gid if gid is not None else uid)
        return dest

    def collect(self, task_id: str, message: str) -> DiffStat:
        """Commit what the agent left in the task's clone, fetch the branch home, return its diff."""
        clone = self.worktrees / task_id
        base = self.tip()
        git(clone, "add", "-A")
        if git(clone, "diff", "--cached", "--quiet", check=False).returncode != 0:
            git(clone, "commit", "--quiet", "--no-verify", "-m", message)
        branch = self.task_branch(task_id)
        git(self.repo, "fetch", "--quiet", str(clone), f"+{branch}:refs/heads/{branch}")
        return self.diff(base, branch)

    def diff(self, base: str, branch: str) -> DiffStat:
        numstat = git(self.repo, "diff", "--numstat", f"{base}...{branch}").stdout
        files, plus, minus = [], 0, 0
        for line in numstat.splitlines():
            added, removed, name = line.split("\t", 2)
            files.append(name)
            plus += int(added) if added.isdigit() else 0
            minus += int(removed) if removed.isdigit() else 0
        text = git(self.repo, "diff", f"{base}...{branch}").stdout
        return DiffStat(files, plus, minus, text)

    def merge(self, task_id: str, message: str) -> MergeResult:
        """Merge the task branch into the integration branch without a work tree."""
        branch, target = self.task_branch(task_id), self.branch
        old = self.tip()
        result = git(self.repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", target, branch,
                     check=False)  # fmt: skip
        lines = result.stdout.strip().splitlines()
        if result.returncode == 1:
            return MergeResult(False, conflicts=sorted(set(lines[1:])))
        if result.returncode != 0 or not lines:
            raise GitError(f"git merge-tree failed for {branch}: {result.stderr.strip()}")
        tree = lines[0]
        if tree == git(self.repo, "rev-parse", f"{old}^{{tree}}").stdout.strip():
            return MergeResult(True, old)
        commit = git(self.repo, "commit-tree", tree, "-p", old, "-p", branch, "-m", message).stdout.strip()
        git(self.repo, "update-ref", f"refs/heads/{target}", commit, old)
        return MergeResult(True, commit)

    def remove_checkout(self, task_id: str) -> None:
        """Delete the task's clone once its branch is in the repository."""
        branch = self.task_branch(task_id)
        if git(self.repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}", check=False).returncode != 0:
            raise GitError(f"refusing to remove the clone of {task_id}: branch {branch} is not safe yet")
        shutil.rmtree(self.worktrees / task_id, ignore_errors=True)


def _copy_into_git(source: Path, dest: Path) -> Path:
    if not dest.exists():
        shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        git(dest, "init", "--quiet", "-b", "main")
        git(dest, "add", "-A")
        git(dest, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", f"snapshot of {source}")
    return dest


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.lchown(path, uid, gid)
