"""Every path of Plan & Review, asserted on the prompts recorded in the agent runs.

What a person edits or writes at a checkpoint must be what the next agent
receives; custom prompts last one iteration; failures become an
``agent_problem`` checkpoint whose actions do what they say.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from orchestra.domain.errors import InvalidInput, TransitionNotAllowed
from orchestra.domain.events import EventType
from orchestra.domain.models import AgentRun, Checkpoint, Decision
from orchestra.domain.statuses import AgentRunStatus, CheckpointStatus, WorkflowStatus
from orchestra.engine.definition import (
    AgentStep,
    AgentTask,
    CheckpointStep,
    Next,
    StepContext,
    registered,
)
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.store.db import Database
from orchestra.workflows import plan_review, prompts
from tests.support.engine import (
    agents,
    decide,
    demo,
    events_of,
    pending,
    runs,
    snapshot,
    start,
)
from tests.support.waiting import eventually

TASK = "Add a --json flag to `orchestra list`"
PLAN_READY = plan_review.PLAN_READY
EDIT_REVIEWER_PROMPT = plan_review.EDIT_REVIEWER_PROMPT
REVIEWS_READY = plan_review.REVIEWS_READY
EDIT_PLANNER_PROMPT = plan_review.EDIT_PLANNER_PROMPT
ITERATION_LIMIT = plan_review.ITERATION_LIMIT
AGENT_PROBLEM = plan_review.AGENT_PROBLEM

#: Every checkpoint step of Plan & Review (from its definition: a new one must be reachable).
CHECKPOINT_STEPS = [
    name for name, step in plan_review.definition.steps.items() if isinstance(step, CheckpointStep)
]


def _declared(step: str) -> list[str]:
    """The actions ``step`` declares (a checkpoint may offer fewer, e.g. no skip of a plan)."""
    declared = plan_review.definition.steps[step]
    assert isinstance(declared, CheckpointStep)
    return [a.name for a in declared.actions]


async def _reviews(service: Orchestra, worker: Worker, **create: Any) -> Checkpoint:
    cp = await start(service, worker, prompt=TASK, **create)
    wf = await decide(service, worker, cp, "approve")
    return await pending(service, wf.id, REVIEWS_READY)


async def _plan_of(service: Orchestra, workflow_id: str, iteration: int) -> str:
    (run,) = await runs(service, workflow_id, job="planner", iteration=iteration)
    assert run.status is AgentRunStatus.COMPLETED and run.output
    return run.output


async def _prompts(service: Orchestra, workflow_id: str, job: str, iteration: int) -> list[str]:
    return [r.prompt for r in await runs(service, workflow_id, job=job, iteration=iteration)]


async def _assert_reviewers_got(
    service: Orchestra, workflow_id: str, iteration: int, prompt: str
) -> None:
    """Every one of the three reviewers of ``iteration`` received exactly ``prompt``."""
    assert await _prompts(service, workflow_id, "reviewer", iteration) == [prompt] * 3


async def _approving_completes_with(
    service: Orchestra, worker: Worker, checkpoint: Checkpoint, plan: str
) -> None:
    """Approving ``checkpoint`` completes a one-iteration workflow with ``plan``."""
    wf = await decide(service, worker, checkpoint, "approve")
    assert wf.status is WorkflowStatus.COMPLETED
    assert wf.result == {"plan": plan, "iterations": 1, "plans": {"1": plan}}


# -- edits reach the next agent ----------------------------------------------


async def test_edited_plan_reaches_every_reviewer_and_the_result(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker, prompt=TASK)
    assert cp.editable_content == await _plan_of(service, cp.workflow_id, 1)
    edited = cp.editable_content + "\n5. Document the flag in the README.\n"
    wf = await decide(service, worker, cp, "approve", edited_content=edited)
    assert (await service.get_checkpoint(cp.id)).status is CheckpointStatus.EDITED
    expected = prompts.reviewer_prompt(TASK, edited, 1)
    await _assert_reviewers_got(service, wf.id, 1, expected)

    review_cp = await pending(service, wf.id, REVIEWS_READY)
    assert review_cp.context["plan"] == edited
    await _approving_completes_with(service, worker, review_cp, edited)


async def test_approving_unchanged_content_is_approved_not_edited(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker, prompt=TASK)
    wf = await decide(service, worker, cp, "approve", edited_content=cp.editable_content)
    assert (await service.get_checkpoint(cp.id)).status is CheckpointStatus.APPROVED
    default = prompts.reviewer_prompt(TASK, cp.editable_content or "", 1)
    await _assert_reviewers_got(service, wf.id, 1, default)


async def test_edited_reviewer_prompt_reaches_every_reviewer_for_one_iteration_only(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker, prompt=TASK)
    plan1 = cp.editable_content or ""
    wf = await decide(service, worker, cp, "edit_reviewer_prompt")
    edit_cp = await pending(service, wf.id, EDIT_REVIEWER_PROMPT)
    assert edit_cp.editable_content == prompts.reviewer_prompt(TASK, plan1, 1)
    assert await runs(service, wf.id, job="reviewer") == []
    custom = "Review this plan for security problems only.\n\n" + plan1
    await decide(service, worker, edit_cp, "send_to_reviewers", edited_content=custom)
    await _assert_reviewers_got(service, wf.id, 1, custom)

    review_cp = await pending(service, wf.id, REVIEWS_READY)
    await decide(service, worker, review_cp, "revise")
    plan2_cp = await pending(service, wf.id, PLAN_READY)
    assert plan2_cp.iteration == 2
    await decide(service, worker, plan2_cp, "approve")
    plan2 = await _plan_of(service, wf.id, 2)
    await _assert_reviewers_got(service, wf.id, 2, prompts.reviewer_prompt(TASK, plan2, 2))


async def test_edited_plan_with_edit_reviewer_prompt_is_the_plan_in_that_prompt(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker, prompt=TASK)
    edited = "# My own plan\n\n1. Do it.\n"
    wf = await decide(service, worker, cp, "edit_reviewer_prompt", edited_content=edited)
    edit_cp = await pending(service, wf.id, EDIT_REVIEWER_PROMPT)
    assert edit_cp.editable_content == prompts.reviewer_prompt(TASK, edited, 1)


async def test_revise_sends_edited_feedback_and_notes_to_the_planner(
    service: Orchestra, worker: Worker
) -> None:
    review_cp = await _reviews(service, worker)
    wf_id = review_cp.workflow_id
    plan1 = await _plan_of(service, wf_id, 1)
    feedback = "Split step 2 into a parser change and a CLI change."
    notes = "Keep the old output the default."
    await decide(
        service, worker, review_cp, "revise", edited_content=feedback, notes=notes, actor="bea"
    )
    plan2_cp = await pending(service, wf_id, PLAN_READY)
    assert plan2_cp.iteration == 2
    (prompt,) = await _prompts(service, wf_id, "planner", 2)
    assert prompt == prompts.revision_prompt(TASK, plan1, 1, feedback, notes, "bea")
    assert feedback in prompt and notes in prompt and "Notes from bea" in prompt
    # each iteration's plan is kept
    plan2 = await _plan_of(service, wf_id, 2)
    assert plan2_cp.editable_content == plan2
    await decide(service, worker, plan2_cp, "approve")
    wf = await decide(service, worker, await pending(service, wf_id, REVIEWS_READY), "approve")
    assert wf.result is not None and wf.result["plans"] == {"1": plan1, "2": plan2}


async def test_revise_without_edits_sends_the_consolidated_feedback(
    service: Orchestra, worker: Worker
) -> None:
    review_cp = await _reviews(service, worker)
    await decide(service, worker, review_cp, "revise")
    (prompt,) = await _prompts(service, review_cp.workflow_id, "planner", 2)
    plan1 = await _plan_of(service, review_cp.workflow_id, 1)
    feedback = review_cp.editable_content or ""
    assert "Name the tests that prove the change" in feedback
    assert prompt == prompts.revision_prompt(TASK, plan1, 1, feedback, None, "ana")


async def test_edited_planner_prompt_reaches_the_planner_exactly_for_one_iteration(
    service: Orchestra, worker: Worker
) -> None:
    review_cp = await _reviews(service, worker)
    wf_id = review_cp.workflow_id
    plan1 = await _plan_of(service, wf_id, 1)
    await decide(service, worker, review_cp, "edit_planner_prompt", notes="Mind the tests.")
    edit_cp = await pending(service, wf_id, EDIT_PLANNER_PROMPT)
    assert edit_cp.editable_content == prompts.revision_prompt(
        TASK, plan1, 1, review_cp.editable_content or "", "Mind the tests.", "ana"
    )
    assert await runs(service, wf_id, job="planner", iteration=2) == []
    custom = "Write the plan again, as a numbered list of at most five steps."
    await decide(service, worker, edit_cp, "send_to_planner", edited_content=custom)
    assert await _prompts(service, wf_id, "planner", 2) == [custom]

    # the next iteration's planner gets the default revision prompt again
    plan2_cp = await pending(service, wf_id, PLAN_READY)
    review2 = await pending(
        service, (await decide(service, worker, plan2_cp, "approve")).id, REVIEWS_READY
    )
    await decide(service, worker, review2, "revise")
    plan2 = await _plan_of(service, wf_id, 2)
    assert await _prompts(service, wf_id, "planner", 3) == [
        prompts.revision_prompt(TASK, plan2, 2, review2.editable_content or "", None, "ana")
    ]


# -- the iteration limit -------------------------------------------------------


async def test_iteration_limit_stops_the_loop_and_approve_completes(
    service: Orchestra, worker: Worker
) -> None:
    review_cp = await _reviews(service, worker, max_iterations=1)
    wf_id = review_cp.workflow_id
    await decide(service, worker, review_cp, "revise")
    limit_cp = await pending(service, wf_id, ITERATION_LIMIT)
    assert [a.name for a in limit_cp.actions] == _declared(ITERATION_LIMIT)
    assert limit_cp.iteration == 1
    assert await runs(service, wf_id, job="planner", iteration=2) == []
    plan1 = await _plan_of(service, wf_id, 1)
    assert limit_cp.editable_content == plan1
    await _approving_completes_with(service, worker, limit_cp, plan1)


async def test_iteration_limit_extend_runs_one_more_iteration(
    service: Orchestra, worker: Worker
) -> None:
    review_cp = await _reviews(service, worker, max_iterations=1)
    wf_id = review_cp.workflow_id
    plan1 = await _plan_of(service, wf_id, 1)
    await decide(service, worker, review_cp, "revise", edited_content="Fix it.", notes="Now.")
    wf = await decide(service, worker, await pending(service, wf_id, ITERATION_LIMIT), "extend")
    plan2_cp = await pending(service, wf.id, PLAN_READY)
    assert plan2_cp.iteration == 2
    assert await _prompts(service, wf_id, "planner", 2) == [
        prompts.revision_prompt(TASK, plan1, 1, "Fix it.", "Now.", "ana")
    ]
    # one more iteration, then the limit again
    review2 = await pending(
        service, (await decide(service, worker, plan2_cp, "approve")).id, REVIEWS_READY
    )
    await decide(service, worker, review2, "revise")
    limit2 = await pending(service, wf_id, ITERATION_LIMIT)
    assert limit2.iteration == 2


# -- cancel ----------------------------------------------------------------------


async def _at_problem(service: Orchestra, worker: Worker) -> Checkpoint:
    cp = await start(
        service, worker, prompt=TASK, agents=agents(reviewers=[demo(), demo(fail="error")])
    )
    wf = await decide(service, worker, cp, "approve")
    return await pending(service, wf.id, AGENT_PROBLEM)


async def _at(step: str, service: Orchestra, worker: Worker) -> Checkpoint:
    """Reach a pending checkpoint of ``step``."""
    if step == AGENT_PROBLEM:
        return await _at_problem(service, worker)
    if step in (PLAN_READY, EDIT_REVIEWER_PROMPT):
        cp = await start(service, worker, prompt=TASK)
        if step == PLAN_READY:
            return cp
        wf = await decide(service, worker, cp, "edit_reviewer_prompt")
        return await pending(service, wf.id, step)
    review_cp = await _reviews(service, worker, max_iterations=1)
    if step == REVIEWS_READY:
        return review_cp
    action = "edit_planner_prompt" if step == EDIT_PLANNER_PROMPT else "revise"
    wf = await decide(service, worker, review_cp, action)
    return await pending(service, wf.id, step)


async def test_cancel_at_every_checkpoint(service: Orchestra, worker: Worker, db: Database) -> None:
    """With the cancel action the checkpoint is rejected; cancelling the workflow
    supersedes it. Either way nothing runs afterwards. (One database for every
    checkpoint keeps this fast; each assertion names its step.)"""
    for step in CHECKPOINT_STEPS:
        by_action, by_service = await _at(step, service, worker), await _at(step, service, worker)
        assert by_action.action("cancel") is not None, step
        await service.resolve(by_action.id, Decision(action="cancel"), actor="ana")
        await service.cancel(by_service.workflow_id, actor="ana")
        for cp, expected in (
            (by_action, CheckpointStatus.REJECTED),
            (by_service, CheckpointStatus.SUPERSEDED),
        ):
            wf = await service.get_workflow(cp.workflow_id)
            assert wf.status is WorkflowStatus.CANCELLED and wf.finished_at is not None, step
            assert (await service.get_checkpoint(cp.id)).status is expected, step
            assert (await service.list_checkpoints(workflow_id=wf.id)).items == [], step
        before = await snapshot(db)
        await worker.run_until_idle()
        assert await snapshot(db) == before, step


async def test_cancel_a_workflow_before_any_worker_starts_it(
    service: Orchestra, worker: Worker
) -> None:
    wf = await service.create_workflow(name="t", prompt=TASK)
    wf = await service.cancel(wf.id, actor="ana")
    assert wf.status is WorkflowStatus.CANCELLED
    await worker.run_until_idle()
    assert await runs(service, wf.id) == []


async def test_every_action_a_checkpoint_offers_moves_the_workflow_on(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    """At every checkpoint step, each action offered (names the API, UI and CLI take
    from the checkpoint) is accepted and moves the workflow past that checkpoint; one
    that needs content is refused without it, writing nothing. (One database for all.)"""
    assert {PLAN_READY, REVIEWS_READY, AGENT_PROBLEM} <= set(CHECKPOINT_STEPS)
    for step in CHECKPOINT_STEPS:
        offered = (await _at(step, service, worker)).actions
        assert offered and {a.name for a in offered} <= set(_declared(step)), step
        for action in offered:
            cp = await _at(step, service, worker)
            content = None
            if action.requires_content:
                before = await snapshot(db)
                with pytest.raises(InvalidInput, match="needs edited_content"):
                    await service.resolve(cp.id, Decision(action=action.name), actor="ana")
                assert await snapshot(db) == before, (step, action.name)
                content = "My own words."
            wf = await decide(service, worker, cp, action.name, edited_content=content)
            where = (step, action.name, wf.status, wf.error)
            assert (await service.get_checkpoint(cp.id)).status.is_resolved, where
            assert wf.status is not WorkflowStatus.FAILED, where
            assert wf.pending_checkpoint is None or wf.pending_checkpoint.id != cp.id, where


async def test_cancel_while_an_agent_runs_stops_it(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    cp = await start(
        service,
        worker,
        prompt=TASK,
        agents=agents(reviewers=[demo(), demo(delay_s=60), demo()]),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await service.resolve(cp.id, Decision(action="approve"), actor="ana")

        async def slow_reviewer_running() -> bool:
            found = await runs(service, cp.workflow_id, job="reviewer")
            states = sorted((r.agent, r.status) for r in found)
            return states == [
                ("reviewer-1", AgentRunStatus.COMPLETED),
                ("reviewer-2", AgentRunStatus.RUNNING),
                ("reviewer-3", AgentRunStatus.COMPLETED),
            ]

        await eventually(slow_reviewer_running, what="reviewer-2 running, others done")
        wf = await service.cancel(cp.workflow_id, actor="ana")
        assert wf.status is WorkflowStatus.CANCELLED
        after_cancel = await snapshot(db)
        # the worker notices (its lease is gone) and stops the agent well before 60 s
        await eventually(lambda: not worker._active, what="the worker to let go")
    finally:
        stop.set()
        await running
    assert await snapshot(db) == after_cancel
    found = {r.agent: r for r in await runs(service, cp.workflow_id, job="reviewer")}
    assert found["reviewer-2"].status is AgentRunStatus.CANCELLED
    assert found["reviewer-1"].status is AgentRunStatus.COMPLETED
    assert len(found) == 3


# -- agent problems --------------------------------------------------------------


async def test_agent_problem_retry_reruns_only_the_failed_agent(
    service: Orchestra, worker: Worker, tmp_path: Path
) -> None:
    marker = tmp_path / "fixed"
    cp = await start(
        service,
        worker,
        prompt=TASK,
        agents=agents(reviewers=[demo(), demo(fail_unless_exists=str(marker)), demo()]),
    )
    wf = await decide(service, worker, cp, "approve")
    problem = await pending(service, wf.id, AGENT_PROBLEM)
    assert problem.context["failed_step"] == "review"
    assert [f["agent"] for f in problem.context["failures"]] == ["reviewer-2"]
    assert [a.name for a in problem.actions] == _declared(AGENT_PROBLEM)
    outputs = {o.agent: o.status for o in problem.agent_outputs}
    assert sorted(outputs.values()) == sorted(
        [AgentRunStatus.FAILED, AgentRunStatus.COMPLETED, AgentRunStatus.COMPLETED]
    )
    # Every output names its job as the rest of Orchestra does (not the step's name).
    assert {o.job for o in problem.agent_outputs} == {"reviewer"}

    # still broken: the retry fails again, and only reviewer-2 ran again
    await decide(service, worker, problem, "retry")
    problem2 = await pending(service, wf.id, AGENT_PROBLEM)
    assert problem2.id != problem.id
    marker.write_text("ok")
    await decide(service, worker, problem2, "retry")
    review_cp = await pending(service, wf.id, REVIEWS_READY)
    assert len(review_cp.agent_outputs) == 3

    attempts = sorted(
        (r.agent, r.attempt, r.status) for r in await runs(service, wf.id, job="reviewer")
    )
    assert attempts == [
        ("reviewer-1", 1, AgentRunStatus.COMPLETED),
        ("reviewer-2", 1, AgentRunStatus.FAILED),
        ("reviewer-2", 2, AgentRunStatus.FAILED),
        ("reviewer-2", 3, AgentRunStatus.COMPLETED),
        ("reviewer-3", 1, AgentRunStatus.COMPLETED),
    ]


async def test_timeout_becomes_an_agent_problem_and_a_retry_may_wait_longer(
    service: Orchestra, worker: Worker
) -> None:
    slow = demo(delay_s=0.6, timeout_s=0.1)
    cp = await start(service, worker, prompt=TASK, agents=agents(reviewers=[demo(), slow]))
    wf = await decide(service, worker, cp, "approve")
    problem = await pending(service, wf.id, AGENT_PROBLEM)
    (failure,) = problem.context["failures"]
    assert failure["error"].startswith("timeout") and failure["timeout_s"] == 0.1
    # a plain retry after a timeout doubles it (still too short here)
    await decide(service, worker, problem, "retry")
    problem2 = await pending(service, wf.id, AGENT_PROBLEM)
    # a longer timeout given with the retry is used, and recorded with the decision
    (retry,) = [a for a in problem2.actions if a.name == "retry"]
    assert [i.name for i in retry.inputs] == ["timeout_s"]
    await decide(service, worker, problem2, "retry", inputs={"timeout_s": 30})
    await pending(service, wf.id, REVIEWS_READY)
    decided = await service.get_checkpoint(problem2.id)
    assert decided.resolution is not None and decided.resolution.inputs == {"timeout_s": 30.0}
    slow_runs = await runs(service, wf.id, agent="reviewer-2")
    assert [(r.attempt, r.status) for r in slow_runs] == [
        (1, AgentRunStatus.FAILED),
        (2, AgentRunStatus.FAILED),
        (3, AgentRunStatus.COMPLETED),
    ]
    assert "0.1s" in (slow_runs[0].error or "") and "0.2s" in (slow_runs[1].error or "")
    assert len(await runs(service, wf.id, agent="reviewer-1")) == 1


async def test_a_retry_never_waits_longer_than_the_configured_maximum(
    service: Orchestra, worker: Worker
) -> None:
    """max_agent_timeout_s caps the doubled timeout of a plain retry, and the retry's
    input: the contract shows the cap and a larger value is refused."""
    service.agents = service.agents.model_copy(update={"max_timeout_s": 0.15})
    slow = demo(delay_s=0.6, timeout_s=0.1)
    cp = await start(service, worker, prompt=TASK, agents=agents(reviewers=[demo(), slow]))
    wf = await decide(service, worker, cp, "approve")
    problem = await pending(service, wf.id, AGENT_PROBLEM)
    (retry,) = [a for a in problem.actions if a.name == "retry"]
    assert retry.inputs[0].maximum == 0.15
    with pytest.raises(InvalidInput, match=r"between 1 and 0\.15"):
        await service.resolve(
            problem.id, Decision(action="retry", inputs={"timeout_s": 30}), actor="ana"
        )
    await decide(service, worker, problem, "retry")
    await pending(service, wf.id, AGENT_PROBLEM)
    slow_runs = await runs(service, wf.id, agent="reviewer-2")
    assert "0.15s" in (slow_runs[1].error or "")  # not 0.2s


async def test_skip_agent_continues_with_the_reviews_that_succeeded(
    service: Orchestra, worker: Worker
) -> None:
    problem = await _at_problem(service, worker)
    await decide(service, worker, problem, "skip_agent")
    review_cp = await pending(service, problem.workflow_id, REVIEWS_READY)
    assert [o.agent for o in review_cp.agent_outputs] == ["reviewer-1 (demo)"]
    assert review_cp.consolidation is not None and len(review_cp.consolidation.verdicts) == 1
    statuses = {r.agent: r.status for r in await runs(service, problem.workflow_id)}
    assert statuses["reviewer-2"] is AgentRunStatus.SKIPPED


async def test_manual_input_for_the_planner_becomes_the_plan(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    problem = await start(
        service,
        worker,
        prompt=TASK,
        step=AGENT_PROBLEM,
        agents=agents(planner=demo(fail="error")),
    )
    assert problem.context["failed_step"] == "plan"
    assert problem.action("skip_agent") is None  # a plan cannot be skipped
    before = await snapshot(db)
    for bad in ({"action": "skip_agent"}, {"action": "manual_input"}):
        with pytest.raises(InvalidInput):
            await service.resolve(problem.id, Decision(**bad), actor="ana")
    assert await snapshot(db) == before
    mine = "# Plan written by hand\n\n1. Add the flag.\n2. Test it.\n"
    wf = await decide(service, worker, problem, "manual_input", edited_content=mine)
    plan_cp = await pending(service, wf.id, PLAN_READY)
    assert plan_cp.editable_content == mine
    await decide(service, worker, plan_cp, "approve")
    await _assert_reviewers_got(service, wf.id, 1, prompts.reviewer_prompt(TASK, mine, 1))


async def test_manual_input_for_a_reviewer_stands_in_for_its_review(
    service: Orchestra, worker: Worker
) -> None:
    problem = await _at_problem(service, worker)
    plain = "I think step 3 needs a rollback plan."
    await decide(service, worker, problem, "manual_input", edited_content=plain, actor="bea")
    review_cp = await pending(service, problem.workflow_id, REVIEWS_READY)
    by_agent = {o.agent: o for o in review_cp.agent_outputs}
    assert set(by_agent) == {"reviewer-1 (demo)", "bea (manual review)"}
    assert by_agent["bea (manual review)"].structured is None  # plain text
    assert by_agent["reviewer-1 (demo)"].structured is not None  # the demo's JSON
    assert plain in (review_cp.editable_content or "")
    await decide(service, worker, review_cp, "revise")
    (prompt,) = await _prompts(service, problem.workflow_id, "planner", 2)
    assert plain in prompt


async def test_structured_reviews_are_consolidated(service: Orchestra, worker: Worker) -> None:
    review_cp = await _reviews(service, worker)
    consolidation = review_cp.consolidation
    assert consolidation is not None
    assert [v.verdict for v in consolidation.verdicts] == ["approve_with_changes"] * 3
    assert list(consolidation.issues_by_severity) == ["medium"]
    assert len(consolidation.issues_by_severity["medium"]) == 3
    assert consolidation.agreement.startswith("All 3 reviewers agree")
    assert all(o.structured is not None for o in review_cp.agent_outputs)


# -- failed workflows, retry, and terminal statuses -------------------------------


@dataclass
class Breakage:
    """Where the review step of ``plan_review_breaks`` raises: its ``tasks`` or its
    ``on_done``, or nowhere (``None``); otherwise it is Plan & Review's."""

    where: str | None = None


@pytest.fixture
def breaks() -> Iterator[Breakage]:
    """Plan & Review registered as ``plan_review_breaks``, its review step breakable."""
    breakage = Breakage()
    original = plan_review.definition.steps[plan_review.REVIEW]
    assert isinstance(original, AgentStep)

    def tasks(ctx: StepContext[Any]) -> list[AgentTask]:
        if breakage.where == "tasks":
            raise RuntimeError("the review step broke")
        return original.tasks(ctx)

    def on_done(ctx: StepContext[Any], found: dict[str, AgentRun]) -> Next:
        if breakage.where == "on_done":
            raise RuntimeError("on_done broke")
        return original.on_done(ctx, found)

    steps = {
        **plan_review.definition.steps,
        original.name: AgentStep(original.name, tasks, on_done),
    }
    with registered(replace(plan_review.definition, type="plan_review_breaks", steps=steps)):
        yield breakage


async def test_a_step_that_raises_fails_the_workflow_and_retry_completes_it(
    service: Orchestra, worker: Worker, db: Database, breaks: Breakage
) -> None:
    cp = await start(service, worker, prompt=TASK, type="plan_review_breaks")
    breaks.where = "tasks"
    wf = await decide(service, worker, cp, "approve")
    assert wf.status is WorkflowStatus.FAILED
    assert wf.error is not None and "the review step broke" in wf.error
    assert wf.current_step == "review"
    changes = await events_of(service, wf.id, EventType.WORKFLOW_STATUS_CHANGED)
    assert changes[-1].data["to"] == WorkflowStatus.FAILED
    assert "the review step broke" in changes[-1].data["error"]

    before = await snapshot(db)
    with pytest.raises(TransitionNotAllowed):
        await service.cancel(wf.id, actor="ana")
    assert await snapshot(db) == before

    breaks.where = None
    wf = await service.retry(wf.id, actor="ana")
    assert wf.status is WorkflowStatus.RUNNING and wf.error is None
    changes = await events_of(service, wf.id, EventType.WORKFLOW_STATUS_CHANGED)
    assert changes[-1].data == {
        "id": wf.id,
        "from": "failed",
        "to": "running",
        "retried_by": "ana",
    }
    await worker.run_until_idle()
    wf = await decide(service, worker, await pending(service, wf.id, REVIEWS_READY), "approve")
    assert wf.status is WorkflowStatus.COMPLETED


async def test_a_failed_step_leaves_no_agent_run_running(
    service: Orchestra, worker: Worker, breaks: Breakage
) -> None:
    """A workflow that failed after its agents finished shows no run as still running,
    and its retry does not run the agents that had finished again."""
    cp = await start(service, worker, prompt=TASK, type="plan_review_breaks")
    breaks.where = "on_done"
    wf = await decide(service, worker, cp, "approve")
    assert wf.status is WorkflowStatus.FAILED and "on_done broke" in (wf.error or "")
    statuses = [r.status for r in await runs(service, wf.id, job="reviewer")]
    assert AgentRunStatus.RUNNING not in statuses, statuses
    breaks.where = None
    await service.retry(wf.id, actor="ana")
    await worker.run_until_idle()
    await pending(service, wf.id, REVIEWS_READY)


Reach = Callable[[Orchestra, Worker], Awaitable[str]]


async def _completed(service: Orchestra, worker: Worker) -> str:
    review_cp = await _reviews(service, worker)
    wf = await decide(service, worker, review_cp, "approve")
    assert wf.status is WorkflowStatus.COMPLETED
    return wf.id


async def _cancelled(service: Orchestra, worker: Worker) -> str:
    cp = await start(service, worker, prompt=TASK)
    return (await service.cancel(cp.workflow_id, actor="ana")).id


async def _awaiting(service: Orchestra, worker: Worker) -> str:
    return (await start(service, worker, prompt=TASK)).workflow_id


async def test_cancel_and_retry_are_refused_where_the_table_forbids_them(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    refused: list[tuple[Reach, list[str]]] = [
        (_completed, ["cancel", "retry"]),
        (_cancelled, ["cancel", "retry"]),
        (_awaiting, ["retry"]),
    ]
    for reach, operations in refused:
        wf_id = await reach(service, worker)
        before = await snapshot(db)
        for operation in operations:
            with pytest.raises(TransitionNotAllowed):
                await getattr(service, operation)(wf_id, actor="ana")
        assert await snapshot(db) == before, (reach.__name__, operations)
