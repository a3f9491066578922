"""Git worktrees for agents that change code: one per workflow, snapshots per iteration.

The building block of Implement & Review (issue 15): an implementer works in its
own worktree on a new branch ``orchestra/<slug>-<id prefix>`` cut from the
workspace's HEAD, under ``<workspace>/.orchestra/worktrees/`` (which the
repository's local ``info/exclude`` hides, so the base never looks dirty
because of Orchestra). Each iteration's result is snapshotted to a private ref
``refs/orchestra/<workflow id>/<iteration>`` — a commit of every file in the
worktree, made with a temporary index, so neither the branch nor the person's
index moves — and a step cut short is reset to the last snapshot.

Git runs through its CLI with argument lists (never a shell), with a timeout,
bounded output, no pager, no hooks, and the environment cleared of ``GIT_*``
variables that could point it at another repository. Paths come back NUL-
separated (``-z``), so a hostile file name is data, never a command. Every
function blocks: callers run them in a thread, outside any transaction.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestra.domain.code import DiffFile
from orchestra.domain.errors import Conflict, InvalidInput, OrchestraError
from orchestra.workflows.plan_files import ID_PREFIX_CHARS, slugify

WORKTREES_DIR = Path(".orchestra") / "worktrees"
REF_PREFIX = "refs/orchestra"
GIT_TIMEOUT_S = 60.0
#: The most of a command's output kept (a diff of a huge generated file, say).
MAX_OUTPUT_BYTES = 4_000_000
_IDENTITY = {
    "GIT_AUTHOR_NAME": "orchestra",
    "GIT_AUTHOR_EMAIL": "orchestra@localhost",
    "GIT_COMMITTER_NAME": "orchestra",
    "GIT_COMMITTER_EMAIL": "orchestra@localhost",
}
_SAFE_ID = re.compile(r"[0-9a-f]{8,64}")


class GitFailed(OrchestraError):
    """Git itself failed (not bad input): what ran, and what it said."""

    code = "git_failed"


@dataclass(frozen=True)
class Worktree:
    """A workflow's worktree: where it is, its branch, and the commit it was cut from."""

    repo: Path
    path: Path
    branch: str
    base: str
    workflow_id: str


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_IDENTITY)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_PAGER="cat", LC_ALL="C")
    return env


def git(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ok: tuple[int, ...] = (0,),
) -> str:
    """Run ``git args…`` in ``cwd``; its output (bounded). Raises :class:`GitFailed`."""
    command = ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.quotepath=off", *args]
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=env or _env(),
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitFailed(f"git {args[0]} could not run: {exc}") from exc
    if done.returncode not in ok:
        said = done.stderr.decode("utf-8", "replace").strip()[-2000:]
        raise GitFailed(
            f"git {args[0]} failed ({done.returncode}): {said}",
            details={"command": args[0], "exit_code": done.returncode},
        )
    return done.stdout[:MAX_OUTPUT_BYTES].decode("utf-8", "replace")


def check_repository(workspace: Path) -> str:
    """The workspace's HEAD commit, if a worktree can be cut from it; otherwise a
    clear :class:`InvalidInput` (not a repository, no commit yet, a merge or rebase
    in progress, uncommitted changes outside ``.orchestra/``)."""
    where = {"field": "workspace_path"}
    require_repository(workspace)
    head = git(workspace, "rev-parse", "--verify", "-q", "HEAD^{commit}", ok=(0, 1)).strip()
    if not head:
        raise InvalidInput(
            f"repository {str(workspace)!r} has no commit yet; commit first", details=where
        )
    git_dir = Path(git(workspace, "rev-parse", "--absolute-git-dir").strip())
    for marker, what in (
        ("MERGE_HEAD", "a merge"),
        ("rebase-merge", "a rebase"),
        ("rebase-apply", "a rebase"),
        ("CHERRY_PICK_HEAD", "a cherry-pick"),
    ):
        if (git_dir / marker).exists():
            raise InvalidInput(
                f"repository {str(workspace)!r} is in the middle of {what}; finish or abort it",
                details=where,
            )
    changed = git(
        workspace,
        "status",
        "--porcelain",
        "-z",
        "--untracked-files=all",
        "--",
        ".",
        ":(exclude).orchestra",
    )
    if changed:
        names = [entry[3:] for entry in changed.split("\0") if entry][:5]
        raise InvalidInput(
            f"repository {str(workspace)!r} has uncommitted changes ({', '.join(names)}…); "
            "commit or stash them first: the implementer starts from HEAD",
            details=where,
        )
    return head


def require_repository(workspace: Path) -> None:
    """Refuse a workspace that is not a git repository (:class:`InvalidInput`)."""
    inside = git(workspace, "rev-parse", "--is-inside-work-tree", ok=(0, 128)).strip()
    if inside != "true":
        raise InvalidInput(
            f"workspace {str(workspace)!r} is not a git repository; run `git init` and commit "
            "first, or choose a repository",
            details={"field": "workspace_path"},
        )


def _hide_orchestra_dir(workspace: Path) -> None:
    """Add ``.orchestra/`` to the repository's local exclude file (never committed)."""
    common = Path(git(workspace, "rev-parse", "--git-common-dir").strip())
    exclude = (common if common.is_absolute() else workspace / common) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if "/.orchestra/" not in lines:
        exclude.write_text("\n".join([*lines, "/.orchestra/"]) + "\n")


def _checked_id(workflow_id: str) -> str:
    if not _SAFE_ID.fullmatch(workflow_id):
        raise InvalidInput(f"not a workflow id: {workflow_id!r}")
    return workflow_id


def worktree_for(workspace: Path, name: str, workflow_id: str, base: str) -> Worktree:
    """Where a workflow's worktree is (or will be), and its branch."""
    workflow_id = _checked_id(workflow_id)
    slug = slugify(name, 40) or "workflow"
    label = f"{slug}-{workflow_id[:ID_PREFIX_CHARS]}"
    repo = workspace.resolve()
    return Worktree(repo, repo / WORKTREES_DIR / label, f"orchestra/{label}", base, workflow_id)


def create_worktree(workspace: Path, name: str, workflow_id: str) -> Worktree:
    """Cut the workflow's worktree from HEAD on a new branch; the existing one when it
    was made before (a restarted step). Nothing is left half-made on failure."""
    existing = worktree_for(workspace, name, workflow_id, "")
    if (existing.path / ".git").exists():  # made before: the base may have moved since
        made_from = git(existing.path, "rev-parse", f"{REF_PREFIX}/{workflow_id}/base").strip()
        return Worktree(existing.repo, existing.path, existing.branch, made_from, workflow_id)
    base = check_repository(workspace)
    wt = worktree_for(workspace, name, workflow_id, base)
    if git(wt.repo, "branch", "--list", wt.branch).strip():
        raise Conflict(
            f"branch {wt.branch} already exists in {str(wt.repo)!r}; delete it or rename the "
            "workflow",
            details={"branch": wt.branch},
        )
    _hide_orchestra_dir(wt.repo)
    wt.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        git(wt.repo, "worktree", "add", "-q", "-b", wt.branch, str(wt.path), base)
        git(wt.repo, "update-ref", f"{REF_PREFIX}/{wt.workflow_id}/base", base)
    except GitFailed:
        remove_worktree(wt)
        raise
    return wt


def snapshot(wt: Worktree, iteration: int) -> str:
    """Commit every file of the worktree (untracked ones too, ignored ones not) to
    ``refs/orchestra/<workflow>/<iteration>``, without touching the branch or the
    worktree's index; the snapshot's commit id."""
    with tempfile.TemporaryDirectory(prefix="orchestra-index-") as tmp:
        env = {**_env(), "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(wt.path, "read-tree", wt.base, env=env)
        git(wt.path, "add", "-A", "--", ".", env=env)
        tree = git(wt.path, "write-tree", env=env).strip()
    message = f"orchestra: workflow {wt.workflow_id} iteration {iteration}"
    commit = git(wt.path, "commit-tree", tree, "-p", wt.base, "-m", message).strip()
    git(wt.path, "update-ref", f"{REF_PREFIX}/{wt.workflow_id}/{int(iteration)}", commit)
    return commit


def restore(wt: Worktree, commit: str) -> None:
    """Reset the worktree's files to a snapshot (or the base): a step cut short
    starts again from exactly what was recorded."""
    git(wt.path, "read-tree", "-u", "--reset", commit)
    git(wt.path, "clean", "-fdq")
    git(wt.path, "reset", "-q", "--mixed", wt.base)  # the index back on the base, files kept


def diff(wt: Worktree, commit: str) -> list[DiffFile]:
    """Each changed file of ``commit`` against the base: added/removed line counts and
    the unified diff (renames shown as delete + add; paths exactly as stored)."""
    counts = git(wt.path, "diff", "--numstat", "-z", "--no-renames", wt.base, commit)
    found: list[DiffFile] = []
    for entry in counts.split("\0"):
        if not entry:
            continue
        added, removed, path = entry.split("\t", 2)
        patch = git(wt.path, "diff", "--no-renames", "--no-color", wt.base, commit, "--", path)
        binary = added == "-"
        found.append(
            DiffFile(
                path=path,
                added=0 if binary else int(added),
                removed=0 if binary else int(removed),
                binary=binary,
                patch=patch,
            )
        )
    return found


def list_worktrees(workspace: Path) -> list[Path]:
    """The worktrees Orchestra made in this repository."""
    return list(worktree_branches(workspace))


def worktree_branches(workspace: Path) -> dict[Path, str | None]:
    """The worktrees Orchestra made in this repository, with the branch each has
    checked out (``None``: detached). Not a repository: :class:`InvalidInput`."""
    require_repository(workspace)
    listed = git(workspace, "worktree", "list", "--porcelain", "-z")
    root = (workspace.resolve() / WORKTREES_DIR).resolve()
    found: dict[Path, str | None] = {}
    current: Path | None = None
    for entry in listed.split("\0"):
        if entry.startswith("worktree "):
            current = Path(entry.split(" ", 1)[1])
            if current.resolve().is_relative_to(root):
                found[current] = None
            else:
                current = None
        elif entry.startswith("branch ") and current is not None:
            found[current] = entry.split(" ", 1)[1].removeprefix("refs/heads/")
    return found


def remove_worktree(wt: Worktree, *, keep_branch: bool = False) -> None:
    """Remove the worktree, its snapshots and (unless kept) its branch; idempotent."""
    if wt.path.exists():
        git(wt.repo, "worktree", "remove", "--force", str(wt.path), ok=(0, 128))
        if wt.path.exists():
            shutil.rmtree(wt.path)
    git(wt.repo, "worktree", "prune")
    refs = git(wt.repo, "for-each-ref", "--format=%(refname)", f"{REF_PREFIX}/{wt.workflow_id}")
    for ref in refs.split():
        git(wt.repo, "update-ref", "-d", ref)
    if not keep_branch and git(wt.repo, "branch", "--list", wt.branch).strip():
        git(wt.repo, "branch", "-q", "-D", wt.branch)


def base_branch(workspace: Path) -> str | None:
    """The branch the workspace has checked out (``None`` on a detached HEAD)."""
    found = git(workspace, "symbolic-ref", "-q", "--short", "HEAD", ok=(0, 1)).strip()
    return found or None


def commit_snapshot(wt: Worktree, snapshot_id: str, message: str) -> str:
    """Commit a snapshot's files on the workflow's branch, as one commit on the base,
    with ``message``; the commit id. The branch is the workflow's own: commits an
    agent made on it are replaced (their files are in the snapshot). Idempotent:
    when the branch already holds that commit (a step run again), it is returned."""
    snapshot_id = _checked_id(snapshot_id)
    tree = git(wt.repo, "rev-parse", f"{snapshot_id}^{{tree}}").strip()
    head = git(wt.repo, "rev-parse", f"refs/heads/{wt.branch}").strip()
    if head != wt.base:
        parents = git(wt.repo, "rev-list", "--parents", "-n", "1", head).split()[1:]
        if parents == [wt.base] and git(wt.repo, "rev-parse", f"{head}^{{tree}}").strip() == tree:
            return head
    commit = git(wt.repo, "commit-tree", tree, "-p", wt.base, "-m", message).strip()
    git(wt.repo, "update-ref", f"refs/heads/{wt.branch}", commit, head)
    return commit


def fast_forward(wt: Worktree, branch: str, commit: str) -> tuple[bool, str]:
    """Move ``branch`` to ``commit`` when that is a fast-forward; whether it moved, and
    why not. A checked-out branch is merged with ``git merge --ff-only`` so its files
    follow (refused, and left alone, when its checkout has local changes)."""
    ref = f"refs/heads/{branch}"
    tip = git(wt.repo, "rev-parse", "--verify", "-q", ref, ok=(0, 1)).strip()
    if not tip:
        return False, f"branch {branch} no longer exists; {wt.branch} is left for you"
    if not _exit_ok(wt.repo, "merge-base", "--is-ancestor", tip, commit):
        return False, (
            f"{branch} moved on since the worktree was cut, so this is not a fast-forward; "
            f"merge {wt.branch} yourself"
        )
    if base_branch(wt.repo) == branch:
        try:
            git(wt.repo, "merge", "-q", "--ff-only", commit)
        except GitFailed as exc:
            return False, f"could not fast-forward the checkout of {branch} ({exc.message})"
    else:
        git(wt.repo, "update-ref", ref, commit, tip)
    return True, f"{branch} fast-forwarded to {commit[:12]}"


def _exit_ok(cwd: Path, *args: str) -> bool:
    try:
        git(cwd, *args)
    except GitFailed:
        return False
    return True


def prune_worktree(repo: Path, path: Path, workflow_id: str | None) -> None:
    """Remove a worktree left behind in ``repo`` and, when its workflow is known, that
    workflow's snapshots; the branch stays (it may hold a commit)."""
    git(repo, "worktree", "remove", "--force", str(path), ok=(0, 128))
    git(repo, "worktree", "prune")
    if workflow_id:
        remove_worktree(Worktree(repo, path, "", "", workflow_id), keep_branch=True)
