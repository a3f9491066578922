"""Every allowed and every forbidden transition through the one door, on both databases.

For each entity and each (old, new) pair: ``transition_txn`` succeeds exactly
when the table allows it, writes exactly one event when it does and nothing
when it refuses; a guarded write whose ``old`` status or guard does not match
the row returns False and changes nothing; a workflow's ``updated_at`` moves
with each change.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import pytest
from sqlalchemy import insert, select

from orchestra.domain.errors import TransitionNotAllowed
from orchestra.domain.events import EventType
from orchestra.domain.statuses import (
    AgentRunStatus,
    CheckpointStatus,
    Entity,
    WorkflowStatus,
    is_allowed,
)
from orchestra.engine.transition import transition_txn
from orchestra.store.db import Database, Tx
from orchestra.store.schema import agent_runs, checkpoints, events, workflows
from tests.support.engine import snapshot

ENTITIES: list[tuple[Entity, type[StrEnum], EventType]] = [
    (Entity.WORKFLOW, WorkflowStatus, EventType.WORKFLOW_STATUS_CHANGED),
    (Entity.CHECKPOINT, CheckpointStatus, EventType.CHECKPOINT_STATUS_CHANGED),
    (Entity.AGENT_RUN, AgentRunStatus, EventType.AGENT_RUN_STATUS_CHANGED),
]
ENTITY_IDS = [entity.value for entity, _, _ in ENTITIES]
TABLE = {Entity.WORKFLOW: workflows, Entity.CHECKPOINT: checkpoints, Entity.AGENT_RUN: agent_runs}
#: A column per entity that a guard can name (and a value the row does not have).
GUARD = {Entity.WORKFLOW: "lease_token", Entity.CHECKPOINT: "action", Entity.AGENT_RUN: "job"}


def _insert_row(tx: Tx, entity: Entity, status: str) -> tuple[str, str]:
    """A workflow (and, for other entities, one row of theirs) in ``status``."""
    wid = uuid.uuid4().hex
    tx.conn.execute(
        insert(workflows).values(
            id=wid,
            name="t",
            type="plan_review",
            status=status if entity is Entity.WORKFLOW else WorkflowStatus.RUNNING.value,
            current_step="review",
            step_index=1,
            iteration=1,
            max_iterations=3,
            prompt="p",
            agents={},
            state={},
            lease_token="mine",
            created_at=tx.now,
            updated_at=tx.now,
        )
    )
    if entity is Entity.WORKFLOW:
        return wid, wid
    rid = uuid.uuid4().hex
    if entity is Entity.CHECKPOINT:
        tx.conn.execute(
            insert(checkpoints).values(
                id=rid,
                workflow_id=wid,
                number=1,
                step_index=1,
                iteration=1,
                step_name="plan_ready_for_review",
                body={},
                status=status,
                action="approve",
                created_at=tx.now,
            )
        )
    else:
        tx.conn.execute(
            insert(agent_runs).values(
                id=rid,
                workflow_id=wid,
                step_index=1,
                step_name="review",
                iteration=1,
                agent="reviewer-1",
                job="reviewer",
                adapter="demo",
                status=status,
                attempt=1,
                prompt="p",
                started_at=tx.now,
            )
        )
    return wid, rid


async def _row(db: Database, entity: Entity, row_id: str) -> dict[str, Any]:
    table = TABLE[entity]
    return await db.read(
        lambda c: dict(c.execute(select(table).where(table.c.id == row_id)).one()._mapping)
    )


async def _events_of(db: Database, workflow_id: str) -> list[dict[str, Any]]:
    q = select(events).where(events.c.workflow_id == workflow_id).order_by(events.c.id)
    return await db.read(lambda c: [dict(r._mapping) for r in c.execute(q)])


async def _updated_at(db: Database, workflow_id: str) -> datetime:
    q = select(workflows.c.updated_at).where(workflows.c.id == workflow_id)
    return await db.read(lambda c: c.execute(q).scalar_one())


def _move(
    entity: Entity, wid: str, rid: str, old: str, new: str, guard: dict[str, Any] | None = None
) -> Any:
    return lambda tx: transition_txn(
        tx, entity, rid, workflow_id=wid, old=old, new=new, guard=guard
    )


@pytest.mark.parametrize(("entity", "enum", "event_type"), ENTITIES, ids=ENTITY_IDS)
async def test_every_pair_succeeds_exactly_when_the_table_allows_it(
    db: Database, entity: Entity, enum: type[StrEnum], event_type: EventType
) -> None:
    pairs = list(itertools.product([s.value for s in enum], repeat=2))
    rows = await db.write(lambda tx: [_insert_row(tx, entity, old) for old, _ in pairs])
    problems: list[str] = []
    for (old, new), (wid, rid) in zip(pairs, rows, strict=True):
        updated_at = await _updated_at(db, wid)
        if not is_allowed(entity, old, new):
            before = await snapshot(db)
            with pytest.raises(TransitionNotAllowed):
                await db.write(_move(entity, wid, rid, old, new))
            if await snapshot(db) != before:
                problems.append(f"refused {old}→{new} wrote something")
            continue
        if await db.write(_move(entity, wid, rid, old, new)) is not True:
            problems.append(f"allowed {old}→{new} did not happen")
            continue
        row = await _row(db, entity, rid)
        written = await _events_of(db, wid)
        if row["status"] != new:
            problems.append(f"{old}→{new}: status is {row['status']}")
        if [(e["type"], e["data"]) for e in written] != [
            (event_type.value, {"id": rid, "from": old, "to": new})
        ]:
            problems.append(f"{old}→{new}: events {written}")
        moved_at = await _updated_at(db, wid)
        if (moved_at > updated_at) is not (entity is Entity.WORKFLOW):
            problems.append(f"{old}→{new}: the workflow's updated_at is {moved_at}")
    assert not problems, "\n".join(problems)
    assert sum(is_allowed(entity, o, n) for o, n in pairs) > 0


@pytest.mark.parametrize(("entity", "enum", "event_type"), ENTITIES, ids=ENTITY_IDS)
async def test_guarded_write_with_wrong_old_status_or_guard_changes_nothing(
    db: Database, entity: Entity, enum: type[StrEnum], event_type: EventType
) -> None:
    allowed = [(o.value, n.value) for o, n in itertools.product(enum, repeat=2)]
    allowed = [(o, n) for o, n in allowed if is_allowed(entity, o, n)]
    # the row is in some other status than the caller believes
    stale = [(actual.value, o, n) for o, n in allowed for actual in enum if actual.value != o]
    rows = await db.write(lambda tx: [_insert_row(tx, entity, a) for a, _, _ in stale])
    before = await snapshot(db)
    for (_, old, new), (wid, rid) in zip(stale, rows, strict=True):
        assert await db.write(_move(entity, wid, rid, old, new)) is False, (old, new)
    assert await snapshot(db) == before
    # the row is in ``old`` but a guard does not match
    guarded = await db.write(lambda tx: [_insert_row(tx, entity, o) for o, _ in allowed])
    before = await snapshot(db)
    for (old, new), (wid, rid) in zip(allowed, guarded, strict=True):
        wrong = {GUARD[entity]: "someone-else"}
        assert await db.write(_move(entity, wid, rid, old, new, wrong)) is False, (old, new)
    assert await snapshot(db) == before
    # an unknown id is not an error either: nothing matched
    wid, _ = guarded[0]
    old, new = allowed[0]
    assert await db.write(_move(entity, wid, "no-such-id", old, new)) is False
    assert await snapshot(db) == before


async def test_matching_guard_and_values_commit_with_the_status(db: Database) -> None:
    wid, _ = await db.write(lambda tx: _insert_row(tx, Entity.WORKFLOW, WorkflowStatus.RUNNING))
    moved = await db.write(
        lambda tx: transition_txn(
            tx,
            Entity.WORKFLOW,
            wid,
            workflow_id=wid,
            old=WorkflowStatus.RUNNING,
            new=WorkflowStatus.FAILED,
            values={"error": "boom", "lease_token": None},
            guard={"lease_token": "mine"},
            data={"error": "boom"},
        )
    )
    assert moved is True
    row = await _row(db, Entity.WORKFLOW, wid)
    assert (row["status"], row["error"], row["lease_token"]) == (
        WorkflowStatus.FAILED,
        "boom",
        None,
    )
    (event,) = await _events_of(db, wid)
    assert event["data"] == {"id": wid, "from": "running", "to": "failed", "error": "boom"}


async def test_a_transaction_that_raises_after_a_transition_writes_nothing(db: Database) -> None:
    """The change and its event commit with the caller's other writes, or not at all;
    a neighbour in the same SQLite group commit is not affected."""
    (wid, _), (other, _) = await db.write(
        lambda tx: [_insert_row(tx, Entity.WORKFLOW, WorkflowStatus.RUNNING) for _ in range(2)]
    )
    before = await snapshot(db)

    def broken(tx: Tx) -> None:
        assert transition_txn(
            tx,
            Entity.WORKFLOW,
            wid,
            workflow_id=wid,
            old=WorkflowStatus.RUNNING,
            new=WorkflowStatus.COMPLETED,
        )
        raise RuntimeError("the caller failed after the transition")

    good = _move(Entity.WORKFLOW, other, other, WorkflowStatus.RUNNING, WorkflowStatus.FAILED)
    outcomes = await asyncio.gather(db.write(broken), db.write(good), return_exceptions=True)
    assert isinstance(outcomes[0], RuntimeError)
    assert outcomes[1] is True
    after = await snapshot(db)
    assert (await _row(db, Entity.WORKFLOW, wid))["status"] == WorkflowStatus.RUNNING
    assert await _events_of(db, wid) == []
    assert len(after["events"]) == len(before["events"]) + 1
