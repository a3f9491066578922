"""Resolving checkpoints (they are created where a workflow enters a checkpoint
step: :func:`orchestra.engine.advance.create_checkpoint_txn`).

The action is validated against the checkpoint's own actions, then
the guarded ``pending → approved|edited|rejected`` change, the recorded
resolution and the workflow's next state commit in one transaction. Of two
concurrent resolutions exactly one wins; the other gets :class:`ResolutionConflict`
carrying the winner's resolution; a replay with the winner's idempotency key,
by the same caller with the same body, gets the original answer (anything else
with that key is :class:`IdempotencyKeyReused`, as payment APIs do).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import bindparam, select, update

from orchestra.domain.errors import Conflict, InvalidInput, NotFound
from orchestra.domain.events import EventType
from orchestra.domain.models import Checkpoint, CheckpointAction, Decision, Resolution
from orchestra.domain.statuses import CheckpointStatus, Entity, WorkflowStatus
from orchestra.engine.advance import apply_next_txn, context_of
from orchestra.engine.definition import CANCEL, CheckpointStep, Next, get_definition
from orchestra.engine.transition import transition_txn
from orchestra.store.db import Tx
from orchestra.store.queries import RowMap, to_checkpoint
from orchestra.store.schema import checkpoints, workflows

MAX_CONTENT_CHARS = 1_000_000

SELECT_CHECKPOINT = select(checkpoints).where(checkpoints.c.id == bindparam("id"))
_CHECKPOINTS_WORKFLOW = (
    select(checkpoints.c.workflow_id).where(checkpoints.c.id == bindparam("cp")).scalar_subquery()
)
WORKFLOW_OF_CHECKPOINT = select(workflows).where(workflows.c.id == _CHECKPOINTS_WORKFLOW)
#: A snooze changes no status: it is guarded on the checkpoint still being pending.
_SNOOZE = (
    update(checkpoints)
    .where(
        checkpoints.c.id == bindparam("_id"),
        checkpoints.c.status == CheckpointStatus.PENDING.value,
    )
    .values(
        snoozed_until=bindparam("_until", type_=checkpoints.c.snoozed_until.type),
        snoozed_by=bindparam("_by"),
    )
)


class ResolutionConflict(Conflict):
    """The checkpoint was already resolved (or its workflow no longer waits)."""

    code = "already_resolved"

    def __init__(self, message: str, checkpoint: Checkpoint) -> None:
        resolution = (
            checkpoint.resolution.model_dump(mode="json") if checkpoint.resolution else None
        )
        super().__init__(
            message,
            details={
                "checkpoint_id": checkpoint.id,
                "status": checkpoint.status.value,
                "resolution": resolution,
            },
        )
        self.checkpoint = checkpoint


class IdempotencyKeyReused(InvalidInput):
    """An Idempotency-Key replayed by another caller or with another body: a key
    names one request, so the original answer must not leak to a different one."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used for a different request; use a new key",
            details={"field": "idempotency_key"},
        )


def _same_request(cp: Checkpoint, decision: Decision, actor: str) -> bool:
    """Whether a replay is the request that resolved ``cp``: caller and body as recorded."""
    done = cp.resolution
    if done is None:
        return False
    given = dict(decision.inputs or {})
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in given.values()):
        return False  # the recorded inputs are all numbers
    return (
        done.resolved_by == actor
        and done.action == decision.action
        and done.edited_content == decision.edited_content
        and done.notes == decision.notes
        and given == (done.inputs or {})
        and (decision.comments or None) == (done.comments or None)
    )


def resolve_txn(
    tx: Tx, checkpoint_id: str, decision: Decision, *, actor: str, idempotency_key: str | None
) -> tuple[Checkpoint, RowMap | None]:
    """Resolve a pending checkpoint and move its workflow on, atomically: the
    resolved checkpoint and the workflow row as the move left it (None for an
    idempotent replay, which moves nothing)."""
    # The workflow first, locked, then the checkpoint: every writer locks in that order.
    found = tx.fetch_locked(WORKFLOW_OF_CHECKPOINT, {"cp": checkpoint_id})
    cp_rows = tx.fetch(SELECT_CHECKPOINT, {"id": checkpoint_id}) if found else []
    if not cp_rows:
        raise NotFound(f"no checkpoint with id {checkpoint_id!r}")
    wf, cp_row = found[0], cp_rows[0]
    workflow_id = wf["id"]
    cp = to_checkpoint(cp_row)
    action = decision.action
    if cp.status is not CheckpointStatus.PENDING:
        if idempotency_key is not None and cp_row["idempotency_key"] == idempotency_key:
            if not _same_request(cp, decision, actor):
                raise IdempotencyKeyReused()
            return cp, None  # a replay of the request that won
        who = cp.resolution.resolved_by if cp.resolution else "someone"
        verb = f"resolved by {who} with {cp.resolution.action!r}" if cp.resolution else cp.status
        raise ResolutionConflict(f"checkpoint {checkpoint_id} was already {verb}", cp)
    chosen = cp.action(action)
    if chosen is None:
        allowed = ", ".join(a.name for a in cp.actions)
        raise InvalidInput(
            f"action {action!r} is not offered here; choose one of: {allowed}",
            details={"action": action, "allowed": [a.name for a in cp.actions]},
        )
    edited_content, notes = decision.edited_content, decision.notes
    if chosen.requires_content and not (edited_content or "").strip():
        raise InvalidInput(
            f"action {action!r} needs edited_content (the text to send)",
            details={"action": action, "field": "edited_content"},
        )
    given = _valid_inputs(chosen, decision.inputs or {})
    if decision.comments and not chosen.takes_comments:
        raise InvalidInput(
            f"action {action!r} takes no line comments; give them with an action that does",
            details={"action": action, "field": "comments"},
        )
    for name, value in (("edited_content", edited_content), ("notes", notes)):
        if value is not None and len(value) > MAX_CONTENT_CHARS:
            raise InvalidInput(
                f"{name} is longer than {MAX_CONTENT_CHARS} characters", details={"field": name}
            )
    if wf["status"] != WorkflowStatus.AWAITING_CHECKPOINT:
        raise ResolutionConflict(f"workflow {workflow_id} is {wf['status']}, not waiting", cp)

    resolution = Resolution(
        action=action,
        edited_content=edited_content,
        notes=notes,
        inputs=given or None,
        comments=decision.comments or None,
        resolved_by=actor,
        resolved_at=tx.now,
    )
    if action == CANCEL.name:
        nxt = Next(step=None, cancel=True)
    else:
        step = get_definition(wf["type"]).step(cp.step_name)
        assert isinstance(step, CheckpointStep)
        nxt = step.on_resolve(context_of(wf), resolution)

    edited = edited_content is not None and edited_content != cp.editable_content
    if chosen.destructive:
        status = CheckpointStatus.REJECTED
    elif edited:
        status = CheckpointStatus.EDITED
    else:
        status = CheckpointStatus.APPROVED
    values = {**resolution.model_dump(), "idempotency_key": idempotency_key}
    if not transition_txn(
        tx,
        Entity.CHECKPOINT,
        checkpoint_id,
        workflow_id=workflow_id,
        old=CheckpointStatus.PENDING,
        new=status,
        values=values,
        data={"action": action, "resolved_by": actor},
    ):
        raise ResolutionConflict(f"checkpoint {checkpoint_id} was resolved concurrently", cp)
    row = apply_next_txn(tx, wf, nxt)
    return cp.model_copy(update={"status": status, "resolution": resolution}), row


def snooze_txn(tx: Tx, checkpoint_id: str, until: datetime | None, *, actor: str) -> Checkpoint:
    """Snooze a pending checkpoint until ``until`` (None: wake it now), with its
    ``checkpoint_snoozed`` event, in one transaction. Not a decision: the checkpoint
    stays pending and can be resolved meanwhile. A resolved one is a
    :class:`ResolutionConflict` carrying its resolution."""
    # The same lock order as a resolution's (workflow, then checkpoint).
    found = tx.fetch_locked(WORKFLOW_OF_CHECKPOINT, {"cp": checkpoint_id})
    cp_rows = tx.fetch(SELECT_CHECKPOINT, {"id": checkpoint_id}) if found else []
    if not cp_rows:
        raise NotFound(f"no checkpoint with id {checkpoint_id!r}")
    cp = to_checkpoint(cp_rows[0])
    by = actor if until is not None else None
    if cp.status is not CheckpointStatus.PENDING or not tx.execute(
        _SNOOZE, {"_id": checkpoint_id, "_until": until, "_by": by}
    ):
        done = cp.resolution
        verb = f"resolved by {done.resolved_by} with {done.action!r}" if done else cp.status
        raise ResolutionConflict(
            f"checkpoint {checkpoint_id} was already {verb}; only a pending one can be snoozed",
            cp,
        )
    tx.emit(
        found[0]["id"],
        EventType.CHECKPOINT_SNOOZED,
        {
            "checkpoint_id": checkpoint_id,
            "until": until.isoformat() if until is not None else None,
            "by": actor,
        },
    )
    return cp.model_copy(update={"snoozed_until": until, "snoozed_by": by})


def _valid_inputs(action: CheckpointAction, inputs: Mapping[str, float]) -> dict[str, float]:
    """The inputs given with ``action``, checked against the ones it declares: each
    known, a finite number, within its bounds. Nothing is written when one is not."""
    declared = {i.name: i for i in action.inputs}
    valid: dict[str, float] = {}
    for name, value in inputs.items():
        spec = declared.get(name)
        if spec is None:
            takes = ", ".join(declared) or "none"
            raise InvalidInput(
                f"action {action.name!r} takes no input {name!r} (it takes: {takes})",
                details={"action": action.name, "field": f"inputs.{name}"},
            )
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidInput(
                f"input {name!r} must be a number", details={"field": f"inputs.{name}"}
            )
        if not spec.accepts(value):
            raise InvalidInput(
                f"input {name!r} must be {spec.bounds()}", details={"field": f"inputs.{name}"}
            )
        valid[name] = float(value)
    return valid
