"""A real git repository in a temporary folder, as Implement & Review's tests need:
one commit holding ``app.py`` on ``main``."""

from __future__ import annotations

from pathlib import Path

from orchestra.workflows.git_worktree import git


def git_repo(path: Path, *, app: str = "print('hello')\n") -> Path:
    """``path`` made a repository with ``app.py`` (``app``) committed on ``main``."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text(app)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path
