"""The event log as live updates read it: a cursor that never skips a committed event.

A reader that polls ``events_after(cursor)`` while many transactions commit
concurrently must end up with every event row, in id order, each once. On
PostgreSQL this depends on ids being handed out in commit order (a sequence
alone would let a reader pass an id that commits later).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import insert, select

from orchestra.domain.events import EventType
from orchestra.domain.models import Decision, Event
from orchestra.engine.runner import Worker, WorkerSettings
from orchestra.service import Orchestra
from orchestra.store.db import Database, Tx
from orchestra.store.schema import events
from tests.support.engine import (
    agents,
    assert_events_ordered,
    demo,
    events_of,
    use_agents,
)
from tests.support.waiting import eventually

WORKFLOWS = 12


async def test_a_polling_cursor_sees_every_event_once_while_many_commit(
    service: Orchestra, db: Database
) -> None:
    seen: list[Event] = []
    done = asyncio.Event()

    async def follow() -> None:
        cursor = 0
        while True:
            finished = done.is_set()  # read before the query: one more pass after done
            rung = db.doorbell.generation  # a commit after this reading rings again
            batch = await service.events_after(after=cursor, limit=5000)
            seen.extend(batch)
            cursor = batch[-1].id if batch else cursor
            if finished and not batch:
                return
            if not batch:  # caught up: read again once something commits (or done)
                await db.doorbell.wait(1.0, since=rung)

    worker = Worker(db, WorkerSettings(concurrency=WORKFLOWS, heartbeat_s=0.2, poll_s=0.05))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    reader = asyncio.create_task(follow())
    quick = demo(delay_s=0.01)
    await asyncio.gather(
        *(
            service.create_workflow(
                name=f"w{i}",
                prompt="p",
                agents=use_agents(service, agents(planner=quick, reviewers=[quick] * 3)),
            )
            for i in range(WORKFLOWS)
        )
    )

    async def all_waiting() -> bool:
        return len((await service.list_checkpoints()).items) == WORKFLOWS

    try:
        await eventually(all_waiting, what="every plan checkpoint")
        pending = (await service.list_checkpoints()).items
        await asyncio.gather(
            *(service.resolve(cp.id, Decision(action="approve"), actor="ana") for cp in pending)
        )
        await eventually(all_waiting, what="every review checkpoint")
    finally:
        stop.set()
        await running
        done.set()
        db.doorbell.ring()  # wake the reader for its last pass
        await reader

    assert_events_ordered(seen)
    all_ids = await db.read(
        lambda c: list(c.execute(select(events.c.id).order_by(events.c.id)).scalars())
    )
    assert [e.id for e in seen] == all_ids
    created = [e for e in seen if e.type is EventType.CHECKPOINT_CREATED]
    assert len(created) == 2 * WORKFLOWS


async def test_a_failed_savepoint_block_leaves_no_rows_and_no_events(db: Database) -> None:
    """A block that fails inside a transaction (entering a step during a claim) is
    undone alone: its writes and the events it emitted go; the rest commits."""

    class Boom(Exception):
        pass

    def txn(tx: Tx) -> None:
        tx.emit(None, EventType.WORKFLOW_CREATED, {"kept": True})
        try:
            with tx.savepoint():
                tx.emit(None, EventType.WORKFLOW_CREATED, {"kept": False})
                tx.conn.execute(insert(events), [_event(tx, "written then undone")])
                raise Boom
        except Boom:
            pass
        with tx.savepoint():
            tx.emit(None, EventType.WORKFLOW_CREATED, {"kept": True})

    await db.write(txn)
    rows = await db.read(lambda c: c.execute(select(events.c.data)).scalars().all())
    assert rows == [{"kept": True}, {"kept": True}]


def _event(tx: Tx, note: str) -> dict[str, object]:
    return {
        "workflow_id": None,
        "type": EventType.WORKFLOW_CREATED.value,
        "data": {"note": note},
        "created_at": tx.now,
    }


async def test_progress_lines_are_written_while_an_agent_works_and_the_rest_with_its_result(
    service: Orchestra, worker: Worker
) -> None:
    """A line reported during the run is written once the interval passes (before
    the result); lines reported at the end go out in the result's transaction."""
    slow = demo(delay_s=2)  # says "thinking" at once, its plan's title at the end
    wf = await service.create_workflow(
        name="progress",
        prompt="p",
        agents=use_agents(service, agents(planner=slow, reviewers=[demo()])),
    )

    async def planner_events() -> list[Event]:
        found = await events_of(
            service, wf.id, EventType.AGENT_PROGRESS, EventType.AGENT_RUN_STATUS_CHANGED
        )
        return [e for e in found if e.data["agent"] == "planner"]

    async def written_while_running() -> bool:  # the run's end would come with its status
        return [e.type for e in await planner_events()] == [EventType.AGENT_PROGRESS]

    driving = asyncio.create_task(worker.run_until_idle())
    try:
        await eventually(written_while_running, what="the first line while the planner runs")
    finally:
        await driving
    during, at_end, done = await planner_events()
    assert (during.type, at_end.type) == (EventType.AGENT_PROGRESS,) * 2
    assert done.type is EventType.AGENT_RUN_STATUS_CHANGED
    assert during.data["lines"] == [{"kind": "status", "text": "demo agent thinking…"}]
    assert at_end.data["lines"][0]["kind"] == "text"
    assert at_end.data["lines"][0]["text"].startswith("# Plan (demo")
    assert during.created_at < at_end.created_at == done.created_at  # one commit at the end
