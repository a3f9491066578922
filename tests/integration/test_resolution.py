"""Exactly-once resolution, idempotent replays, and bad resolutions that write nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestra.domain.errors import InvalidInput, NotFound, OrchestraError
from orchestra.domain.events import EventType
from orchestra.domain.models import Checkpoint, Decision
from orchestra.domain.statuses import CheckpointStatus, WorkflowStatus
from orchestra.engine.checkpoints import (
    MAX_CONTENT_CHARS,
    IdempotencyKeyReused,
    ResolutionConflict,
)
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.store.db import Database
from tests.support.engine import (
    agents,
    assert_events_ordered,
    decide,
    demo,
    max_event_id,
    pending,
    runs,
    snapshot,
    start,
)


async def test_twenty_concurrent_resolutions_exactly_one_wins(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    cp = await start(service, worker)
    mark = await max_event_id(db)
    actors = [f"person-{i}" for i in range(20)]
    outcomes = await asyncio.gather(
        *(
            service.resolve(
                cp.id,
                Decision(action="approve"),
                actor=actor,
                # half of them send an idempotency key, each their own
                idempotency_key=f"key-{actor}" if i % 2 else None,
            )
            for i, actor in enumerate(actors)
        ),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, Checkpoint)]
    lost = [o for o in outcomes if isinstance(o, ResolutionConflict)]
    assert len(won) == 1 and len(lost) == 19, outcomes
    winner = won[0]
    assert winner.status is CheckpointStatus.APPROVED
    assert winner.resolution is not None
    assert winner.resolution.resolved_by == actors[outcomes.index(winner)]
    for conflict in lost:
        assert conflict.code == "already_resolved"
        assert conflict.checkpoint.resolution == winner.resolution
        assert conflict.details["resolution"] == winner.resolution.model_dump(mode="json")
        assert winner.resolution.resolved_by in conflict.message
    assert (await service.get_checkpoint(cp.id)).resolution == winner.resolution

    moved = await service.events_after(workflow_id=cp.workflow_id, after=mark)
    changes = [
        (e.type, e.data["from"], e.data["to"])
        for e in moved
        if e.type in (EventType.CHECKPOINT_STATUS_CHANGED, EventType.WORKFLOW_STATUS_CHANGED)
    ]
    assert changes == [
        (EventType.CHECKPOINT_STATUS_CHANGED, "pending", "approved"),
        (EventType.WORKFLOW_STATUS_CHANGED, "awaiting_checkpoint", "running"),
    ]
    assert [e.type for e in moved].count(EventType.STEP_STARTED) == 1

    await worker.run_until_idle()
    await pending(service, cp.workflow_id, "reviews_ready_for_consolidation")
    reviewer_runs = await runs(service, cp.workflow_id, job="reviewer")
    assert sorted((r.agent, r.attempt) for r in reviewer_runs) == [
        ("reviewer-1", 1),
        ("reviewer-2", 1),
        ("reviewer-3", 1),
    ]
    assert_events_ordered((await service.history(cp.workflow_id)).events)


async def test_replay_with_the_same_key_returns_the_original_answer(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    cp = await start(service, worker)
    edited = (cp.editable_content or "") + "\nEdited by ana.\n"
    first = await service.resolve(
        cp.id,
        Decision(action="approve", edited_content=edited),
        actor="ana",
        idempotency_key="req-1",
    )
    assert first.status is CheckpointStatus.EDITED
    before = await snapshot(db)
    # a retried request gets the original answer and writes nothing
    replays = await asyncio.gather(
        *(
            service.resolve(
                cp.id,
                Decision(action="approve", edited_content=edited),
                actor="ana",
                idempotency_key="req-1",
            )
            for _ in range(5)
        )
    )
    assert all(r == first for r in replays)
    # the key with another body, or by another caller, is refused: it names one request
    for other, actor in (
        (Decision(action="cancel"), "ana"),
        (Decision(action="approve", edited_content=edited), "bob"),
        (Decision(action="approve", edited_content=edited, notes="x"), "ana"),
    ):
        with pytest.raises(IdempotencyKeyReused):
            await service.resolve(cp.id, other, actor=actor, idempotency_key="req-1")
    # another key, or none, is another request: it lost
    for key in ("req-2", None):
        with pytest.raises(ResolutionConflict) as caught:
            await service.resolve(
                cp.id, Decision(action="approve"), actor="bob", idempotency_key=key
            )
        assert caught.value.details["resolution"]["resolved_by"] == "ana"
        assert caught.value.details["resolution"]["edited_content"] == edited
    assert await snapshot(db) == before


async def test_concurrent_requests_with_one_key_all_get_the_one_answer(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker)
    answers = await asyncio.gather(
        *(
            service.resolve(cp.id, Decision(action="approve"), actor="ana", idempotency_key="same")
            for _ in range(10)
        )
    )
    assert len({a.model_dump_json() for a in answers}) == 1
    history = await service.history(cp.workflow_id)
    resolved = [e for e in history.events if e.type is EventType.CHECKPOINT_STATUS_CHANGED]
    assert len(resolved) == 1


async def _at_edit_reviewer_prompt(service: Orchestra, worker: Worker) -> Checkpoint:
    cp = await start(service, worker)
    wf = await decide(service, worker, cp, "edit_reviewer_prompt")
    return await pending(service, wf.id, "edit_reviewer_prompt")


async def _resolved(service: Orchestra, worker: Worker) -> Checkpoint:
    cp = await start(service, worker)
    await service.resolve(cp.id, Decision(action="approve"), actor="ana")
    return cp


async def _superseded(service: Orchestra, worker: Worker) -> Checkpoint:
    cp = await start(service, worker)
    await service.cancel(cp.workflow_id, actor="ana")
    return cp


async def _fresh(service: Orchestra, worker: Worker) -> Checkpoint:
    return await start(service, worker)


async def _at_agent_problem(service: Orchestra, worker: Worker) -> Checkpoint:
    failing = agents(planner=demo(fail="error"))
    return await start(service, worker, step="agent_problem", agents=failing)


BAD: list[tuple[str, Any, dict[str, Any], type[OrchestraError], str]] = [
    ("unknown action", _fresh, {"action": "ship_it"}, InvalidInput, "not offered"),
    ("action of another checkpoint", _fresh, {"action": "revise"}, InvalidInput, "not offered"),
    (
        "missing required content",
        _at_edit_reviewer_prompt,
        {"action": "send_to_reviewers"},
        InvalidInput,
        "needs edited_content",
    ),
    (
        "blank required content",
        _at_edit_reviewer_prompt,
        {"action": "send_to_reviewers", "edited_content": "  \n "},
        InvalidInput,
        "needs edited_content",
    ),
    (
        "content too long",
        _fresh,
        {"action": "approve", "edited_content": "x" * (MAX_CONTENT_CHARS + 1)},
        InvalidInput,
        "longer than",
    ),
    (
        "idempotency key too long",
        _fresh,
        {"action": "approve", "idempotency_key": "k" * 201},
        InvalidInput,
        "Idempotency-Key",
    ),
    (
        "input the action does not take",
        _fresh,
        {"action": "approve", "inputs": {"timeout_s": 30}},
        InvalidInput,
        "takes no input 'timeout_s' (it takes: none)",
    ),
    (
        "unknown input",
        _at_agent_problem,
        {"action": "retry", "inputs": {"timeout": 30}},
        InvalidInput,
        "takes no input 'timeout' (it takes: timeout_s)",
    ),
    (
        "input not a number",
        _at_agent_problem,
        {"action": "retry", "inputs": {"timeout_s": "30"}},
        InvalidInput,
        "must be a number",
    ),
    (
        "input out of bounds",
        _at_agent_problem,
        {"action": "retry", "inputs": {"timeout_s": 0}},
        InvalidInput,
        "between 1 and 3600",  # capped by max_agent_timeout_s
    ),
    ("already resolved", _resolved, {"action": "approve"}, ResolutionConflict, "already"),
    ("workflow cancelled", _superseded, {"action": "approve"}, ResolutionConflict, "already"),
]


@pytest.mark.parametrize(
    ("setup", "resolution", "error", "message"),
    [b[1:] for b in BAD],
    ids=[b[0] for b in BAD],
)
async def test_a_bad_resolution_is_refused_and_writes_nothing(
    service: Orchestra,
    worker: Worker,
    db: Database,
    setup: Any,
    resolution: dict[str, Any],
    error: type[OrchestraError],
    message: str,
) -> None:
    cp = await setup(service, worker)
    before, last_event = await snapshot(db), await max_event_id(db)
    with pytest.raises(error) as caught:
        fields = dict(resolution)
        key = fields.pop("idempotency_key", None)
        await service.resolve(cp.id, Decision(**fields), actor="mallory", idempotency_key=key)
    assert message in caught.value.message
    assert await max_event_id(db) == last_event
    assert await snapshot(db) == before
    if not isinstance(caught.value, ResolutionConflict):
        # the checkpoint still waits, and a good resolution still works
        assert (await service.get_checkpoint(cp.id)).status is CheckpointStatus.PENDING
        good = cp.actions[0]
        content = "my text" if good.requires_content else None
        await service.resolve(
            cp.id, Decision(action=good.name, edited_content=content), actor="ana"
        )


async def test_an_unknown_checkpoint_is_not_found_and_nothing_is_written(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    await start(service, worker)
    before = await snapshot(db)
    with pytest.raises(NotFound):
        await service.resolve("no-such-checkpoint", Decision(action="approve"), actor="ana")
    assert await snapshot(db) == before


async def test_the_resolution_is_recorded_with_the_move_it_caused(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker)
    resolved = await service.resolve(
        cp.id, Decision(action="approve", notes="looks fine"), actor="ana", idempotency_key="k"
    )
    stored = await service.get_checkpoint(cp.id)
    assert stored == resolved
    assert stored.resolution is not None
    assert (stored.resolution.action, stored.resolution.notes, stored.resolution.resolved_by) == (
        "approve",
        "looks fine",
        "ana",
    )
    wf = await service.get_workflow(cp.workflow_id)
    assert wf.status is WorkflowStatus.RUNNING and wf.current_step == "review"


async def test_a_resolution_racing_a_cancel_leaves_one_consistent_outcome(
    service: Orchestra, worker: Worker
) -> None:
    """Whichever commits first wins; the workflow ends cancelled either way and the
    checkpoint says which came first."""
    cp = await start(service, worker)
    resolved, cancelled = await asyncio.gather(
        service.resolve(cp.id, Decision(action="approve"), actor="ana"),
        service.cancel(cp.workflow_id, actor="bob"),
        return_exceptions=True,
    )
    assert not isinstance(cancelled, BaseException), cancelled
    assert cancelled.status is WorkflowStatus.CANCELLED
    stored = await service.get_checkpoint(cp.id)
    if isinstance(resolved, ResolutionConflict):
        assert stored.status is CheckpointStatus.SUPERSEDED and stored.resolution is None
    else:
        assert isinstance(resolved, Checkpoint) and stored == resolved
        assert stored.status is CheckpointStatus.APPROVED
    await worker.run_until_idle()
    history = await service.history(cp.workflow_id)
    assert history.workflow.status is WorkflowStatus.CANCELLED
    assert [r.job for r in history.agent_runs] == ["planner"]
    assert_events_ordered(history.events)


async def test_the_engines_outcome_carries_exactly_the_events_its_commit_appended(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    cp = await start(service, worker)
    mark = await max_event_id(db)
    outcome = await service.engine.resolve(cp.id, Decision(action="approve"), actor="ana")
    assert outcome.value.status is CheckpointStatus.APPROVED
    logged = await service.events_after(workflow_id=cp.workflow_id, after=mark)
    assert outcome.events == logged[: len(outcome.events)]
    assert [e.type for e in outcome.events][:2] == [
        EventType.CHECKPOINT_STATUS_CHANGED,
        EventType.WORKFLOW_STATUS_CHANGED,
    ]
    # The events are all of this commit's: the worker's own commits come after them.
    assert {e.workflow_id for e in outcome.events} == {cp.workflow_id}
