"""The one door for status changes.

:func:`transition_txn` checks the allowed-transitions table, performs a guarded
write (``UPDATE … WHERE id = ? AND status = ?`` plus any extra guard such as the
worker's lease), appends the event row, and reports whether the change
happened. It runs inside the caller's transaction, so the change, its event and
whatever else the caller writes commit together or not at all. Nothing else in
Orchestra writes a status column.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from sqlalchemy import Table, Update, bindparam, update

from orchestra.domain.errors import TransitionNotAllowed
from orchestra.domain.events import EventType
from orchestra.domain.statuses import Entity, is_allowed
from orchestra.store.db import Tx
from orchestra.store.schema import agent_runs, checkpoints, workflows

_TABLES: dict[Entity, Table] = {
    Entity.WORKFLOW: workflows,
    Entity.CHECKPOINT: checkpoints,
    Entity.AGENT_RUN: agent_runs,
}
_EVENTS: dict[Entity, EventType] = {
    Entity.WORKFLOW: EventType.WORKFLOW_STATUS_CHANGED,
    Entity.CHECKPOINT: EventType.CHECKPOINT_STATUS_CHANGED,
    Entity.AGENT_RUN: EventType.AGENT_RUN_STATUS_CHANGED,
}


@cache
def _update_statement(
    entity: Entity, value_keys: tuple[str, ...], guard_keys: tuple[str, ...]
) -> Update:
    """The guarded UPDATE for one shape of change, built once (building is the slow
    part of executing a statement; the hot path only binds parameters)."""
    table: Table = _TABLES[entity]
    stmt = update(table).where(table.c.id == bindparam("_id"), table.c.status == bindparam("_old"))
    for column in guard_keys:
        stmt = stmt.where(table.c[column] == bindparam(f"_g_{column}", type_=table.c[column].type))
    row_values: dict[str, Any] = {
        k: bindparam(f"_v_{k}", type_=table.c[k].type) for k in value_keys
    }
    row_values["status"] = bindparam("_new")
    return stmt.values(row_values)


def transition_txn(
    tx: Tx,
    entity: Entity,
    entity_id: str,
    *,
    workflow_id: str,
    old: str,
    new: str,
    values: Mapping[str, Any] | None = None,
    guard: Mapping[str, Any] | None = None,
    event: EventType | None = None,
    data: Mapping[str, Any] | None = None,
) -> bool:
    """Move ``entity_id`` from ``old`` to ``new``; False if it was not in ``old``.

    ``values`` are written with the status; ``guard`` adds equality conditions
    (e.g. the lease token); a workflow's ``updated_at`` is set to the transaction's time.
    Raises :class:`TransitionNotAllowed` for a change the table forbids.
    """
    if not is_allowed(entity, old, new):
        raise TransitionNotAllowed(
            f"a {entity.value} cannot go from {old!r} to {new!r}",
            details={"entity": entity.value, "id": entity_id, "from": old, "to": new},
        )
    row_values = dict(values or {})
    if entity is Entity.WORKFLOW:
        row_values.setdefault("updated_at", tx.now)
    guard = guard or {}
    stmt = _update_statement(entity, tuple(sorted(row_values)), tuple(sorted(guard)))
    params = {"_id": entity_id, "_old": old, "_new": new}
    params.update({f"_v_{k}": v for k, v in row_values.items()})
    params.update({f"_g_{k}": v for k, v in guard.items()})
    if tx.execute(stmt, params) != 1:
        return False
    payload = {"id": entity_id, "from": old, "to": new, **(data or {})}
    tx.emit(workflow_id, event or _EVENTS[entity], payload)
    return True
