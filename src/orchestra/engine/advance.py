"""Moving a workflow on: to its next step (creating the checkpoint when that step is
one), to completion, to cancellation, to failure.

All functions take a :class:`Tx` (the caller's transaction) and change statuses
only through :func:`transition_txn`.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, insert, select

from orchestra.domain.errors import Conflict, LeaseLost, NotFound
from orchestra.domain.events import EventType
from orchestra.domain.models import CheckpointAction
from orchestra.domain.statuses import (
    AgentRunStatus,
    CheckpointStatus,
    Entity,
    WorkflowStatus,
)
from orchestra.engine.definition import (
    CheckpointStep,
    CheckpointView,
    Next,
    StepContext,
    get_definition,
)
from orchestra.engine.transition import transition_txn
from orchestra.store.db import Tx
from orchestra.store.fast import execute_dml, fetch_all
from orchestra.store.queries import RowMap
from orchestra.store.schema import agent_runs, checkpoints, workflows

log = logging.getLogger(__name__)

#: Lease columns cleared whenever a workflow leaves a worker's hands.
NO_LEASE = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}


def new_id() -> str:
    """A new row id: 32 random hex digits (uuid4's shape, without building a UUID).
    Random, not time-ordered (UUIDv7): ids that differ from their first digits are
    easy to tell apart on screen, and time-ordered ids saved only 5% of the pages
    a commit writes, with no measurable gain in speed."""
    return secrets.token_hex(16)


_NEXT_NUMBER = select(func.coalesce(func.max(checkpoints.c.number), 0) + 1).where(
    checkpoints.c.workflow_id == bindparam("wid")
)
_INSERT_CHECKPOINT = insert(checkpoints)
_SELECT_WORKFLOW = select(workflows).where(workflows.c.id == bindparam("id"))
_SELECT_WORKFLOW_FOR_UPDATE = _SELECT_WORKFLOW.with_for_update()
_CHECK_LEASE = (
    workflows.update()
    .where(workflows.c.id == bindparam("b_id"), workflows.c.lease_token == bindparam("b_token"))
    .values(lease_expires_at=bindparam("b_expires"))
)


def load_workflow_txn(tx: Tx, workflow_id: str) -> RowMap:
    """The workflow row, locked for this transaction on Postgres."""
    q = _SELECT_WORKFLOW_FOR_UPDATE if tx.dialect == "postgresql" else _SELECT_WORKFLOW
    rows = fetch_all(tx.conn, q, {"id": workflow_id})
    if not rows:
        raise NotFound(f"no workflow with id {workflow_id!r}")
    return rows[0]


def check_lease_txn(tx: Tx, workflow_id: str, token: str, expires_at: float) -> None:
    """Extend the lease, or raise :class:`LeaseLost` if this worker no longer holds it.

    Every worker transaction starts with this, so a zombie worker cannot write.
    """
    params = {"b_id": workflow_id, "b_token": token, "b_expires": expires_at}
    if execute_dml(tx.conn, _CHECK_LEASE, params) != 1:
        raise LeaseLost(f"lease on workflow {workflow_id} lost")


def context_of(row: RowMap) -> StepContext:
    return StepContext(
        workflow_id=row["id"],
        name=row["name"],
        prompt=row["prompt"],
        iteration=row["iteration"],
        max_iterations=row["max_iterations"],
        workspace=Path(row["workspace_path"]) if row["workspace_path"] else None,
        agents=row["agents"],
        state=row["state"],
    )


def merge_state(state: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(state)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def apply_next_txn(tx: Tx, row: RowMap, nxt: Next, *, lease_token: str | None = None) -> RowMap:
    """Apply a definition's :class:`Next` to the workflow ``row``; return the new row.

    ``lease_token``: a worker moves the workflow under its lease (the move fails
    with :class:`LeaseLost` if the lease is gone, and the worker keeps driving it);
    None: a person's resolution moves it, and a worker is rung for its next step.
    Entering a checkpoint step creates its checkpoint in the same transaction
    and releases the lease: the workflow waits for a person, not for a worker.
    The new row is remembered on the transaction (``tx.workflow_rows``).
    """
    new_row = _apply_next_txn(tx, row, nxt, lease_token=lease_token)
    tx.workflow_rows[new_row["id"]] = dict(new_row)
    return new_row


def _apply_next_txn(tx: Tx, row: RowMap, nxt: Next, *, lease_token: str | None) -> RowMap:
    """:func:`apply_next_txn` without remembering the row."""
    old = row["status"]
    state = merge_state(row["state"], nxt.state)
    if nxt.skip_failed is not None:
        _skip_failed_runs_txn(tx, row["id"], nxt.skip_failed, row["iteration"])
    if nxt.cancel:
        return cancel_txn(
            tx, row, reason="cancelled at a checkpoint", state=state, lease_token=lease_token
        )
    values: dict[str, Any]
    if nxt.step is None:
        values = {
            "result": nxt.result or {},
            "state": state,
            "finished_at": tx.now,
            "current_step": None,
            **NO_LEASE,
        }
        _move_workflow_txn(
            tx,
            row,
            old=old,
            new=WorkflowStatus.COMPLETED,
            values=values,
            lease_token=lease_token,
        )
        return {**row, **values, "status": WorkflowStatus.COMPLETED.value}

    definition = get_definition(row["type"])
    step = definition.step(nxt.step)
    iteration = nxt.iteration if nxt.iteration is not None else row["iteration"]
    values = {
        "current_step": step.name,
        "step_index": row["step_index"] + 1,
        "iteration": iteration,
        "state": state,
    }
    moved = {**row, **values}
    if isinstance(step, CheckpointStep):
        values.update(NO_LEASE)
        new = WorkflowStatus.AWAITING_CHECKPOINT
    else:
        new = WorkflowStatus.RUNNING
    data = {"step": step.name, "step_index": values["step_index"], "iteration": iteration}
    event = EventType.STEP_STARTED if old == new else None
    _move_workflow_txn(
        tx,
        row,
        old=old,
        new=new,
        values=values,
        lease_token=lease_token,
        event=event,
        data=data,
    )
    if event is None:
        tx.emit(row["id"], EventType.STEP_STARTED, data)
    if isinstance(step, CheckpointStep):
        create_checkpoint_txn(tx, moved, step)
    elif lease_token is None:
        # Moved by no worker (a resolution): ring for one. A move under a worker's
        # lease stays with that worker, which runs the step itself.
        tx.wake_workers(row["id"])
    return {**moved, "status": new.value}


def _capped(action: CheckpointAction, view: CheckpointView) -> CheckpointAction:
    """``action`` with the view's lower input maxima applied."""
    if not action.inputs or not view.input_maximum:
        return action
    inputs = []
    for spec in action.inputs:
        cap = view.input_maximum.get(spec.name)
        lower = cap is not None and (spec.maximum is None or cap < spec.maximum)
        inputs.append(spec.model_copy(update={"maximum": cap}) if lower else spec)
    return action.model_copy(update={"inputs": inputs})


def create_checkpoint_txn(tx: Tx, row: RowMap, step: CheckpointStep) -> str:
    """Insert the checkpoint for the workflow's current step visit; return its id.

    The contract (:class:`orchestra.domain.models.Checkpoint`) is built from the
    declarative :class:`CheckpointStep` and the workflow state; the database refuses
    a second checkpoint for the same step visit and a second pending one per workflow."""
    view = step.view(context_of(row))
    actions = [_capped(a, view) for a in step.actions if a.name not in view.hide_actions]
    body: dict[str, Any] = {
        "title": step.title,
        "instructions": view.instructions,
        "agent_outputs": [o.model_dump(mode="json") for o in view.agent_outputs],
        "editable_content": view.editable_content,
        "editable_label": step.editable_label,
        "actions": [a.model_dump(mode="json") for a in actions],
        "consolidation": view.consolidation.model_dump(mode="json") if view.consolidation else None,
        "context": view.context,
    }
    number = next(iter(fetch_all(tx.conn, _NEXT_NUMBER, {"wid": row["id"]})[0].values()))
    cp_row = {
        "id": new_id(),
        "workflow_id": row["id"],
        "number": number,
        "step_index": row["step_index"],
        "iteration": row["iteration"],
        "step_name": step.name,
        "body": body,
        "status": CheckpointStatus.PENDING.value,
        "action": None,
        "edited_content": None,
        "notes": None,
        "inputs": None,
        "resolved_by": None,
        "resolved_at": None,
        "idempotency_key": None,
        "created_at": tx.now,
    }
    execute_dml(tx.conn, _INSERT_CHECKPOINT, cp_row)
    tx.emit(
        row["id"],
        EventType.CHECKPOINT_CREATED,
        {
            "checkpoint_id": cp_row["id"],
            "step": step.name,
            "number": number,
            "iteration": row["iteration"],
        },
    )
    return str(cp_row["id"])


def lease_guard(lease_token: str | None) -> dict[str, Any] | None:
    """The guard that makes a workflow move happen only under this lease (None: no lease)."""
    return None if lease_token is None else {"lease_token": lease_token}


def _move_workflow_txn(tx: Tx, row: RowMap, *, lease_token: str | None, **change: Any) -> None:
    """A workflow status change that must happen: this transaction holds the row
    (locked on Postgres, the single writer on SQLite), so a miss is a conflict —
    or, under a worker's lease, the sign that the lease is gone."""
    guard = lease_guard(lease_token)
    if not transition_txn(
        tx, Entity.WORKFLOW, row["id"], workflow_id=row["id"], guard=guard, **change
    ):
        if lease_token is not None:
            raise LeaseLost(f"lease on workflow {row['id']} lost")
        raise Conflict(f"workflow {row['id']} changed concurrently")


def cancel_txn(
    tx: Tx,
    row: RowMap,
    *,
    reason: str,
    state: dict[str, Any] | None = None,
    lease_token: str | None = None,
) -> RowMap:
    """Cancel a non-terminal workflow: its pending checkpoint is superseded and
    its running agent runs are cancelled (their worker sees the lease gone)."""
    old = row["status"]
    values: dict[str, Any] = {"finished_at": tx.now, "error": None, **NO_LEASE}
    if state is not None:
        values["state"] = state
    _move_workflow_txn(
        tx,
        row,
        old=old,
        new=WorkflowStatus.CANCELLED,
        values=values,
        lease_token=lease_token,
        data={"reason": reason},
    )
    pending = (
        tx.conn.execute(
            select(checkpoints.c.id).where(
                checkpoints.c.workflow_id == row["id"],
                checkpoints.c.status == CheckpointStatus.PENDING,
            )
        )
        .scalars()
        .all()
    )
    for cp_id in pending:
        transition_txn(
            tx,
            Entity.CHECKPOINT,
            cp_id,
            workflow_id=row["id"],
            old=CheckpointStatus.PENDING,
            new=CheckpointStatus.SUPERSEDED,
        )
    end_running_runs_txn(tx, row["id"], AgentRunStatus.CANCELLED, "workflow cancelled")
    return {**row, **values, "status": WorkflowStatus.CANCELLED.value}


def end_running_runs_txn(tx: Tx, workflow_id: str, new: AgentRunStatus, error: str) -> None:
    """End the workflow's agent runs still marked running: no run may look alive
    once its workflow stopped (cancelled, failed) or its worker let go."""
    _move_runs_txn(
        tx, workflow_id, AgentRunStatus.RUNNING, new, values={"finished_at": tx.now, "error": error}
    )


def _move_runs_txn(
    tx: Tx,
    workflow_id: str,
    old: AgentRunStatus,
    new: AgentRunStatus,
    *,
    values: dict[str, Any] | None = None,
    step_name: str | None = None,
    iteration: int | None = None,
) -> None:
    """Move every agent run of the workflow (optionally of one step visit) in
    status ``old`` to ``new``, each through the transition function."""
    q = select(agent_runs.c.id).where(
        agent_runs.c.workflow_id == workflow_id, agent_runs.c.status == old
    )
    if step_name is not None:
        q = q.where(agent_runs.c.step_name == step_name, agent_runs.c.iteration == iteration)
    for run_id in tx.conn.execute(q).scalars().all():
        transition_txn(
            tx, Entity.AGENT_RUN, run_id, workflow_id=workflow_id, old=old, new=new, values=values
        )


def fail_txn(tx: Tx, row: RowMap, error: str, *, lease_token: str | None = None) -> bool:
    """Record a failure; the workflow keeps its current step so a retry resumes it.

    Runs whose results were lost with the failed step become interrupted, so the
    retry runs them again (attempt + 1) and none is left looking alive.
    """
    failed = transition_txn(
        tx,
        Entity.WORKFLOW,
        row["id"],
        workflow_id=row["id"],
        old=row["status"],
        new=WorkflowStatus.FAILED,
        values={"error": error, "finished_at": tx.now, **NO_LEASE},
        guard=lease_guard(lease_token),
        data={"error": error},
    )
    if failed:
        end_running_runs_txn(tx, row["id"], AgentRunStatus.INTERRUPTED, "its step failed")
    return failed


def _skip_failed_runs_txn(tx: Tx, workflow_id: str, step_name: str, iteration: int) -> None:
    _move_runs_txn(
        tx,
        workflow_id,
        AgentRunStatus.FAILED,
        AgentRunStatus.SKIPPED,
        step_name=step_name,
        iteration=iteration,
    )
