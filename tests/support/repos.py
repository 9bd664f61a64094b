"""A small git repository to run sessions on: branch ``main``, one commit holding ``app.py``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orchestrator.gitwork import git


def make_repo(tmp_path: Path) -> Path:
    """``tmp_path/repo``: ``git init -b main`` and one commit of ``app.py``."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "app.py").write_text("print('hi')\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "init")
    return repo
