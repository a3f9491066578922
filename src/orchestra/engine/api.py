"""The engine's front door: the only ways into a workflow from outside the engine.

:class:`Engine` starts, resolves, cancels and retries workflows, fires due
deadlines (:mod:`orchestra.engine.deadlines`) and snoozes checkpoints (which
moves nothing). Each call is
one transaction that changes statuses only through the transition function;
after the commit the engine itself starts what the commit made runnable — on
this process's worker when it is running and has room (leased in that same
transaction, so the next step starts without another commit), otherwise by
ringing every worker — and runs the definition's ``after_commit`` hook. Each
call returns an :class:`Outcome`: what the commit left and the events it
appended.

The service layer (:mod:`orchestra.service`) checks a request, then calls one
method here; nothing outside the engine touches a worker, a lease or a
transaction of the engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, TypeVar

from orchestra.domain.deadlines import DeadlinePolicy
from orchestra.domain.errors import OrchestraError, TransitionNotAllowed
from orchestra.domain.events import EventType
from orchestra.domain.models import Checkpoint, Decision, Event, Workflow
from orchestra.domain.statuses import TERMINAL_WORKFLOW_STATUSES, WorkflowStatus
from orchestra.engine.advance import cancel_txn, load_workflow_txn, new_id, retry_txn
from orchestra.engine.checkpoints import resolve_txn, snooze_txn
from orchestra.engine.deadlines import due_checkpoints, fire_txn
from orchestra.engine.definition import Start, get_definition
from orchestra.engine.leases import NO_LEASE, is_leased
from orchestra.engine.runner import Handoff, Worker, WorkerSettings, after_commit
from orchestra.store.db import Database, Tx, carried_events, utcnow
from orchestra.store.queries import RowMap, to_workflow
from orchestra.store.schema import workflows

__all__ = ["Engine", "NewWorkflow", "Outcome", "WorkerSettings", "get_definition"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_INSERT_WORKFLOW = workflows.insert()


@dataclass(frozen=True)
class NewWorkflow:
    """A workflow to start, as the service checked it."""

    name: str
    type: str
    prompt: str
    #: The agents it runs, resolved from the operator's configuration.
    agents: dict[str, Any]
    max_iterations: int
    workspace_path: str | None = None
    created_by: str | None = None
    #: The client's start options, for a definition that takes some (unchecked here).
    options: dict[str, Any] | None = None
    #: The result of the completed workflow this one continues.
    previous_result: dict[str, Any] | None = None
    #: Its deadlines, as the service merged them (None: no checkpoint is due).
    deadline: DeadlinePolicy | None = None


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one call committed: its result and the events it appended."""

    value: T
    _appended: list[Any] = field(default_factory=list, repr=False)

    @cached_property
    def events(self) -> list[Event]:
        """The events the commit appended, in order (decoded only when asked for)."""
        return carried_events(self._appended)


@dataclass
class _Moved(Generic[T]):
    """Inside a transaction: the result, the workflow row as it was left, and what to
    do after the commit (start the hand-off to this process's worker, or wake every
    worker); ``appended`` is the transaction's own list, filled when it commits."""

    value: T
    row: RowMap | None
    handoff: Handoff | None = None
    wake: bool = False
    appended: list[Any] = field(default_factory=list)


class Engine:
    """The engine of one process: its front door and its worker."""

    def __init__(self, db: Database, worker: WorkerSettings | None = None) -> None:
        self.db = db
        #: This process's worker. Workflows a call here makes runnable go to it in
        #: the same transaction while it runs (:meth:`run`); otherwise any worker
        #: claims them.
        self.worker = Worker(db, worker)

    async def run(self, stop: asyncio.Event) -> None:
        """Run this process's worker, and its sweep of due deadlines, until ``stop``."""
        sweeping = asyncio.create_task(self._sweep_deadlines(stop), name="deadline-sweep")
        try:
            await self.worker.run(stop)
        finally:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping

    async def _sweep_deadlines(self, stop: asyncio.Event) -> None:
        """Every ``deadline_poll_s``: fire the deadlines that are due (any process may;
        each fires once)."""
        while not stop.is_set():
            try:
                await self.fire_due_deadlines()
            except Exception:
                # As the worker's claims: a database hiccup must not end the sweep for
                # good (deadlines would go silent); logged, and tried again.
                log.exception("firing due deadlines failed; trying again shortly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.worker.settings.deadline_poll_s)

    async def fire_due_deadlines(
        self, *, now: datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Fire the deadlines due by ``now`` (default: the current time); the data of
        each ``checkpoint_deadline_passed`` event this call appended."""
        when = now or utcnow()
        due = await self.db.read(lambda conn: due_checkpoints(conn, when, limit))
        fired = []
        for checkpoint_id in due:
            try:
                outcome = await self.fire_deadline(checkpoint_id, now=when)
            except OrchestraError:  # this one again at the next sweep; the others now
                log.exception("checkpoint %s: firing its deadline failed", checkpoint_id)
                continue
            if outcome.value is not None:
                fired.append(outcome.value)
        return fired

    async def fire_deadline(
        self, checkpoint_id: str, *, now: datetime | None = None
    ) -> Outcome[dict[str, Any] | None]:
        """Fire one checkpoint's deadline if it is due and nobody did (None: nothing
        fired); its default action, when it has one, moves the workflow on."""

        def txn(tx: Tx) -> _Moved[dict[str, Any] | None]:
            data, row = fire_txn(tx, checkpoint_id, now or tx.now)
            return _Moved(data, row)

        moved = await self._commit(txn, hook=True)
        return Outcome(moved.value, moved.appended)

    # -- the ways in -----------------------------------------------------

    async def create(self, new: NewWorkflow) -> Outcome[Workflow]:
        """Start a workflow (pending until a worker enters its first step)."""
        definition = get_definition(new.type)
        workflow_id = new_id()
        options = definition.parse_options(new.options)
        if definition.start is not None:
            start = Start(
                agents=new.agents,
                options=options,
                workspace=Path(new.workspace_path) if new.workspace_path else None,
                previous_result=new.previous_result,
            )
            initial = await asyncio.to_thread(definition.start, start)
        else:
            initial = definition.new_state(new.agents)
        state = definition.dump_state(initial)

        def txn(tx: Tx) -> _Moved[None]:
            row: dict[str, Any] = {
                "id": workflow_id,
                "name": new.name,
                "type": new.type,
                "status": WorkflowStatus.PENDING.value,
                "current_step": None,
                "step_index": 0,
                "iteration": 1,
                "max_iterations": new.max_iterations,
                "prompt": new.prompt,
                "workspace_path": new.workspace_path,
                "agents": new.agents,
                "state": state,
                "retry": None,
                "deadline": new.deadline.model_dump(mode="json") if new.deadline else None,
                "result": None,
                "error": None,
                "created_by": new.created_by,
                **NO_LEASE,
                "created_at": tx.now,
                "updated_at": tx.now,
                "finished_at": None,
            }
            tx.execute(_INSERT_WORKFLOW, row)
            tx.emit(
                workflow_id,
                EventType.WORKFLOW_CREATED,
                {
                    "id": workflow_id,
                    "name": new.name,
                    "type": new.type,
                    "created_by": new.created_by,
                },
            )
            return _Moved(None, row)

        return await self._workflow_outcome(txn)

    async def resolve(
        self,
        checkpoint_id: str,
        decision: Decision,
        *,
        actor: str,
        idempotency_key: str | None = None,
    ) -> Outcome[Checkpoint]:
        """Resolve a checkpoint and move its workflow on (exactly once: a rival gets
        :class:`~orchestra.engine.checkpoints.ResolutionConflict`)."""

        def txn(tx: Tx) -> _Moved[Checkpoint]:
            checkpoint, row = resolve_txn(
                tx, checkpoint_id, decision, actor=actor, idempotency_key=idempotency_key
            )
            return _Moved(checkpoint, row)

        moved = await self._commit(txn, hook=True)
        return Outcome(moved.value, moved.appended)

    async def snooze(
        self, checkpoint_id: str, until: datetime | None, *, actor: str
    ) -> Outcome[Checkpoint]:
        """Say "not now" to a pending checkpoint until ``until`` (None: wake it now).
        Nothing moves: no worker is woken and the workflow still waits."""

        def txn(tx: Tx) -> tuple[Checkpoint, list[Any]]:
            return snooze_txn(tx, checkpoint_id, until, actor=actor), tx.appended

        checkpoint, appended = await self.db.write(txn)
        return Outcome(checkpoint, appended)

    async def cancel(self, workflow_id: str, *, actor: str) -> Outcome[Workflow]:
        """Cancel a workflow that has not ended."""

        def txn(tx: Tx) -> _Moved[None]:
            row = load_workflow_txn(tx, workflow_id)
            if WorkflowStatus(row["status"]) in TERMINAL_WORKFLOW_STATUSES:
                raise TransitionNotAllowed(
                    f"workflow {workflow_id} is {row['status']} and cannot be cancelled",
                    details={"status": row["status"]},
                )
            return _Moved(None, cancel_txn(tx, row, reason=f"cancelled by {actor}"))

        return await self._workflow_outcome(txn, hook=True)

    async def retry(self, workflow_id: str, *, actor: str) -> Outcome[Workflow]:
        """Run a failed workflow's current step again; its failed agents run again."""

        def txn(tx: Tx) -> _Moved[None]:
            row = load_workflow_txn(tx, workflow_id)
            if row["status"] != WorkflowStatus.FAILED:
                raise TransitionNotAllowed(
                    f"workflow {workflow_id} is {row['status']}; only a failed workflow can be "
                    "retried",
                    details={"status": row["status"]},
                )
            return _Moved(None, retry_txn(tx, row, actor=actor))

        return await self._workflow_outcome(txn)

    # -- after the commit ------------------------------------------------

    async def _workflow_outcome(
        self, txn: Callable[[Tx], _Moved[None]], *, hook: bool = False
    ) -> Outcome[Workflow]:
        moved = await self._commit(txn, hook=hook)
        assert moved.row is not None
        return Outcome(to_workflow(moved.row), moved.appended)

    async def _commit(self, txn: Callable[[Tx], _Moved[T]], *, hook: bool = False) -> _Moved[T]:
        """Run ``txn``, handing what it left runnable to this process's worker in the
        same transaction; after the commit, start that (or ring every worker) and,
        with ``hook`` (a person moved or cancelled the workflow), run the definition's
        ``after_commit`` hook."""

        def with_handoff(tx: Tx) -> _Moved[T]:
            moved = txn(tx)
            moved.appended = tx.appended  # the same list: flushing the events fills it
            row = moved.row
            if row is not None and _runnable(row, tx):
                moved.handoff = self.worker.adopt_txn(tx, row)
                moved.wake = moved.handoff is None
                if moved.handoff is not None and moved.handoff[1] is not None:
                    moved.row = moved.handoff[1].row  # as the worker's step left it
            return moved

        moved = await self.db.write(with_handoff)
        row = moved.row
        if moved.handoff is not None:
            self.worker.start(moved.handoff)
        elif moved.wake:
            await self.db.wake_workers()
        if hook and row is not None and row["workspace_path"]:
            await after_commit(row)  # e.g. plans written into the workspace
        return moved


def _runnable(row: RowMap, tx: Tx) -> bool:
    """Whether a worker should take the workflow ``row`` now: runnable and unleased."""
    return WorkflowStatus(row["status"]).is_runnable and not is_leased(row, tx.now)
