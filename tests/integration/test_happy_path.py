"""The whole Plan & Review path through the service layer, on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from orchestra.domain.events import EventType
from orchestra.domain.models import CheckpointAction, Decision
from orchestra.domain.statuses import CheckpointStatus, WorkflowStatus
from orchestra.engine.definition import (
    AgentStep,
    AgentTask,
    CheckpointStep,
    CheckpointView,
    Next,
    Step,
    StepContext,
    WorkflowDefinition,
    WorkflowState,
    registered,
)
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.store.db import Database
from tests.support.waiting import eventually


async def test_plan_review_completes_with_edited_plan(service: Orchestra, worker: Worker) -> None:
    wf = await service.create_workflow(name="flag", prompt="Add a --json flag to list")
    await worker.run_until_idle()
    wf = await service.get_workflow(wf.id)
    assert wf.status is WorkflowStatus.AWAITING_CHECKPOINT
    cp = wf.pending_checkpoint
    assert cp is not None and cp.step_name == "plan_ready_for_review"
    edited = cp.editable_content + "\n5. Also document the flag.\n"
    resolved = await service.resolve(
        cp.id, Decision(action="approve", edited_content=edited), actor="ana"
    )
    assert resolved.status is CheckpointStatus.EDITED
    assert resolved.resolution is not None and resolved.resolution.resolved_by == "ana"

    await worker.run_until_idle()
    wf = await service.get_workflow(wf.id)
    review_cp = wf.pending_checkpoint
    assert review_cp is not None and review_cp.step_name == "reviews_ready_for_consolidation"
    assert len(review_cp.agent_outputs) == 3
    history = await service.history(wf.id)
    reviewer_prompts = [r.prompt for r in history.agent_runs if r.job == "reviewer"]
    assert len(reviewer_prompts) == 3
    assert all("5. Also document the flag." in p for p in reviewer_prompts)

    await service.resolve(review_cp.id, Decision(action="approve"), actor="ana")
    wf = await service.get_workflow(wf.id)
    assert wf.status is WorkflowStatus.COMPLETED
    assert wf.result is not None and "5. Also document the flag." in wf.result["plan"]
    ids = [e.id for e in (await service.history(wf.id)).events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_starting_records_pending_to_running_and_the_first_step(
    service: Orchestra, worker: Worker
) -> None:
    """A worker starts a workflow in one transition: pending → running into the
    first agent step, recorded as a status change and a step_started event."""
    wf = await service.create_workflow(name="flag", prompt="Add a --json flag to list")
    await worker.run_until_idle()
    found = (await service.history(wf.id)).events
    moves = [e.data for e in found if e.type is EventType.WORKFLOW_STATUS_CHANGED]
    assert (moves[0]["from"], moves[0]["to"], moves[0]["step"]) == ("pending", "running", "plan")
    steps = [e.data["step"] for e in found if e.type is EventType.STEP_STARTED]
    assert steps[:2] == ["plan", "plan_ready_for_review"]


async def test_a_definition_may_start_at_a_checkpoint(service: Orchestra, worker: Worker) -> None:
    """pending → awaiting_checkpoint is not a transition: such a workflow passes
    through running, and each change is recorded."""
    ask = CheckpointStep(
        name="ask",
        title="Go ahead?",
        actions=[CheckpointAction(name="approve", label="Go")],
        view=lambda ctx: CheckpointView(instructions="Decide."),
        on_resolve=lambda ctx, decision: Next(step=None, result={"ok": True}),
    )
    with registered(_one_step("ask_first", ask)):
        wf = await service.create_workflow(name="a", prompt="p", type="ask_first")
        await worker.run_until_idle()
        cp = (await service.get_workflow(wf.id)).pending_checkpoint
        assert cp is not None and cp.step_name == "ask"
        await service.resolve(cp.id, Decision(action="approve"), actor="ana")
        done = await service.get_workflow(wf.id)
        assert done.status is WorkflowStatus.COMPLETED and done.result == {"ok": True}
        assert await _moves(service, wf.id) == [
            ("pending", "running"),
            ("running", "awaiting_checkpoint"),
            ("awaiting_checkpoint", "completed"),
        ]


async def test_a_workflow_that_fails_to_start_is_failed_and_can_be_retried(
    service: Orchestra, worker: Worker
) -> None:
    """Entering the first step raised: the workflow is recorded as failed with the
    error (not left pending for workers to trip over again), and a retry starts it."""
    broken = {"yes": True}

    def tasks(ctx: StepContext) -> list[AgentTask]:
        if broken["yes"]:
            raise RuntimeError("no agents today")
        return [
            AgentTask(key="a", job="planner", adapter="demo", options={}, prompt="p", timeout_s=5)
        ]

    work = AgentStep(name="work", tasks=tasks, on_done=lambda ctx, runs: Next(step=None))
    with registered(_one_step("starts_badly", work)):
        wf = await service.create_workflow(name="b", prompt="p", type="starts_badly")
        await worker.run_until_idle()
        failed = await service.get_workflow(wf.id)
        assert failed.status is WorkflowStatus.FAILED
        assert failed.error is not None and "no agents today" in failed.error
        broken["yes"] = False
        await service.retry(wf.id, actor="ana")
        await worker.run_until_idle()
        done = await service.get_workflow(wf.id)
        assert done.status is WorkflowStatus.COMPLETED, done.error
        assert await _moves(service, wf.id) == [
            ("pending", "failed"),
            ("failed", "running"),
            ("running", "completed"),
        ]


def _one_step(workflow_type: str, step: Step) -> WorkflowDefinition[WorkflowState]:
    """A definition of one step and no state of its own."""
    return WorkflowDefinition(
        type=workflow_type,
        title=workflow_type,
        state=WorkflowState,
        first_step=step.name,
        steps={step.name: step},
    )


async def _moves(service: Orchestra, workflow_id: str) -> list[tuple[str, str]]:
    """The workflow's recorded status changes, as (from, to)."""
    found = (await service.history(workflow_id)).events
    return [
        (e.data["from"], e.data["to"]) for e in found if e.type is EventType.WORKFLOW_STATUS_CHANGED
    ]


async def test_work_a_worker_keeps_rings_no_bell(
    service: Orchestra, db: Database, tmp_path: Path
) -> None:
    """Handed to the engine's own worker in the creating and resolving commits, and
    driven by it from step to step, a workflow never calls the other workers (no
    empty claim commits); a workflow nobody adopts does."""
    stop = asyncio.Event()
    running = asyncio.create_task(service.engine.run(stop))
    await eventually(lambda: service.engine.worker.accepting, what="the worker taking hand-offs")
    try:
        rung = db.work_bell.generation
        wf = await service.create_workflow(name="flag", prompt="Add a --json flag to list")
        cp = await eventually(lambda: _pending(service, wf.id), what="the plan checkpoint")
        await service.resolve(cp.id, Decision(action="approve"), actor="ana")
        await eventually(
            lambda: _pending(service, wf.id, "reviews_ready_for_consolidation"),
            what="the reviews checkpoint",
        )
        assert db.work_bell.generation == rung

        # Another process's service (its worker not running) adopts nothing: it rings.
        elsewhere = Orchestra(db, allowed_roots=[tmp_path])
        other = await elsewhere.create_workflow(name="other", prompt="p")
        assert db.work_bell.generation > rung
        await eventually(lambda: _pending(service, other.id), what="the other plan")
    finally:
        stop.set()
        await running


async def _pending(service: Orchestra, workflow_id: str, step: str | None = None) -> Any:
    cp = (await service.get_workflow(workflow_id)).pending_checkpoint
    return cp if cp is not None and (step is None or cp.step_name == step) else None
