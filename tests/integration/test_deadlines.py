"""Deadlines on both databases: a due checkpoint fires once, escalates to its targets,
takes a default action only when the workflow opted in, and a due row fires after a
restart. Time is given to the sweep (``now=``), so no test waits for a clock."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.app import create_app
from orchestra.config import Settings
from orchestra.domain.deadlines import DEADLINE_ACTOR, DeadlinePolicy, StepDeadline
from orchestra.domain.errors import InvalidInput
from orchestra.domain.events import EventType, NotificationKind
from orchestra.domain.models import Checkpoint, Decision
from orchestra.domain.statuses import CheckpointStatus, WorkflowStatus
from orchestra.engine.deadlines import due_checkpoints
from orchestra.engine.runner import Worker, WorkerSettings
from orchestra.notifications.delivery import Notifier
from orchestra.notifications.targets import NotifyTarget, resolve_targets
from orchestra.runtime import open_runtime
from orchestra.service import Orchestra
from orchestra.store import outbox
from orchestra.store.db import Database, utcnow
from tests.conftest import BACKENDS
from tests.support.engine import events_of, pending, snapshot, start
from tests.support.waiting import eventually

HOUR = 3600.0
PLAN_READY, REVIEWS_READY = "plan_ready_for_review", "reviews_ready_for_consolidation"


def configured(service: Orchestra, **steps: dict[str, Any]) -> Orchestra:
    """``service`` with ``[deadlines.<step>]`` tables, as an operator writes them."""
    service.deadlines = {name: StepDeadline.model_validate(t) for name, t in steps.items()}
    return service


def after(cp: Checkpoint, hours: float) -> datetime:
    return cp.created_at + timedelta(hours=hours)


async def passed(service: Orchestra, workflow_id: str) -> list[dict[str, Any]]:
    found = await events_of(service, workflow_id, EventType.CHECKPOINT_DEADLINE_PASSED)
    return [e.data for e in found]


async def test_without_an_opt_in_a_due_checkpoint_escalates_once_and_nothing_moves(
    service: Orchestra, worker: Worker
) -> None:
    configured(service, **{PLAN_READY: {"after": "4h", "escalate": ["ops"], "action": "approve"}})
    cp = await start(service, worker)
    assert cp.due_at == after(cp, 4)
    wf = await service.get_workflow(cp.workflow_id)  # the operator's table, as it was then
    assert wf.deadline == DeadlinePolicy(steps=service.deadlines)
    assert "deadline" not in wf.agents
    assert cp.deadline is not None
    assert cp.deadline.action is None and cp.deadline.escalate == ["ops"]
    assert cp.deadline.reason is not None and "opt in" in cp.deadline.reason

    assert await service.engine.fire_due_deadlines(now=after(cp, 3.9)) == []
    [fired] = await service.engine.fire_due_deadlines(now=after(cp, 5))
    assert fired["checkpoint_id"] == cp.id and fired["action"] is None
    assert fired["escalate"] == ["ops"] and fired["due_at"] == cp.due_at.isoformat()
    assert await service.engine.fire_due_deadlines(now=after(cp, 9)) == []  # once

    still = await pending(service, cp.workflow_id, PLAN_READY)
    assert still.status is CheckpointStatus.PENDING and still.resolution is None
    assert still.deadline is not None and still.deadline.fired_at is not None
    assert len(await passed(service, cp.workflow_id)) == 1
    # A person still decides it afterwards, as usual.
    done = await service.resolve(cp.id, Decision(action="approve"), actor="ana")
    assert done.resolution is not None and done.resolution.resolved_by == "ana"


async def test_with_an_opt_in_the_default_action_is_taken_as_the_deadline_and_recorded(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker, deadline={"after": "1h", "default_action": "approve"})
    assert cp.deadline is not None and cp.deadline.action == "approve"
    assert cp.deadline.escalate == [] and cp.deadline.reason is None
    wf = await service.get_workflow(cp.workflow_id)
    assert wf.deadline == DeadlinePolicy(after_s=HOUR, default_action="approve")
    assert "deadline" not in wf.agents

    [fired] = await service.engine.fire_due_deadlines(now=after(cp, 2))
    assert fired["action"] == "approve" and fired["note"] is None
    decided = await service.get_checkpoint(cp.id)
    assert decided.status is CheckpointStatus.APPROVED
    assert decided.resolution is not None
    assert decided.resolution.resolved_by == DEADLINE_ACTOR
    assert decided.resolution.notes == (
        f"deadline {cp.due_at.isoformat() if cp.due_at else ''} passed; default action approve"
    )
    # The workflow moved on as after a person's approval; the next checkpoint is due too.
    await worker.run_until_idle()
    nxt = await pending(service, cp.workflow_id, REVIEWS_READY)
    assert nxt.due_at == after(nxt, 1) and nxt.deadline is not None
    assert nxt.deadline.action == "approve"
    types = [e.type for e in await events_of(service, cp.workflow_id)]
    resolved_at = types.index(EventType.CHECKPOINT_STATUS_CHANGED)
    assert types[resolved_at:].count(EventType.CHECKPOINT_DEADLINE_PASSED) == 1


async def test_a_default_action_a_checkpoint_does_not_offer_escalates_only_and_says_why(
    service: Orchestra, worker: Worker
) -> None:
    configured(service, **{PLAN_READY: {"after": "2h", "escalate": ["ops"]}})
    cp = await start(service, worker, deadline={"default_action": "revise"})
    assert cp.due_at == after(cp, 2)  # the step's configured due time
    assert cp.deadline is not None and cp.deadline.action is None
    assert cp.deadline.reason is not None and "'revise' is not offered" in cp.deadline.reason
    [fired] = await service.engine.fire_due_deadlines(now=after(cp, 3))
    assert fired["action"] is None
    assert (await service.get_checkpoint(cp.id)).status is CheckpointStatus.PENDING

    # Where it is offered (reviews), and that step has no configured due time: none.
    await service.resolve(cp.id, Decision(action="approve"), actor="ana")
    await worker.run_until_idle()
    nxt = await pending(service, cp.workflow_id, REVIEWS_READY)
    assert nxt.due_at is None and nxt.deadline is None


async def test_the_step_s_configured_action_is_taken_where_the_workflow_s_is_not_offered(
    service: Orchestra, worker: Worker
) -> None:
    configured(service, **{PLAN_READY: {"after": "1h", "action": "approve"}})
    cp = await start(service, worker, deadline={"default_action": "revise"})
    assert cp.deadline is not None and cp.deadline.action == "approve"


async def test_a_person_who_decides_first_wins_and_the_deadline_never_fires(
    service: Orchestra, worker: Worker
) -> None:
    cp = await start(service, worker, deadline={"after": 60, "default_action": "approve"})
    await service.resolve(cp.id, Decision(action="cancel"), actor="ana")
    assert await service.engine.fire_due_deadlines(now=after(cp, 1)) == []
    assert await passed(service, cp.workflow_id) == []
    wf = await service.get_workflow(cp.workflow_id)
    assert wf.status is WorkflowStatus.CANCELLED


async def test_concurrent_sweeps_fire_each_deadline_once(
    service: Orchestra, worker: Worker
) -> None:
    configured(service, **{PLAN_READY: {"after": 60, "escalate": ["ops"]}})
    opted = {"default_action": "approve"}
    cps = [
        await start(service, worker, name=f"w{i}", deadline=opted if i % 2 else None)
        for i in range(4)
    ]
    late = max(after(cp, 1) for cp in cps)
    sweeps = await asyncio.gather(*(service.engine.fire_due_deadlines(now=late) for _ in range(4)))
    assert sorted(f["checkpoint_id"] for s in sweeps for f in s) == sorted(c.id for c in cps)
    for i, cp in enumerate(cps):
        assert len(await passed(service, cp.workflow_id)) == 1
        done = await service.get_checkpoint(cp.id)
        if i % 2:
            assert done.resolution is not None and done.resolution.resolved_by == DEADLINE_ACTOR
        else:
            assert done.status is CheckpointStatus.PENDING


async def test_the_overdue_notification_goes_to_the_escalation_targets_only(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    configured(service, **{PLAN_READY: {"after": "1h", "escalate": ["lead"]}})
    targets = [
        NotifyTarget(name="lead", url="http://127.0.0.1:9/lead", secret="x"),
        # Subscribed to everything, but not an escalation target of this step.
        NotifyTarget(
            name="chat",
            url="http://127.0.0.1:9/chat",
            format="slack",
            events=list(NotificationKind),
        ),
    ]
    notifier = Notifier(db, resolve_targets(targets), link_base="https://o.example")
    cp = await start(service, worker, name="flag")
    await service.engine.fire_due_deadlines(now=after(cp, 2))
    await notifier.queue(await events_of(service, cp.workflow_id))
    rows = await db.read(outbox.list_notifications)
    overdue = [r for r in rows if r.kind is NotificationKind.CHECKPOINT_OVERDUE]
    assert [r.target for r in overdue] == ["lead"]
    payload = overdue[0].payload
    assert payload["checkpoint"]["id"] == cp.id
    assert payload["deadline"] == {
        "due_at": cp.due_at.isoformat() if cp.due_at else None,
        "action": None,
        "note": None,
    }
    assert payload["summary"].startswith("Overdue since ") and cp.summary[:20] in payload["summary"]
    assert payload["link"] == f"https://o.example/workflows/{cp.workflow_id}#decide"
    # The pending notification went to both, as before.
    kinds = sorted((r.target, r.kind.value) for r in rows)
    assert ("chat", "checkpoint_pending") in kinds and ("lead", "checkpoint_pending") in kinds


async def test_a_due_row_fires_after_a_restart_by_a_new_worker(db_url: str, tmp_path: Path) -> None:
    first = Database(db_url)
    try:
        service = Orchestra(first, allowed_roots=[tmp_path])
        cp = await start(
            service,
            service.engine.worker,
            deadline={"after": 1, "default_action": "approve"},
        )
    finally:
        first.close()  # the process that created it is gone

    second = Database(db_url)
    try:
        settings = WorkerSettings(poll_s=0.1, deadline_poll_s=0.1, heartbeat_s=0.2)
        again = Orchestra(second, allowed_roots=[tmp_path], worker=settings)
        stop = asyncio.Event()
        running = asyncio.create_task(again.engine.run(stop))

        async def moved_on() -> Checkpoint | None:
            wf = await again.get_workflow(cp.workflow_id)
            found = wf.pending_checkpoint
            return found if found is not None and found.step_name == REVIEWS_READY else None

        await eventually(moved_on, what="the deadline to fire and the reviews to arrive")
        stop.set()
        await asyncio.wait_for(running, 30)
        done = await again.get_checkpoint(cp.id)
        assert done.resolution is not None and done.resolution.resolved_by == DEADLINE_ACTOR
        assert len(await passed(again, cp.workflow_id)) == 1
    finally:
        second.close()


@pytest.mark.parametrize(
    ("deadline", "field", "says"),
    [
        ({"after": "soon"}, "deadline.after", "is not a duration"),
        ({"after": "0s"}, "deadline.after", "out of range: 1s to 366d"),
        ({"after": -5}, "deadline.after", "between 1 second"),
        ({"after": "400d"}, "deadline.after", "out of range: 1s to 366d"),
        ({"after": True}, "deadline.after", "not a duration"),
        ({"after": "1h", "default_action": "merge"}, "deadline.default_action", "offered by no"),
        (
            {"after": "1h", "default_action": "Drop Tables"},
            "deadline.default_action",
            "not an action",
        ),
        ({"default_action": "approve"}, "deadline.after", "deadline.after is needed"),
        ({"after": "1h", "escalate": ["ops"]}, "deadline.escalate", "Extra inputs"),
    ],
)
async def test_a_bad_deadline_is_refused_and_nothing_is_written(
    service: Orchestra, db: Database, deadline: dict[str, Any], field: str, says: str
) -> None:
    before = await snapshot(db)
    with pytest.raises(InvalidInput) as err:
        await service.create_workflow(name="x", prompt="y", deadline=deadline)
    assert err.value.details["field"] == field
    assert says in err.value.message
    assert await snapshot(db) == before


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="PostgreSQL not selected")
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_worker_processes_fire_each_deadline_exactly_once(
    service: Orchestra, worker: Worker, db: Database, db_url: str, spawn: Any
) -> None:
    """Every deadline is already due when both workers start, so both sweep for the
    same rows at once: each fires once, and each default action resolves once."""
    configured(service, **{PLAN_READY: {"after": 1, "escalate": []}})
    cps = [
        await start(
            service, worker, name=f"w{i}", deadline={"default_action": "approve"} if i % 2 else None
        )
        for i in range(8)
    ]

    async def all_due() -> bool:
        due = await db.read(lambda c: due_checkpoints(c, utcnow(), 100))
        return len(due) == len(cps)

    await eventually(all_due, what="the deadlines to come due")
    procs = [spawn(db_url, "--deadline-poll", "0.05", "--name", n) for n in ("a", "b")]
    for proc in procs:
        await proc.ready()

    async def all_fired() -> bool:
        return all([await passed(service, cp.workflow_id) for cp in cps])

    await eventually(all_fired, what="every deadline to fire")
    for proc in procs:
        assert proc.stop() == 0, proc.log()
    for i, cp in enumerate(cps):
        assert len(await passed(service, cp.workflow_id)) == 1
        changes = [
            e
            for e in await events_of(service, cp.workflow_id, EventType.CHECKPOINT_STATUS_CHANGED)
            if e.data["id"] == cp.id
        ]
        done = await service.get_checkpoint(cp.id)
        if i % 2:
            assert len(changes) == 1 and changes[0].data["resolved_by"] == DEADLINE_ACTOR
            assert done.resolution is not None and done.resolution.resolved_by == DEADLINE_ACTOR
        else:
            assert changes == [] and done.status is CheckpointStatus.PENDING


async def test_the_checkpoint_page_counts_down_and_says_what_the_time_will_do(
    db_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=db_url,
        no_auth=True,
        notify=[NotifyTarget(name="ops", url="http://127.0.0.1:9/x", secret="k")],
        deadlines={PLAN_READY: StepDeadline(after="4h", escalate=["ops"])},
    )
    runtime = open_runtime(settings)
    try:
        service = runtime.service
        cp = await start(
            service, service.engine.worker, deadline={"default_action": "edit_reviewer_prompt"}
        )
        transport = httpx.ASGITransport(app=create_app(runtime, run_worker=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            page = (await client.get(f"/workflows/{cp.workflow_id}")).text
            assert cp.due_at is not None
            assert f'<time datetime="{cp.due_at.isoformat()}" data-time="due">' in page
            assert "When it passes: escalate to ops; default action " in page
            assert "by orchestra (deadline)" in page and "data-overdue" not in page

            await service.engine.fire_due_deadlines(now=after(cp, 5))
            panel = (await client.get(f"/checkpoints/{cp.id}/panel")).text
            assert "<strong>Overdue</strong>" in panel and "data-overdue" in panel
            assert "the default action “edit_reviewer_prompt” was taken" in panel
            assert "Resolved by <strong>orchestra (deadline)</strong>" in panel
    finally:
        runtime.close()
