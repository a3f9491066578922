"""The work Implement & Review does outside the database, in git and the worktree.

Each piece is what the engine runs around or instead of an agent
(:class:`~orchestra.engine.definition.Workdir`, ``AgentTask.runner``), so it
is recorded like an agent run, retried like one, and run again after a crash:
every piece is idempotent. :mod:`orchestra.workflows.plan_implement` (pure
functions of the state) says when each runs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.agents.base import AgentCheck, AgentRequest, AgentResult, ProgressSink
from orchestra.domain.code import CheckOutcome, CodeChange, as_context, bounded_files
from orchestra.workflows import git_worktree
from orchestra.workflows.checks import run_check
from orchestra.workflows.git_worktree import Worktree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Place:
    """Which workflow's worktree, in which repository."""

    workspace: Path
    name: str
    workflow_id: str

    def worktree(self, base: str = "") -> Worktree:
        return git_worktree.worktree_for(self.workspace, self.name, self.workflow_id, base)


def prepare_implementer(place: Place, snapshot: str | None) -> None:
    """Before each implementer attempt: the worktree (made on the first), with its
    files reset to the last recorded snapshot (or the base), so an attempt cut
    short leaves nothing behind and no work recorded is lost."""
    wt = git_worktree.create_worktree(place.workspace, place.name, place.workflow_id)
    git_worktree.restore(wt, snapshot or wt.base)


def capture_implementer(place: Place, iteration: int) -> dict[str, Any]:
    """After the implementer answered: snapshot its files to
    ``refs/orchestra/<workflow>/<iteration>`` and describe the change against the
    base; stored with the run, in the transaction that records it."""
    wt = git_worktree.create_worktree(place.workspace, place.name, place.workflow_id)
    commit = git_worktree.snapshot(wt, iteration)
    files, omitted = bounded_files(git_worktree.diff(wt, commit))
    change = CodeChange(
        branch=wt.branch,
        base=wt.base,
        snapshot=commit,
        worktree=str(wt.path),
        files=files,
        files_omitted=omitted,
    )
    return {
        "snapshot": commit,
        "ref": f"{git_worktree.REF_PREFIX}/{wt.workflow_id}/{iteration}",
        "code": as_context(change),
    }


def reset_to(place: Place, snapshot: str) -> None:
    """Before a check: the worktree's files exactly as the snapshot under review."""
    wt = git_worktree.create_worktree(place.workspace, place.name, place.workflow_id)
    git_worktree.restore(wt, snapshot)


def remove(place: Place, *, keep_branch: bool) -> None:
    """Remove the workflow's worktree and snapshots (and its branch unless kept)."""
    if not (place.workspace / ".git").exists() and not place.worktree().path.exists():
        return  # the repository itself is gone: nothing of ours is left in it
    git_worktree.remove_worktree(place.worktree(), keep_branch=keep_branch)


class _OwnWork:
    """Base of the definition's own work run as a task: no program to check."""

    name = "orchestra"

    async def check(self) -> AgentCheck:
        return AgentCheck(ok=True, detail="built in")


class CheckRunner(_OwnWork):
    """Runs the workspace's check command in the worktree; its outcome is the run's."""

    name = "check"

    def __init__(self, command: list[str], timeout_s: float) -> None:
        self.command = command
        self.timeout_s = timeout_s

    async def run(self, request: AgentRequest, progress: ProgressSink) -> AgentResult:
        assert request.workspace is not None
        progress("command", " ".join(self.command))
        done = await run_check(self.command, request.workspace, timeout_s=self.timeout_s)
        outcome = CheckOutcome(
            command=list(done.command),
            exit_code=done.exit_code,
            passed=done.passed,
            output_tail=done.output_tail,
            duration_ms=done.duration_ms,
            problem=done.problem,
        )
        verdict = "passed" if done.passed else (done.problem or f"exit code {done.exit_code}")
        return AgentResult(
            content=f"{' '.join(done.command)}: {verdict}\n\n{done.output_tail}",
            duration_ms=done.duration_ms,
            meta={"check": outcome.model_dump(mode="json")},
        )


@dataclass(frozen=True)
class Finish:
    """What an approved change becomes: a commit on the branch, maybe a merge."""

    place: Place
    base: str
    snapshot: str
    message: str
    merge_into: str | None
    keep_worktree: bool


class FinishRunner(_OwnWork):
    """Commits the approved snapshot on the workflow's branch, fast-forwards the base
    branch when asked and possible, then removes the worktree (the branch stays)."""

    name = "git"

    def __init__(self, finish: Finish) -> None:
        self.finish = finish

    async def run(self, request: AgentRequest, progress: ProgressSink) -> AgentResult:
        return await asyncio.to_thread(self._finish)

    def _finish(self) -> AgentResult:
        f = self.finish
        wt = f.place.worktree(f.base)
        commit = git_worktree.commit_snapshot(wt, f.snapshot, f.message)
        merged, note = False, f"committed {commit[:12]} on {wt.branch}"
        if f.merge_into is not None:
            merged, why = git_worktree.fast_forward(wt, f.merge_into, commit)
            note = f"{note}; {why}"
        else:
            note = f"{note}; not merged (merge {wt.branch} when you are ready)"
        if not f.keep_worktree:
            git_worktree.remove_worktree(wt, keep_branch=True)
        return AgentResult(
            content=note,
            meta={"commit": commit, "branch": wt.branch, "merged": merged, "merge_note": note},
        )


class DiscardRunner(_OwnWork):
    """Removes the worktree, its snapshots and its branch: nothing is left behind."""

    name = "git"

    def __init__(self, place: Place) -> None:
        self.place = place

    async def run(self, request: AgentRequest, progress: ProgressSink) -> AgentResult:
        await asyncio.to_thread(remove, self.place, keep_branch=False)
        return AgentResult(content=f"discarded the worktree and branch of {self.place.name!r}")
