"""Worktrees for implementers, on real git repositories in temporary folders."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from orchestra.domain.errors import Conflict, InvalidInput
from orchestra.workflows.git_worktree import (
    check_repository,
    create_worktree,
    diff,
    git,
    list_worktrees,
    remove_worktree,
    restore,
    snapshot,
)

WF1 = "a1" * 16
WF2 = "b2" * 16


def _repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text("print('hello')\n")
    (path / ".gitignore").write_text("build/\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


def _status(path: Path) -> str:
    return git(path, "status", "--porcelain", "--untracked-files=all")


def test_a_worktree_is_cut_from_head_on_its_own_branch_and_the_base_stays_clean(
    tmp_path: Path,
) -> None:
    repo = _repo(tmp_path / "repo")
    head = git(repo, "rev-parse", "HEAD").strip()
    wt = create_worktree(repo, "Add a --json flag", WF1)
    assert wt.base == head
    assert wt.branch == f"orchestra/add-a-json-flag-{WF1[:8]}"
    assert (wt.path / "app.py").read_text() == "print('hello')\n"
    assert git(wt.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == wt.branch
    assert _status(repo) == ""  # .orchestra/ is excluded locally, never committed
    assert list_worktrees(repo) == [wt.path]
    # Made again (a restarted step): the same worktree, no second one.
    assert create_worktree(repo, "Add a --json flag", WF1) == wt
    assert list_worktrees(repo) == [wt.path]


def test_snapshots_keep_each_iteration_and_restore_brings_one_back(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    wt = create_worktree(repo, "flag", WF1)
    (wt.path / "app.py").write_text("print('hello, json')\n")
    (wt.path / "new.py").write_text("x = 1\n")
    (wt.path / "build").mkdir()
    (wt.path / "build" / "out.bin").write_bytes(b"\0ignored")
    first = snapshot(wt, 1)
    assert git(repo, "rev-parse", f"refs/orchestra/{WF1}/1").strip() == first
    # the branch and the person's index did not move
    assert git(wt.path, "rev-parse", "HEAD").strip() == wt.base
    assert git(wt.path, "diff", "--cached", "--name-only") == ""

    # the agent goes on, then its step is cut short: back to the snapshot
    (wt.path / "app.py").write_text("broken\n")
    (wt.path / "new.py").unlink()
    (wt.path / "half.py").write_text("half-written\n")
    restore(wt, first)
    assert (wt.path / "app.py").read_text() == "print('hello, json')\n"
    assert (wt.path / "new.py").read_text() == "x = 1\n"
    assert not (wt.path / "half.py").exists()
    assert (wt.path / "build" / "out.bin").exists()  # ignored files are not the agent's work

    changes = {d.path: d for d in diff(wt, first)}
    assert set(changes) == {"app.py", "new.py"}
    assert (changes["app.py"].added, changes["app.py"].removed) == (1, 1)
    assert (changes["new.py"].added, changes["new.py"].removed) == (1, 0)
    assert "+print('hello, json')" in changes["app.py"].patch


def test_two_workflows_on_one_repository_never_touch_each_others_worktree(
    tmp_path: Path,
) -> None:
    repo = _repo(tmp_path / "repo")
    one, two = create_worktree(repo, "same name", WF1), create_worktree(repo, "same name", WF2)
    assert one.path != two.path and one.branch != two.branch
    (one.path / "app.py").write_text("one\n")
    (two.path / "app.py").write_text("two\n")
    s1, s2 = snapshot(one, 1), snapshot(two, 1)
    remove_worktree(one)
    assert (two.path / "app.py").read_text() == "two\n"
    assert [d.path for d in diff(two, s2)] == ["app.py"]
    assert git(repo, "cat-file", "-t", s1).strip() == "commit"  # an object, now unreferenced
    assert git(repo, "for-each-ref", f"refs/orchestra/{WF1}") == ""
    assert git(repo, "branch", "--list", one.branch) == ""
    assert list_worktrees(repo) == [two.path]


def test_removing_leaves_no_worktree_branch_or_ref_and_may_keep_the_branch(
    tmp_path: Path,
) -> None:
    repo = _repo(tmp_path / "repo")
    wt = create_worktree(repo, "flag", WF1)
    snapshot(wt, 1)
    remove_worktree(wt, keep_branch=True)
    assert not wt.path.exists() and list_worktrees(repo) == []
    assert git(repo, "branch", "--list", wt.branch).strip() != ""
    assert git(repo, "for-each-ref", "refs/orchestra") == ""
    remove_worktree(wt)  # idempotent, and now the branch goes too
    assert git(repo, "branch", "--list", wt.branch) == ""
    assert _status(repo) == ""


def test_workspaces_a_worktree_cannot_be_cut_from_are_clear_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(InvalidInput, match="not a git repository"):
        create_worktree(plain, "flag", WF1)
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(InvalidInput, match="no commit yet"):
        check_repository(empty)
    dirty = _repo(tmp_path / "dirty")
    (dirty / "app.py").write_text("edited, not committed\n")
    with pytest.raises(InvalidInput, match=r"uncommitted changes .*app\.py"):
        create_worktree(dirty, "flag", WF1)
    assert not (dirty / ".orchestra").exists()  # nothing half-made
    merging = _repo(tmp_path / "merging")
    (Path(git(merging, "rev-parse", "--absolute-git-dir").strip()) / "MERGE_HEAD").write_text("x")
    with pytest.raises(InvalidInput, match="middle of a merge"):
        check_repository(merging)
    taken = _repo(tmp_path / "taken")
    git(taken, "branch", f"orchestra/flag-{WF1[:8]}")
    with pytest.raises(Conflict, match="already exists"):
        create_worktree(taken, "flag", WF1)
    with pytest.raises(InvalidInput, match="not a workflow id"):
        create_worktree(taken, "flag", "../../etc")


def test_hostile_file_names_and_contents_are_data(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    wt = create_worktree(repo, "$(touch pwned); rm -rf /", WF1)
    assert re.fullmatch(r"orchestra/[a-z0-9-]+", wt.branch), wt.branch  # a slug: only words
    assert wt.path.parent == repo.resolve() / ".orchestra" / "worktrees"
    hostile = ["$(touch pwned).py", "-rf", "--output=x", "a\nb.txt", "ünï cödé.md", "`id`.sh"]
    for name in hostile:
        (wt.path / name).write_text("$(touch pwned2)\n`id`\n")
    commit = snapshot(wt, 1)
    found = {d.path for d in diff(wt, commit)}
    assert found == set(hostile)
    assert not list(tmp_path.rglob("pwned*")) and not (Path.cwd() / "pwned").exists()
    assert not (wt.path / "x").exists()  # "--output=x" was a path, not an option


def test_git_runs_without_a_shell_and_ignores_the_callers_git_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(tmp_path / "repo")
    other = _repo(tmp_path / "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))  # would point git elsewhere
    wt = create_worktree(repo, "flag", WF1)
    assert wt.repo == repo.resolve()
    assert (
        subprocess.run(
            [
                "git",
                "-C",
                str(other),
                "--git-dir",
                str(other / ".git"),
                "branch",
                "--list",
                wt.branch,
            ],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        == ""
    )


def test_the_approved_snapshot_replaces_commits_an_agent_made_on_the_branch(
    tmp_path: Path,
) -> None:
    from orchestra.workflows.git_worktree import commit_snapshot

    repo = _repo(tmp_path / "repo")
    wt = create_worktree(repo, "agent commits", WF1)
    (wt.path / "new.py").write_text("x = 1\n")
    git(wt.path, "add", "-A")
    git(wt.path, "commit", "-q", "-m", "the agent committed by itself")
    shot = snapshot(wt, 1)
    commit = commit_snapshot(wt, shot, "Reviewed change\n")
    assert git(repo, "rev-list", "--parents", "-n", "1", commit).split()[1:] == [wt.base]
    assert git(repo, "rev-parse", wt.branch).strip() == commit
    assert git(repo, "show", f"{commit}:new.py") == "x = 1\n"
    assert commit_snapshot(wt, shot, "Reviewed change\n") == commit  # run again: the same
