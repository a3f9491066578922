"""The whole Plan & Review path through the service layer, on both databases."""

from __future__ import annotations

from orchestra.domain.statuses import CheckpointStatus, WorkflowStatus
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra


async def test_plan_review_completes_with_edited_plan(service: Orchestra, worker: Worker) -> None:
    wf = await service.create_workflow(name="flag", prompt="Add a --json flag to list")
    await worker.run_until_idle()
    wf = await service.get_workflow(wf.id)
    assert wf.status is WorkflowStatus.AWAITING_CHECKPOINT
    cp = wf.pending_checkpoint
    assert cp is not None and cp.step_name == "plan_ready_for_review"
    edited = cp.editable_content + "\n5. Also document the flag.\n"
    resolved = await service.resolve(cp.id, action="approve", edited_content=edited, actor="ana")
    assert resolved.status is CheckpointStatus.EDITED
    assert resolved.resolution is not None and resolved.resolution.resolved_by == "ana"

    await worker.run_until_idle()
    wf = await service.get_workflow(wf.id)
    review_cp = wf.pending_checkpoint
    assert review_cp is not None and review_cp.step_name == "reviews_ready_for_consolidation"
    assert len(review_cp.agent_outputs) == 3
    history = await service.history(wf.id)
    reviewer_prompts = [r.prompt for r in history.agent_runs if r.role == "reviewer"]
    assert len(reviewer_prompts) == 3
    assert all("5. Also document the flag." in p for p in reviewer_prompts)

    await service.resolve(review_cp.id, action="approve", actor="ana")
    wf = await service.get_workflow(wf.id)
    assert wf.status is WorkflowStatus.COMPLETED
    assert wf.result is not None and "5. Also document the flag." in wf.result["plan"]
    ids = [e.id for e in (await service.history(wf.id)).events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
