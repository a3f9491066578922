"""Every checkpoint says what it needs in one line and marks the action it
recommends; the recommendation follows what the agents found."""

from __future__ import annotations

from pathlib import Path

from orchestra.domain.models import Checkpoint
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from tests.support.engine import agents, decide, demo, pending, start
from tests.support.git_repo import git_repo


def _one_line(cp: Checkpoint) -> None:
    assert cp.summary and "\n" not in cp.summary and len(cp.summary) <= 200, cp.summary
    assert cp.recommended in {a.name for a in cp.actions}, (cp.recommended, cp.actions)
    assert cp.summary.endswith(f"recommended: {cp.recommended}") or "edit it" in cp.summary


async def test_plan_review_checkpoints_say_what_they_need_and_recommend(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker)
    _one_line(cp)
    assert cp.summary.startswith("Plan v1 ready") and cp.recommended == "approve"
    wf = await decide(service, worker, cp, "approve")
    reviews = await pending(service, wf.id, "reviews_ready_for_consolidation")
    _one_line(reviews)
    # Three demo reviews approve with changes and raise one medium issue each.
    assert "3 reviewers: 3× approve_with_changes (3 issues)" in reviews.summary
    assert reviews.recommended == "approve"
    wf = await decide(service, worker, reviews, "edit_planner_prompt")
    edit = await pending(service, wf.id, "edit_planner_prompt")
    _one_line(edit)
    assert edit.recommended == "send_to_planner"


async def test_a_reviewer_asking_for_changes_makes_revise_the_recommendation(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(
        service, worker, agents=agents(reviewers=[demo(), demo(verdict="request_changes")])
    )
    wf = await decide(service, worker, cp, "approve")
    reviews = await pending(service, wf.id, "reviews_ready_for_consolidation")
    assert reviews.recommended == "revise" and reviews.summary.endswith("recommended: revise")


async def test_a_failed_agent_and_a_failing_check_are_summed_up(
    db: object, worker: Worker, tmp_path: Path
) -> None:
    ws = git_repo(tmp_path / "ws", app="x = 1\n")
    service = Orchestra(
        db,  # type: ignore[arg-type]
        allowed_roots=[tmp_path],
        checks=lambda _: {"command": ["python3", "-c", "raise SystemExit(1)"], "timeout_s": 30},
    )
    cp = await start(
        service,
        worker,
        step="code_ready_for_review",
        type="plan_implement",
        workspace_path=str(ws),
        options={"plan": "Write the demo file."},
    )
    _one_line(cp)
    assert "checks FAIL" in cp.summary and cp.recommended == "request_changes"
    assert "1 file(s) +" in cp.summary
    wf = await decide(service, worker, cp, "approve")
    confirm = await pending(service, wf.id, "confirm_commit")
    _one_line(confirm)
    assert confirm.recommended == "commit"

    broken = await start(
        service, worker, step="agent_problem", agents=agents(planner=demo(fail="error"))
    )
    _one_line(broken)
    assert broken.summary.startswith("planner (") and broken.recommended == "retry"
