"""Notes given with a decision reach the agent that acts next, for every action that
leads to an agent, in both built-in workflows, on both databases; an action after
which no agent acts records them with the decision.

Each test gives a distinct note and finds it, as typed, in the prompt of the next
agent run (what the agent received on stdin)."""

from __future__ import annotations

from pathlib import Path

from orchestra.domain.models import Checkpoint
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from tests.support.engine import agents, decide, demo, pending, runs, start
from tests.support.git_repo import git_repo

NOTE = "Mind the *Windows* paths — and `CRLF`."
PLAN_READY = "plan_ready_for_review"
REVIEWS_READY = "reviews_ready_for_consolidation"


def _note(tag: str) -> str:
    return f"{NOTE} [{tag}]"


async def _last_prompts(service: Orchestra, workflow_id: str, job: str) -> list[str]:
    found = await runs(service, workflow_id, job=job)
    last = max(r.iteration for r in found)
    newest = max(r.started_at for r in found if r.iteration == last)
    return [r.prompt for r in found if r.iteration == last and r.started_at == newest]


async def test_approving_the_plan_sends_its_notes_to_every_reviewer(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker)
    wf = await decide(service, worker, cp, "approve", notes=_note("approve"))
    prompts = await _last_prompts(service, wf.id, "reviewer")
    assert len(prompts) == 3 and all(_note("approve") in p for p in prompts)


async def test_notes_at_edit_reviewer_prompt_show_in_the_prompt_and_reach_the_reviewers(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker)
    wf = await decide(service, worker, cp, "edit_reviewer_prompt", notes=_note("first"))
    edit = await pending(service, wf.id, "edit_reviewer_prompt")
    assert _note("first") in (edit.editable_content or "")  # shown where it is edited
    wf = await decide(
        service,
        worker,
        edit,
        "send_to_reviewers",
        edited_content=edit.editable_content,
        notes=_note("send"),
    )
    prompts = await _last_prompts(service, wf.id, "reviewer")
    assert all(_note("first") in p and _note("send") in p for p in prompts)


async def _reviews(service: Orchestra, worker: Worker, **create: object) -> Checkpoint:
    cp = await start(service, worker, **create)
    wf = await decide(service, worker, cp, "approve")
    return await pending(service, wf.id, REVIEWS_READY)


async def test_revising_sends_the_notes_to_the_planner(service: Orchestra, worker: Worker) -> None:
    cp = await _reviews(service, worker)
    wf = await decide(service, worker, cp, "revise", notes=_note("revise"))
    [prompt] = await _last_prompts(service, wf.id, "planner")
    assert _note("revise") in prompt


async def test_notes_at_edit_planner_prompt_reach_the_planner(
    service: Orchestra, worker: Worker
) -> None:
    cp = await _reviews(service, worker)
    wf = await decide(service, worker, cp, "edit_planner_prompt", notes=_note("first"))
    edit = await pending(service, wf.id, "edit_planner_prompt")
    assert _note("first") in (edit.editable_content or "")
    wf = await decide(
        service,
        worker,
        edit,
        "send_to_planner",
        edited_content=edit.editable_content,
        notes=_note("send"),
    )
    [prompt] = await _last_prompts(service, wf.id, "planner")
    assert _note("first") in prompt and _note("send") in prompt


async def test_allowing_one_more_iteration_sends_the_notes_to_the_planner(
    service: Orchestra, worker: Worker
) -> None:
    cp = await _reviews(service, worker, max_iterations=1)
    wf = await decide(service, worker, cp, "revise")
    limit = await pending(service, wf.id, "iteration_limit_reached")
    wf = await decide(service, worker, limit, "extend", notes=_note("extend"))
    [prompt] = await _last_prompts(service, wf.id, "planner")
    assert _note("extend") in prompt


async def test_retrying_failed_agents_sends_them_the_notes(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    broken = demo(fail_unless_exists=str(fixed))
    cp = await start(
        service, worker, step="agent_problem", agents=agents(planner=broken, reviewers=[broken])
    )
    fixed.write_text("ok")
    wf = await decide(service, worker, cp, "retry", notes=_note("retry planner"))
    [prompt] = await _last_prompts(service, wf.id, "planner")
    assert _note("retry planner") in prompt

    fixed.unlink()
    plan = await pending(service, wf.id, PLAN_READY)
    wf = await decide(service, worker, plan, "approve")
    problem = await pending(service, wf.id, "agent_problem")
    fixed.write_text("ok")
    wf = await decide(service, worker, problem, "retry", notes=_note("retry reviewer"))
    [prompt] = await _last_prompts(service, wf.id, "reviewer")
    assert _note("retry reviewer") in prompt


async def test_notes_where_no_agent_acts_next_are_recorded_with_the_decision(
    service: Orchestra, worker: Worker
) -> None:
    cp = await _reviews(service, worker)
    await decide(service, worker, cp, "approve", notes=_note("finish"))
    history = await service.history(cp.workflow_id)
    [done] = [c for c in history.checkpoints if c.id == cp.id]
    assert done.resolution is not None and done.resolution.notes == _note("finish")


# -- Implement & Review ------------------------------------------------------------


async def test_approving_the_plan_sends_its_notes_to_the_implementer(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = git_repo(tmp_path / "ws")
    cp = await _reviews(service, worker, type="plan_implement", workspace_path=str(ws))
    wf = await decide(service, worker, cp, "approve", notes=_note("implement"))
    [prompt] = await _last_prompts(service, wf.id, "implementer")
    assert _note("implement") in prompt and "Implement the approved plan" in prompt


async def test_notes_at_edit_implementer_prompt_reach_the_implementer(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = git_repo(tmp_path / "ws")
    cp = await start(
        service,
        worker,
        step="code_ready_for_review",
        type="plan_implement",
        workspace_path=str(ws),
        options={"plan": "Write the demo file."},
    )
    wf = await decide(service, worker, cp, "edit_implementer_prompt", notes=_note("first"))
    edit = await pending(service, wf.id, "edit_implementer_prompt")
    assert _note("first") in (edit.editable_content or "")
    wf = await decide(
        service,
        worker,
        edit,
        "send_to_implementer",
        edited_content=edit.editable_content,
        notes=_note("send"),
    )
    [prompt] = await _last_prompts(service, wf.id, "implementer")
    assert _note("first") in prompt and _note("send") in prompt


async def test_retrying_the_implementer_and_code_reviewers_sends_them_the_notes(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    ws = git_repo(tmp_path / "ws")
    implementer_fixed, reviewer_fixed = tmp_path / "implementer", tmp_path / "reviewer"
    choice = {
        "implementer": demo(fail_unless_exists=str(implementer_fixed)),
        "code_reviewers": [demo(fail_unless_exists=str(reviewer_fixed))],
    }
    cp = await start(
        service,
        worker,
        step="agent_problem",
        type="plan_implement",
        workspace_path=str(ws),
        options={"plan": "Write the demo file."},
        agents=choice,
    )
    assert cp.context["failed_step"] == "implement"
    implementer_fixed.write_text("ok")
    wf = await decide(service, worker, cp, "retry", notes=_note("retry implementer"))
    [prompt] = await _last_prompts(service, wf.id, "implementer")
    assert _note("retry implementer") in prompt

    problem = await pending(service, wf.id, "agent_problem")
    assert problem.context["failed_step"] == "code_review"
    reviewer_fixed.write_text("ok")
    wf = await decide(service, worker, problem, "retry", notes=_note("retry reviewer"))
    [prompt] = await _last_prompts(service, wf.id, "code_reviewer")
    assert _note("retry reviewer") in prompt and "```diff" in prompt
    await pending(service, wf.id, "code_ready_for_review")
