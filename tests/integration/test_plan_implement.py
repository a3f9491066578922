"""Implement & Review on real git repositories in temporary folders, on both databases:
from a prompt to a commit on the workflow's branch, and every way off that path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestra.domain.code import CodeChange
from orchestra.domain.errors import InvalidInput
from orchestra.domain.models import Checkpoint, Decision, LineComment, Workflow
from orchestra.domain.statuses import AgentRunStatus, WorkflowStatus
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.workflows.git_worktree import WORKTREES_DIR, git, list_worktrees
from tests.support.engine import demo, runs, snapshot, use_agents
from tests.support.git_repo import git_repo as repo
from tests.support.waiting import eventually

IMPLEMENT = "plan_implement"


def branches(path: Path) -> list[str]:
    return git(path, "branch", "--format=%(refname:short)").split()


def orchestra_refs(path: Path) -> list[str]:
    return git(path, "for-each-ref", "--format=%(refname)", "refs/orchestra").split()


async def start(service: Orchestra, workspace: Path, **extra: Any) -> Workflow:
    return await service.create_workflow(
        name="demo change",
        prompt="Write the demo file",
        type=IMPLEMENT,
        workspace_path=str(workspace),
        **extra,
    )


async def pending(service: Orchestra, worker: Worker, workflow_id: str) -> Checkpoint:
    await worker.run_until_idle()
    wf = await service.get_workflow(workflow_id)
    assert wf.pending_checkpoint is not None, (wf.status, wf.error)
    return wf.pending_checkpoint


async def decide(
    service: Orchestra, worker: Worker, cp: Checkpoint, action: str, **decision: Any
) -> Checkpoint | None:
    await service.resolve(cp.id, Decision(action=action, **decision), actor="ana")
    await worker.run_until_idle()
    return (await service.get_workflow(cp.workflow_id)).pending_checkpoint


async def to_code_review(service: Orchestra, worker: Worker, workflow_id: str) -> Checkpoint:
    """Through Plan & Review (approve, approve) to the first code review."""
    cp = await pending(service, worker, workflow_id)
    assert cp.step_name == "plan_ready_for_review"
    cp = await decide(service, worker, cp, "approve")
    assert cp is not None and cp.step_name == "reviews_ready_for_consolidation"
    cp = await decide(service, worker, cp, "approve")
    assert cp is not None and cp.step_name == "code_ready_for_review", cp
    return cp


async def test_from_prompt_to_a_commit_on_the_branch(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    wf = await start(service, ws)
    cp = await to_code_review(service, worker, wf.id)

    change = CodeChange.of(cp)
    assert change is not None
    assert change.branch == f"orchestra/demo-change-{wf.id[:8]}"
    assert [f.path for f in change.files] == ["ORCHESTRA_DEMO.md"]
    assert change.files[0].added > 0 and change.files[0].removed == 0
    # The demo code reviewer anchors its finding to the first added line.
    assert [(f.file, f.line) for f in change.findings] == [("ORCHESTRA_DEMO.md", 1)] * 3
    assert change.check is None  # no check command configured
    # The person's checkout is untouched while the implementer works in its worktree.
    assert not (ws / "ORCHESTRA_DEMO.md").exists()
    assert git(ws, "status", "--porcelain") == ""
    assert list_worktrees(ws) == [Path(change.worktree)]

    cp = await decide(service, worker, cp, "approve")
    assert cp is not None and cp.step_name == "confirm_commit"
    assert "Approved-by: ana" in (cp.editable_content or "")
    message = "Add the demo file\n\nAs planned.\n"
    assert await decide(service, worker, cp, "commit", edited_content=message) is None

    wf = await service.get_workflow(wf.id)
    assert wf.status is WorkflowStatus.COMPLETED, wf.error
    assert wf.result is not None
    commit = wf.result["commit"]
    assert wf.result["branch"] == change.branch and wf.result["merged"] is False
    assert git(ws, "rev-parse", change.branch).strip() == commit
    assert git(ws, "log", "-1", "--format=%B", commit).strip() == message.strip()
    # The commit holds exactly the files reviewed (the snapshot's tree).
    assert git(ws, "rev-parse", f"{commit}^{{tree}}") == git(
        ws, "rev-parse", f"{change.snapshot}^{{tree}}"
    )
    assert git(ws, "rev-parse", f"{commit}^").strip() == change.base
    # The worktree and the snapshots are gone; the branch with the commit stays.
    assert list_worktrees(ws) == [] and orchestra_refs(ws) == []
    assert change.branch in branches(ws)
    assert git(ws, "rev-parse", "main").strip() != commit  # not merged unless asked


async def test_commit_and_merge_fast_forwards_the_base_branch(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    wf = await start(service, ws, options={"plan": "Write the demo file."})
    cp = await pending(service, worker, wf.id)  # a plan given: straight to the code
    assert cp.step_name == "code_ready_for_review"
    cp = await decide(service, worker, cp, "approve")
    assert cp is not None
    assert await decide(service, worker, cp, "commit_and_merge") is None
    wf = await service.get_workflow(wf.id)
    assert wf.result is not None and wf.result["merged"] is True, wf.result
    assert git(ws, "rev-parse", "main").strip() == wf.result["commit"]
    assert (ws / "ORCHESTRA_DEMO.md").exists()  # the checkout followed the merge
    assert git(ws, "status", "--porcelain") == ""


async def test_merge_that_is_not_a_fast_forward_leaves_the_branch_and_says_so(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    wf = await start(service, ws, options={"plan": "Write the demo file."})
    cp = await pending(service, worker, wf.id)
    (ws / "other.py").write_text("x = 1\n")  # main moves on meanwhile
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "elsewhere")
    main_before = git(ws, "rev-parse", "main").strip()
    cp = await decide(service, worker, cp, "approve")
    assert cp is not None
    assert await decide(service, worker, cp, "commit_and_merge") is None
    wf = await service.get_workflow(wf.id)
    assert wf.status is WorkflowStatus.COMPLETED and wf.result is not None
    assert wf.result["merged"] is False
    assert "not a fast-forward" in wf.result["merge_note"]
    assert git(ws, "rev-parse", "main").strip() == main_before
    assert git(ws, "rev-parse", wf.result["branch"]).strip() == wf.result["commit"]


async def test_request_changes_sends_feedback_and_line_comments_to_the_implementer(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    wf = await start(service, ws, options={"plan": "Write the demo file."})
    cp = await pending(service, worker, wf.id)
    first = CodeChange.of(cp)
    assert first is not None
    body = "Say *why*, not what.\n  Keep `this` indentation — and ünïcode."
    comment = LineComment(file="ORCHESTRA_DEMO.md", line=3, body=body)
    cp = await decide(
        service,
        worker,
        cp,
        "request_changes",
        edited_content="Please also explain the change.",
        notes="No rush.",
        comments=[comment],
    )
    assert cp is not None and cp.step_name == "code_ready_for_review"
    history = await service.history(wf.id)
    runs = [r for r in history.agent_runs if r.step_name == "implement"]
    assert [r.status for r in runs] == [AgentRunStatus.COMPLETED] * 2
    prompt = runs[1].prompt
    assert f"- `ORCHESTRA_DEMO.md` line 3:\n\n{body}\n" in prompt
    assert "Please also explain the change." in prompt and "No rush." in prompt
    resolved = [c for c in history.checkpoints if c.resolution is not None]
    assert resolved[0].resolution is not None
    assert resolved[0].resolution.comments == [comment]
    # The second iteration continued in the same worktree from the first one's files.
    second = CodeChange.of(cp)
    assert second is not None and second.worktree == first.worktree
    assert second.snapshot != first.snapshot
    assert "## Run 2" in git(ws, "show", f"{second.snapshot}:ORCHESTRA_DEMO.md")
    assert git(ws, "rev-parse", f"refs/orchestra/{wf.id}/2").strip() == second.snapshot
    assert len(list_worktrees(ws)) == 1


async def test_comments_on_an_action_that_takes_none_are_refused_and_change_nothing(
    service: Orchestra, worker: Worker, tmp_path: Path, db: Any
) -> None:
    ws = repo(tmp_path / "ws")
    wf = await start(service, ws, options={"plan": "Write the demo file."})
    cp = await pending(service, worker, wf.id)
    before = await snapshot(db)
    with pytest.raises(InvalidInput) as caught:
        await service.resolve(
            cp.id,
            Decision(action="approve", comments=[LineComment(file="a", line=1, body="x")]),
            actor="ana",
        )
    assert caught.value.details["field"] == "comments"
    assert await snapshot(db) == before


@pytest.mark.parametrize("how", ["discard", "cancel"])
async def test_discard_and_cancel_leave_no_worktree_or_branch(
    service: Orchestra, worker: Worker, tmp_path: Path, how: str
) -> None:
    ws = repo(tmp_path / "ws")
    wf = await start(service, ws, options={"plan": "Write the demo file."})
    cp = await pending(service, worker, wf.id)
    assert len(list_worktrees(ws)) == 1
    assert await decide(service, worker, cp, how) is None
    wf = await service.get_workflow(wf.id)
    expected = WorkflowStatus.COMPLETED if how == "discard" else WorkflowStatus.CANCELLED
    assert wf.status is expected
    assert list_worktrees(ws) == [] and orchestra_refs(ws) == []
    assert branches(ws) == ["main"]
    assert not any((ws / WORKTREES_DIR).iterdir()) if (ws / WORKTREES_DIR).exists() else True
    assert git(ws, "status", "--porcelain") == ""


async def test_cancelling_through_the_api_also_removes_the_worktree(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    wf = await start(service, ws, options={"plan": "Write the demo file."})
    await pending(service, worker, wf.id)
    await service.cancel(wf.id, actor="ana")
    assert list_worktrees(ws) == [] and branches(ws) == ["main"]


async def test_keep_worktree_keeps_it_after_the_commit(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    wf = await start(service, ws, options={"plan": "Write it.", "keep_worktree": True})
    cp = await decide(service, worker, await pending(service, worker, wf.id), "approve")
    assert cp is not None
    assert await decide(service, worker, cp, "commit") is None
    assert len(list_worktrees(ws)) == 1


async def test_two_workflows_on_one_repository_never_touch_each_other(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    one = await start(service, ws, options={"plan": "Write the demo file."})
    two = await start(service, ws, options={"plan": "Write the demo file."})
    cp1, cp2 = await pending(service, worker, one.id), await pending(service, worker, two.id)
    c1, c2 = CodeChange.of(cp1), CodeChange.of(cp2)
    assert c1 is not None and c2 is not None
    assert c1.worktree != c2.worktree and c1.branch != c2.branch
    assert len(list_worktrees(ws)) == 2
    await decide(service, worker, cp2, "discard")
    assert list_worktrees(ws) == [Path(c1.worktree)]
    assert (Path(c1.worktree) / "ORCHESTRA_DEMO.md").exists()
    cp1 = await decide(service, worker, cp1, "approve")
    assert cp1 is not None
    assert await decide(service, worker, cp1, "commit") is None
    assert branches(ws) == ["main", c1.branch]


async def test_starting_from_a_completed_plan_review(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    planned = await service.create_workflow(
        name="plan it", prompt="Write the demo file", workspace_path=str(ws)
    )
    cp = await pending(service, worker, planned.id)
    cp = await decide(service, worker, cp, "approve")
    assert cp is not None
    await decide(service, worker, cp, "approve")
    done = await service.get_workflow(planned.id)
    assert done.status is WorkflowStatus.COMPLETED and done.result is not None
    wf = await service.create_workflow(
        name="build it", prompt="Write the demo file", type=IMPLEMENT, from_workflow=planned.id
    )
    assert wf.workspace_path == str(ws.resolve())
    cp = await pending(service, worker, wf.id)
    assert cp.step_name == "code_ready_for_review"
    assert cp.context["plan"] == done.result["plan"]


async def test_a_non_repository_and_a_dirty_base_are_clear_errors_that_write_nothing(
    service: Orchestra, tmp_path: Path, db: Any
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    dirty = repo(tmp_path / "dirty")
    (dirty / "app.py").write_text("changed\n")
    before = await snapshot(db)
    with pytest.raises(InvalidInput, match="not a git repository"):
        await start(service, plain)
    with pytest.raises(InvalidInput, match="uncommitted changes"):
        await start(service, dirty)
    with pytest.raises(InvalidInput, match="needs a workspace_path"):
        await service.create_workflow(name="x", prompt="y", type=IMPLEMENT)
    with pytest.raises(InvalidInput, match="options"):
        await start(service, dirty, options={"plan": "x", "run": ["rm", "-rf", "/"]})
    with pytest.raises(InvalidInput, match="takes no options"):
        await service.create_workflow(name="x", prompt="y", options={"plan": "x"})
    assert await snapshot(db) == before
    assert not (plain / ".orchestra").exists()


async def test_the_check_command_runs_in_the_worktree_and_shows_at_the_checkpoint(
    db: Any, worker: Worker, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    check = ["python3", "-c", "import os, sys; print(sorted(os.listdir('.'))); sys.exit(3)"]
    service = Orchestra(
        db,
        allowed_roots=[tmp_path],
        checks=lambda _: {"command": check, "timeout_s": 60},
    )
    wf = await start(service, ws, options={"plan": "Write the demo file."})
    cp = await pending(service, worker, wf.id)
    change = CodeChange.of(cp)
    assert change is not None and change.check is not None
    assert change.check.exit_code == 3 and not change.check.passed
    assert "ORCHESTRA_DEMO.md" in change.check.output_tail  # it ran in the worktree
    assert "The check FAILED" in cp.instructions


async def test_a_worker_killed_mid_implementation_resumes_from_the_last_snapshot(
    service: Orchestra, worker: Worker, db_url: str, spawn: Any, tmp_path: Path
) -> None:
    """Iteration 1 is recorded; iteration 2's worker is SIGKILLed while the implementer
    works (it left a half-written file). Another worker resets the worktree to
    iteration 1's snapshot and runs the implementer again (attempt 2): nothing
    recorded is lost, nothing is done twice, and there is still one worktree."""
    ws = repo(tmp_path / "ws")
    slow = demo(delay_s=1.5)
    wf = await start(
        service,
        ws,
        options={"plan": "Write the demo file."},
        agents=use_agents(service, {"implementer": slow, "code_reviewers": [demo()]}),
    )
    cp = await pending(service, worker, wf.id)
    first = CodeChange.of(cp)
    assert first is not None
    await service.resolve(cp.id, Decision(action="request_changes"), actor="ana")

    killed = spawn(db_url, "--lease-ttl", "1.5", "--heartbeat", "0.3", "--name", "killed")
    await killed.ready()

    async def implementing() -> bool:
        found = [r for r in await runs(service, wf.id) if r.step_name == "implement"]
        return len(found) == 2 and found[-1].status is AgentRunStatus.RUNNING

    await eventually(implementing, what="the second iteration's implementer running")
    worktree = Path(first.worktree)
    (worktree / "half-written.py").write_text("def broken(:\n")  # what the agent left
    killed.kill()

    second = spawn(db_url, "--lease-ttl", "2", "--heartbeat", "0.3", "--name", "second")
    await second.ready()

    async def reviewed() -> Checkpoint | None:
        found = (await service.get_workflow(wf.id)).pending_checkpoint
        return found if found is not None and found.number > cp.number else None

    cp2 = await eventually(reviewed, what=f"the second code review:\n{second.log()}")
    implement_runs = sorted(
        (r.iteration, r.attempt, r.status.value)
        for r in await runs(service, wf.id)
        if r.step_name == "implement"
    )
    assert [(a, s) for _, a, s in implement_runs] == [
        (1, "completed"),
        (1, "interrupted"),
        (2, "completed"),
    ]
    change = CodeChange.of(cp2)
    assert change is not None and change.worktree == first.worktree
    assert [f.path for f in change.files] == ["ORCHESTRA_DEMO.md"]  # no half-written file
    text = git(ws, "show", f"{change.snapshot}:ORCHESTRA_DEMO.md")
    assert text.count("## Run 1") == 1 and text.count("## Run 2") == 1 and "## Run 3" not in text
    assert len(list_worktrees(ws)) == 1


async def test_a_base_made_dirty_while_planning_is_a_clear_checkpoint_then_a_retry(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    """The worktree is cut when the implementer first runs: if the checkout has
    uncommitted changes by then, the person gets an agent_problem checkpoint that
    says so (no half-made worktree), and a retry after committing goes on."""
    ws = repo(tmp_path / "ws")
    wf = await start(service, ws)
    cp = await pending(service, worker, wf.id)
    cp = await decide(service, worker, cp, "approve")
    assert cp is not None
    (ws / "app.py").write_text("print('changed meanwhile')\n")
    cp = await decide(service, worker, cp, "approve")
    assert cp is not None and cp.step_name == "agent_problem"
    assert "uncommitted changes" in cp.instructions
    assert [a.name for a in cp.actions] == ["retry", "cancel"]
    assert list_worktrees(ws) == [] and branches(ws) == ["main"]
    git(ws, "commit", "-q", "-am", "meanwhile")
    cp = await decide(service, worker, cp, "retry")
    assert cp is not None and cp.step_name == "code_ready_for_review"
    change = CodeChange.of(cp)
    assert change is not None and change.base == git(ws, "rev-parse", "HEAD").strip()


async def test_a_workspace_in_an_unknown_users_home_is_bad_input(service: Orchestra) -> None:
    """``~nobody-here/x`` cannot be expanded: a 422 that says so, not a server error
    (the API fuzzer found it)."""
    with pytest.raises(InvalidInput, match="unknown user"):
        await service.worktrees("~õMÿ/repo")
    with pytest.raises(InvalidInput, match="unknown user"):
        await service.create_workflow(name="x", prompt="y", workspace_path="~no-such-user-x")
