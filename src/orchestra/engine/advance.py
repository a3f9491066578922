"""Moving a workflow on: to its next step (creating the checkpoint when that step is
one), to completion, to cancellation, to failure.

All functions take a :class:`Tx` (the caller's transaction) and change statuses
only through :func:`transition_txn`.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, insert, select

from orchestra.domain.deadlines import DeadlinePolicy, checkpoint_deadline
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
from orchestra.engine.leases import NO_LEASE, Lease
from orchestra.engine.transition import transition_txn
from orchestra.store.db import Tx
from orchestra.store.queries import RowMap
from orchestra.store.schema import agent_runs, checkpoints, workflows

log = logging.getLogger(__name__)


def new_id() -> str:
    """A new row id: 32 random hex digits (uuid4's shape, without building a UUID).
    Random, not time-ordered (UUIDv7): ids that differ from their first digits are
    easy to tell apart on screen, and time-ordered ids saved only 5% of the pages
    a commit writes, with no measurable gain in speed."""
    return secrets.token_hex(16)


#: The checkpoint's number (1, 2, … per workflow) is taken in the insert itself:
#: one statement, not a read and a write.
_NEXT_NUMBER = select(func.coalesce(func.max(checkpoints.c.number), 0) + 1).where(
    checkpoints.c.workflow_id == bindparam("b_workflow_id")
)
_INSERT_CHECKPOINT = (
    insert(checkpoints)
    .values(number=_NEXT_NUMBER.scalar_subquery())
    .returning(checkpoints.c.number)
)
_SELECT_WORKFLOW = select(workflows).where(workflows.c.id == bindparam("id"))
_PENDING_CHECKPOINTS = select(checkpoints.c.id).where(
    checkpoints.c.workflow_id == bindparam("wid"),
    checkpoints.c.status == CheckpointStatus.PENDING.value,
)
_RUNS_IN = select(agent_runs.c.id).where(
    agent_runs.c.workflow_id == bindparam("wid"), agent_runs.c.status == bindparam("status")
)
_STEP_RUNS_IN = _RUNS_IN.where(
    agent_runs.c.step_name == bindparam("step"), agent_runs.c.iteration == bindparam("iteration")
)


def load_workflow_txn(tx: Tx, workflow_id: str) -> RowMap:
    """The workflow row, locked for the rest of this transaction."""
    rows = tx.fetch_locked(_SELECT_WORKFLOW, {"id": workflow_id})
    if not rows:
        raise NotFound(f"no workflow with id {workflow_id!r}")
    return rows[0]


def context_of(row: RowMap) -> StepContext[Any]:
    """What the workflow's definition sees of ``row``: its state as the definition's
    model (validated here, once per call)."""
    return StepContext(
        workflow_id=row["id"],
        name=row["name"],
        prompt=row["prompt"],
        iteration=row["iteration"],
        max_iterations=row["max_iterations"],
        workspace=Path(row["workspace_path"]) if row["workspace_path"] else None,
        agents=row["agents"],
        state=get_definition(row["type"]).load_state(row["state"]),
    )


def apply_next_txn(tx: Tx, row: RowMap, nxt: Next, *, lease: Lease | None = None) -> RowMap:
    """Apply a definition's :class:`Next` to the workflow ``row``; return the row as
    this transaction left it.

    ``lease``: a worker moves the workflow under its lease (the move fails with
    :class:`LeaseLost` if the lease is gone, and the worker keeps driving it);
    None: a person's resolution moves it (the caller hands it to a worker).
    Entering a checkpoint step creates its checkpoint in the same transaction
    and releases the lease: the workflow waits for a person, not for a worker.
    """
    old = row["status"]
    definition = get_definition(row["type"])
    state = row["state"] if nxt.state is None else definition.dump_state(nxt.state)
    if nxt.skip_failed is not None:
        _skip_failed_runs_txn(tx, row["id"], nxt.skip_failed, row["iteration"])
    if nxt.cancel:
        return cancel_txn(tx, row, reason="cancelled at a checkpoint", state=state, lease=lease)
    retry = dict(nxt.retry) if nxt.retry else None
    values: dict[str, Any]
    if nxt.step is None:
        values = {
            "result": nxt.result or {},
            "state": state,
            "retry": None,
            "finished_at": tx.now,
            "current_step": None,
            **NO_LEASE,
        }
        return _move_workflow_txn(
            tx, row, old=old, new=WorkflowStatus.COMPLETED, values=values, lease=lease
        )

    step = definition.step(nxt.step)
    iteration = nxt.iteration if nxt.iteration is not None else row["iteration"]
    values = {
        "current_step": step.name,
        "step_index": row["step_index"] + 1,
        "iteration": iteration,
        "state": state,
        "retry": retry,
    }
    if isinstance(step, CheckpointStep):
        values.update(NO_LEASE)
        new = WorkflowStatus.AWAITING_CHECKPOINT
    else:
        new = WorkflowStatus.RUNNING
    data = {"step": step.name, "step_index": values["step_index"], "iteration": iteration}
    event = EventType.STEP_STARTED if old == new else None
    moved = _move_workflow_txn(
        tx, row, old=old, new=new, values=values, lease=lease, event=event, data=data
    )
    if event is None:
        tx.emit(row["id"], EventType.STEP_STARTED, data)
    if isinstance(step, CheckpointStep):
        create_checkpoint_txn(tx, moved, step)
    return moved


#: The longest one-line summary a checkpoint keeps (inbox rows, notifications, CLI).
SUMMARY_CHARS = 200


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


def create_checkpoint_txn(tx: Tx, row: RowMap, step: CheckpointStep[Any]) -> str:
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
        "summary": " ".join((view.summary or step.title).split())[:SUMMARY_CHARS],
        "recommended": view.recommended if view.recommended in {a.name for a in actions} else None,
    }
    policy = DeadlinePolicy.model_validate(row["deadline"]) if row["deadline"] else None
    deadline = checkpoint_deadline(policy, step.name, [a.name for a in actions])
    cp_row = {
        "id": new_id(),
        "workflow_id": row["id"],
        "step_index": row["step_index"],
        "iteration": row["iteration"],
        "step_name": step.name,
        "body": body,
        "status": CheckpointStatus.PENDING.value,
        "action": None,
        "edited_content": None,
        "notes": None,
        "inputs": None,
        "comments": None,
        "resolved_by": None,
        "resolved_at": None,
        "idempotency_key": None,
        "created_at": tx.now,
        "due_at": tx.now + timedelta(seconds=deadline["after_s"]) if deadline else None,
        "deadline": deadline,
    }
    (number,) = tx.returned(_INSERT_CHECKPOINT, {**cp_row, "b_workflow_id": row["id"]})
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


def _move_workflow_txn(
    tx: Tx,
    row: RowMap,
    *,
    old: str,
    new: WorkflowStatus,
    values: dict[str, Any],
    lease: Lease | None,
    **change: Any,
) -> RowMap:
    """A workflow status change that must happen: this transaction holds the row
    (:func:`load_workflow_txn` locked it), so a miss is a conflict — or, under a
    worker's lease, the sign that the lease is gone. Returns the row as written."""
    guard = lease.guard if lease is not None else None
    if not transition_txn(
        tx,
        Entity.WORKFLOW,
        row["id"],
        workflow_id=row["id"],
        old=old,
        new=new,
        values=values,
        guard=guard,
        **change,
    ):
        if lease is not None:
            raise LeaseLost(f"lease on workflow {row['id']} lost")
        raise Conflict(f"workflow {row['id']} changed concurrently")
    return {**row, **values, "status": new.value, "updated_at": tx.now}


def cancel_txn(
    tx: Tx,
    row: RowMap,
    *,
    reason: str,
    state: dict[str, Any] | None = None,
    lease: Lease | None = None,
) -> RowMap:
    """Cancel a non-terminal workflow: its pending checkpoint is superseded and
    its running agent runs are cancelled (their worker sees the lease gone)."""
    values: dict[str, Any] = {"finished_at": tx.now, "error": None, "retry": None, **NO_LEASE}
    if state is not None:
        values["state"] = state
    moved = _move_workflow_txn(
        tx,
        row,
        old=row["status"],
        new=WorkflowStatus.CANCELLED,
        values=values,
        lease=lease,
        data={"reason": reason},
    )
    for pending in tx.fetch(_PENDING_CHECKPOINTS, {"wid": row["id"]}):
        transition_txn(
            tx,
            Entity.CHECKPOINT,
            pending["id"],
            workflow_id=row["id"],
            old=CheckpointStatus.PENDING,
            new=CheckpointStatus.SUPERSEDED,
        )
    end_running_runs_txn(tx, row["id"], AgentRunStatus.CANCELLED, "workflow cancelled")
    return moved


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
    params: dict[str, Any] = {"wid": workflow_id, "status": old.value}
    q = _RUNS_IN
    if step_name is not None:
        q = _STEP_RUNS_IN
        params.update(step=step_name, iteration=iteration)
    for run in tx.fetch(q, params):
        transition_txn(
            tx,
            Entity.AGENT_RUN,
            run["id"],
            workflow_id=workflow_id,
            old=old,
            new=new,
            values=values,
        )


def retry_txn(tx: Tx, row: RowMap, *, actor: str) -> RowMap:
    """Run a failed workflow's current step again: back to running, unleased, with
    every failed agent of that step marked to run again (``workflows.retry``)."""
    values = {"error": None, "finished_at": None, "retry": {"*": None}, **NO_LEASE}
    return _move_workflow_txn(
        tx,
        row,
        old=row["status"],
        new=WorkflowStatus.RUNNING,
        values=values,
        lease=None,
        data={"retried_by": actor},
    )


def fail_txn(tx: Tx, row: RowMap, error: str, *, lease: Lease | None = None) -> bool:
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
        guard=lease.guard if lease is not None else None,
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
