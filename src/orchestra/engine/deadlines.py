"""Firing deadlines: a checkpoint whose due time passed undecided, acted on once.

The due times are rows (``checkpoints.due_at``), so they survive restarts and any
worker may fire them. :func:`fire_txn` claims one with a guarded UPDATE (``WHERE
deadline_fired_at IS NULL AND status = pending``) after locking its workflow, so of
several workers exactly one fires it; in the same transaction it appends
``checkpoint_deadline_passed`` (which the notifier turns into the escalation) and,
when the workflow opted in, takes the default action through :func:`resolve_txn`,
the resolution a person's decision goes through, as :data:`DEADLINE_ACTOR`. A crash
cannot leave a fired deadline without its action, or an action without its record.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from orchestra.domain.deadlines import DEADLINE_ACTOR
from orchestra.domain.errors import Conflict, InvalidInput
from orchestra.domain.events import EventType
from orchestra.domain.models import Decision
from orchestra.domain.statuses import CheckpointStatus
from orchestra.engine.checkpoints import (
    SELECT_CHECKPOINT,
    WORKFLOW_OF_CHECKPOINT,
    resolve_txn,
)
from orchestra.store.db import Tx
from orchestra.store.queries import RowMap, to_checkpoint
from orchestra.store.schema import checkpoints

log = logging.getLogger(__name__)

_PENDING = CheckpointStatus.PENDING.value
_DUE = (
    select(checkpoints.c.id)
    .where(
        checkpoints.c.status == _PENDING,
        checkpoints.c.due_at <= bindparam("now"),
        checkpoints.c.deadline_fired_at.is_(None),
    )
    .order_by(checkpoints.c.due_at)
    .limit(bindparam("limit"))
)
_CLAIM = (
    update(checkpoints)
    .where(
        checkpoints.c.id == bindparam("_id"),
        checkpoints.c.status == _PENDING,
        checkpoints.c.due_at <= bindparam("_now"),
        checkpoints.c.deadline_fired_at.is_(None),
    )
    .values(deadline_fired_at=bindparam("_fired"))
)


def due_checkpoints(conn: Connection, now: datetime, limit: int) -> list[str]:
    """Pending checkpoints due by ``now`` whose deadline has not fired (a read: an
    idle sweep writes nothing)."""
    return [str(r[0]) for r in conn.execute(_DUE, {"now": now, "limit": limit})]


def fire_txn(
    tx: Tx, checkpoint_id: str, now: datetime
) -> tuple[dict[str, Any] | None, RowMap | None]:
    """Fire the deadline of ``checkpoint_id`` if it is due by ``now`` and nobody
    fired it or decided first: the event's data (None: nothing to fire) and, when the
    default action moved the workflow on, the workflow row as it was left."""
    # The workflow first, locked, as every writer of a checkpoint does: a rival sweep
    # or a person's resolution waits here, then finds the checkpoint taken.
    if not tx.fetch_locked(WORKFLOW_OF_CHECKPOINT, {"cp": checkpoint_id}):
        return None, None
    params = {"_id": checkpoint_id, "_now": now, "_fired": tx.now}
    if tx.execute(_CLAIM, params) != 1:
        return None, None
    cp = to_checkpoint(tx.fetch(SELECT_CHECKPOINT, {"id": checkpoint_id})[0])
    assert cp.deadline is not None  # a due time is stored only with its deadline
    due = cp.deadline.due_at.isoformat()
    action, note, row = cp.deadline.action, cp.deadline.reason, None
    if action is not None:
        chosen = cp.action(action)
        decision = Decision(
            action=action,
            # An action that sends the text sends it as it stands.
            edited_content=cp.editable_content if chosen and chosen.requires_content else None,
            notes=f"deadline {due} passed; default action {action}",
        )
        try:
            with tx.savepoint():
                _, row = resolve_txn(
                    tx, checkpoint_id, decision, actor=DEADLINE_ACTOR, idempotency_key=None
                )
        except (Conflict, InvalidInput) as exc:
            log.warning(
                "workflow %s: checkpoint %s is overdue; default action %r not taken: %s",
                cp.workflow_id,
                checkpoint_id,
                action,
                exc.message,
            )
            note, action, row = f"default action {action!r} not taken: {exc.message}", None, None
    data = {
        "checkpoint_id": checkpoint_id,
        "due_at": due,
        "action": action,
        "escalate": list(cp.deadline.escalate),
        "note": note,
    }
    tx.emit(cp.workflow_id, EventType.CHECKPOINT_DEADLINE_PASSED, data)
    log.info(
        "workflow %s: checkpoint %s was due %s; %s",
        cp.workflow_id,
        checkpoint_id,
        due,
        f"default action {action!r} taken" if action else "escalated only",
    )
    return data, row
