"""The worker: claims runnable workflows with a lease, runs their steps, commits.

A worker holds a lease per workflow and renews it with a heartbeat. Every
transaction it makes starts with :func:`check_lease_txn`, so a worker that lost
its lease (it stalled, or the workflow was cancelled) cannot write. When a
worker dies, its leases expire and any worker claims the workflow again and
continues from the last committed step: agent runs that were cut short are
marked ``interrupted`` and run again as attempt + 1; finished runs are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Select, bindparam, insert, or_, select

from orchestra.agents.base import AgentFailure, AgentRequest, AgentResult
from orchestra.agents.registry import create_adapter
from orchestra.domain.errors import LeaseLost, OrchestraError
from orchestra.domain.events import EventType
from orchestra.domain.models import AgentRun
from orchestra.domain.statuses import (
    RUNNABLE_WORKFLOW_STATUSES,
    AgentRunStatus,
    Entity,
    WorkflowStatus,
)
from orchestra.engine.advance import (
    apply_next_txn,
    context_of,
    end_running_runs_txn,
    fail_txn,
    load_workflow_txn,
    new_id,
)
from orchestra.engine.definition import (
    AgentStep,
    AgentTask,
    CheckpointStep,
    Committed,
    Next,
    get_definition,
)
from orchestra.engine.leases import Lease, is_leased
from orchestra.engine.transition import transition_txn
from orchestra.store.db import Database, Tx, utcnow
from orchestra.store.queries import RowMap, exists, to_agent_run
from orchestra.store.schema import agent_runs, workflows

log = logging.getLogger(__name__)

_INSERT_RUN = insert(agent_runs)
_CLAIMABLE = (
    select(workflows.c.id)
    .where(
        # Spelled out as ``=``/``OR``: an ``IN`` list would be expanded at every run,
        # which keeps the statement off the store's fast path.
        or_(*(workflows.c.status == s.value for s in RUNNABLE_WORKFLOW_STATUSES)),
        (workflows.c.lease_expires_at.is_(None))
        | (workflows.c.lease_expires_at < bindparam("now")),
    )
    .order_by(workflows.c.updated_at)
    .limit(bindparam("limit"))
)
_LATEST_RUNS = (
    select(agent_runs)
    .where(
        agent_runs.c.workflow_id == bindparam("wid"),
        agent_runs.c.step_name == bindparam("step"),
        agent_runs.c.iteration == bindparam("iteration"),
    )
    .order_by(agent_runs.c.attempt)
)


async def after_commit(row: RowMap) -> None:
    """Run the definition's ``after_commit`` hook for a workflow row just committed.

    Callers check ``row["workspace_path"]`` first, so a workflow without a
    workspace costs nothing. The hook does file I/O: it runs in a thread, after
    the commit; its failure is logged, since nothing can undo the commit.
    """
    hook = get_definition(row["type"]).after_commit
    if hook is None:
        return
    committed = Committed(
        ctx=context_of(row),
        status=WorkflowStatus(row["status"]),
        step=row["current_step"],
        result=row.get("result"),
    )
    try:
        await asyncio.to_thread(hook, committed)
    except (OSError, OrchestraError):
        log.exception("workflow %s: after-commit hook failed (the commit stands)", row["id"])


@dataclass
class Prepared:
    """A workflow as a worker holds it: its row and, when it is at an agent step,
    the tasks of that step with the runs kept from before and the runs to start."""

    row: RowMap
    step: AgentStep[Any] | None = None
    tasks: dict[str, AgentTask] = field(default_factory=dict)
    kept: dict[str, AgentRun] = field(default_factory=dict)
    to_run: list[AgentRun] = field(default_factory=list)


#: A workflow leased to this worker inside another transaction, ready to drive.
Handoff = tuple[Lease, Prepared | None]


@dataclass
class WorkerSettings:
    concurrency: int = 32
    lease_ttl_s: float = 30.0
    heartbeat_s: float = 2.0
    poll_s: float = 1.0
    #: Grace given to in-flight steps on shutdown before they are cancelled.
    shutdown_grace_s: float = 10.0
    #: Progress events: at most one per run per this many seconds.
    progress_interval_s: float = 0.5
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    #: Claim only these workflows (``orchestra run`` drives its own, not others').
    only: frozenset[str] | None = None
    #: How often the engine looks for checkpoints whose due time passed.
    deadline_poll_s: float = 5.0


class Worker:
    def __init__(self, db: Database, settings: WorkerSettings | None = None) -> None:
        self.db = db
        self.settings = settings or WorkerSettings()
        self._active: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._saturated = False
        self._accepting = False
        #: The claim query for ``settings.only`` (built once per value of it).
        self._claimable: tuple[frozenset[str] | None, Select[Any]] = (None, _CLAIMABLE)

    @property
    def accepting(self) -> bool:
        """Whether it runs and takes hand-offs (:meth:`adopt_txn`)."""
        return self._accepting

    # -- main loop ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and drive workflows until ``stop`` is set, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        self.db.start_listening(loop)
        bell = self.db.work_bell
        stopper = asyncio.create_task(self._ring_on(stop))
        self._stopping = False  # it may run again after a stop (``orchestra run`` does)
        self._accepting = True
        log.info(
            "worker %s started (concurrency %d)", self.settings.name, self.settings.concurrency
        )
        try:
            while not stop.is_set():
                seen = bell.generation
                free = self.settings.concurrency - len(self._active)
                if free > 0:
                    try:
                        claimed = await self._claim(free)
                    except Exception:
                        # A database hiccup or a bug in one claim must not stop the worker
                        # (an embedded worker that died would leave its server serving a
                        # frozen engine): log it, and claim again at the next poll or bell.
                        log.exception("claiming work failed; claiming again shortly")
                        claimed = []
                    for lease, prepared in claimed:
                        self._spawn(lease, prepared)
                    # Saturated: there may be more work; claim again when a slot frees.
                    self._saturated = len(claimed) == free
                    if self._saturated:
                        continue
                await bell.wait(self.settings.poll_s, since=seen)
        finally:
            self._accepting = False
            stopper.cancel()
            await self._shutdown()

    async def _ring_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.db.work_bell.ring()

    def _spawn(self, lease: Lease, prepared: Prepared | None) -> None:
        workflow_id = lease.workflow_id
        task = asyncio.create_task(self._drive(lease, prepared), name=f"drive-{workflow_id}")
        self._active[workflow_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._active.pop(workflow_id, None)
            if self._saturated:  # work was left unclaimed for lack of a slot
                self.db.work_bell.ring()

        task.add_done_callback(done)

    async def _shutdown(self) -> None:
        self._stopping = True
        if not self._active:
            return
        tasks = list(self._active.values())
        _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def run_until_idle(self, *, timeout_s: float = 30.0) -> None:
        """Drive every claimable workflow until none is left (tests, `orchestra run`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            free = self.settings.concurrency - len(self._active)
            claimed = await self.db.write(partial(self._claim_txn, limit=free)) if free else []
            for lease, prepared in claimed:
                self._spawn(lease, prepared)
            if not self._active:
                return
            await asyncio.wait(list(self._active.values()), return_when=asyncio.FIRST_COMPLETED)
        raise TimeoutError("workflows still running after the timeout")

    # -- claiming ------------------------------------------------------------

    def adopt_txn(self, tx: Tx, row: RowMap) -> Handoff | None:
        """Lease a workflow that the caller's transaction (a resolution, a creation)
        just made runnable to this worker and prepare its step, in that same
        transaction: the workflow moves on without a separate claim commit.
        ``row`` is the workflow as that transaction left it.

        None when this worker is not running, has no free slot, or the workflow
        is not runnable. Call :meth:`start` with the result after the commit.
        """
        if not self._accepting or len(self._active) >= self.settings.concurrency:
            return None
        if is_leased(row, tx.now) or not WorkflowStatus(row["status"]).is_runnable:
            return None
        return self._lease_and_enter_txn(tx, row["id"], row)

    def start(self, handoff: Handoff | None) -> None:
        """Drive a workflow adopted in a transaction that has now committed."""
        if handoff is not None and self._accepting:
            self._spawn(*handoff)

    def _lease_and_enter_txn(self, tx: Tx, workflow_id: str, row: RowMap | None = None) -> Handoff:
        lease = Lease(workflow_id, new_id(), self.settings.lease_ttl_s)
        taken = lease.take_txn(tx, self.settings.name)
        prepared: Prepared | None = None
        try:
            with tx.savepoint():
                row = load_workflow_txn(tx, workflow_id) if row is None else {**row, **taken}
                prepared = self._enter_txn(tx, lease, row)
        except Exception:  # noqa: BLE001 - the drive task enters again and records it
            prepared = None
        return lease, prepared

    def _claimable_query(self) -> Select[Any]:
        only = self.settings.only
        if self._claimable[0] != only:
            assert only is not None
            self._claimable = (only, _CLAIMABLE.where(workflows.c.id.in_(sorted(only))))
        return self._claimable[1]

    def _anything_to_claim(self, conn: Connection) -> bool:
        """Whether a claim would find a workflow: one read, so that a worker that
        hears of work another worker takes first spends no write transaction on it
        (every worker hears every ring)."""
        return exists(conn, self._claimable_query(), {"now": utcnow(), "limit": 1})

    async def _claim(self, limit: int) -> list[Handoff]:
        if not await self.db.read(self._anything_to_claim):
            return []
        return await self.db.write(partial(self._claim_txn, limit=limit))

    def _claim_txn(self, tx: Tx, limit: int) -> list[Handoff]:
        """Lease up to ``limit`` runnable workflows and enter their current step, so a
        claimed workflow's agents can start without another commit."""
        params = {"now": tx.now, "limit": limit}
        found = tx.fetch_locked(self._claimable_query(), params, skip_locked=True)
        return [self._lease_and_enter_txn(tx, row["id"]) for row in found]

    # -- driving one workflow ------------------------------------------------

    async def _drive(self, lease: Lease, prepared: Prepared | None) -> None:
        heartbeat = _Heartbeat(self, lease, asyncio.current_task())
        try:
            if prepared is None:
                prepared = await self.db.write(partial(self._enter_txn, lease=lease))
            while prepared.step is not None and not self._stopping:
                prepared = await self._run_agent_step(prepared, lease)
                if prepared.row["workspace_path"]:
                    await after_commit(prepared.row)
            if prepared.step is not None:  # stopping: hand it back now
                await self.db.write(lambda tx: self._release_txn(tx, lease))
                await self.db.wake_workers()
        except LeaseLost:
            log.info(
                "workflow %s: lease lost (cancelled or taken over); stopping", lease.workflow_id
            )
        except asyncio.CancelledError:
            if lease.lost:
                log.info(
                    "workflow %s: lease lost while an agent ran; agent stopped", lease.workflow_id
                )
                return
            with contextlib.suppress(OrchestraError):
                await asyncio.shield(self.db.write(lambda tx: self._release_txn(tx, lease)))
            raise
        except Exception as exc:
            log.exception("workflow %s failed in a step", lease.workflow_id)
            await self._fail(lease, f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.stop()

    async def _fail(self, lease: Lease, error: str) -> None:
        def txn(tx: Tx) -> None:
            lease.renew_txn(tx)
            row = load_workflow_txn(tx, lease.workflow_id)
            fail_txn(tx, row, error, lease=lease)

        try:
            await self.db.write(txn)
        except LeaseLost:
            log.info("workflow %s: not marked failed, lease lost", lease.workflow_id)

    def _enter_txn(self, tx: Tx, lease: Lease, row: RowMap | None = None) -> Prepared:
        """Take over a claimed workflow: start it if new, or resume its step.

        ``row`` is the workflow as this transaction just leased it, when known."""
        if row is None:
            lease.renew_txn(tx)
            row = load_workflow_txn(tx, lease.workflow_id)
        if row["current_step"] is None:  # new, or retried after failing to start
            definition = get_definition(row["type"])
            first = definition.first_step_for(row["state"])
            pending = row["status"] == WorkflowStatus.PENDING
            if pending and isinstance(definition.step(first), CheckpointStep):
                # A person first: pending → running, then running → awaiting_checkpoint.
                transition_txn(
                    tx,
                    Entity.WORKFLOW,
                    row["id"],
                    workflow_id=row["id"],
                    old=WorkflowStatus.PENDING,
                    new=WorkflowStatus.RUNNING,
                    guard=lease.guard,
                )
                row = {**row, "status": WorkflowStatus.RUNNING.value}
            # Otherwise pending → running into the first agent step: one UPDATE.
            row = apply_next_txn(tx, row, Next(step=first), lease=lease)
        else:
            step = get_definition(row["type"]).step(row["current_step"])
            if isinstance(step, CheckpointStep):  # only if a definition starts at one
                row = apply_next_txn(
                    tx,
                    {**row, "step_index": row["step_index"] - 1},
                    Next(step=step.name),
                    lease=lease,
                )
        return self._prepare_txn(tx, row, lease)

    def _prepare_txn(self, tx: Tx, row: RowMap, lease: Lease) -> Prepared:
        """When the workflow is at an agent step, record the runs it is about to start."""
        if row["status"] != WorkflowStatus.RUNNING:
            return Prepared(row)
        step = get_definition(row["type"]).step(row["current_step"])
        if not isinstance(step, AgentStep):
            raise RuntimeError(f"running workflow is at checkpoint step {step.name}")
        tasks = {t.key: t for t in step.tasks(context_of(row))}
        kept, to_run = self._start_runs_txn(tx, row, step, list(tasks.values()))
        return Prepared(row, step, tasks, kept, to_run)

    def _release_txn(self, tx: Tx, lease: Lease) -> None:
        """Give a workflow back without finishing its step (shutdown)."""
        lease.renew_txn(tx)
        end_running_runs_txn(tx, lease.workflow_id, AgentRunStatus.INTERRUPTED, "worker shut down")
        lease.release_txn(tx)

    # -- agent steps ---------------------------------------------------------

    async def _run_agent_step(self, p: Prepared, lease: Lease) -> Prepared:
        """Run the step's agents in parallel; record each result as it arrives and,
        with the last one, let the definition choose the next step (one commit)."""
        assert p.step is not None
        ctx = context_of(p.row)
        runs: dict[str, AgentRun] = dict(p.kept)
        retry: dict[str, Any] = p.row["retry"] or {}
        buffers = {run.id: _ProgressBuffer(self, run, lease) for run in p.to_run}
        pending = {
            asyncio.create_task(
                self._run_agent(
                    p.tasks[run.agent],
                    run,
                    buffers[run.id],
                    ctx.workspace,
                    float(retry.get(run.agent) or p.tasks[run.agent].timeout_s),
                )
            )
            for run in p.to_run
        }
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                outcomes = [task.result() for task in done]
                progress = {run.id: buffers[run.id].take() for run, _ in outcomes}
                if not pending:
                    return await self.db.write(
                        partial(
                            self._finish_step_txn,
                            p=p,
                            lease=lease,
                            runs=runs,
                            outcomes=outcomes,
                            progress=progress,
                        )
                    )
                recorded = await self.db.write(
                    partial(
                        self._record_runs_leased_txn,
                        lease=lease,
                        outcomes=outcomes,
                        progress=progress,
                    )
                )
                runs.update(recorded)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            for buffer in buffers.values():
                buffer.stop()
        # Nothing to run: every agent of this step had finished before.
        return await self.db.write(
            partial(self._finish_step_txn, p=p, lease=lease, runs=runs, outcomes=[], progress={})
        )

    def _start_runs_txn(
        self, tx: Tx, row: RowMap, step: AgentStep[Any], tasks: list[AgentTask]
    ) -> tuple[dict[str, AgentRun], list[AgentRun]]:
        retry: dict[str, Any] = row["retry"] or {}
        latest: dict[str, RowMap] = {}
        params = {"wid": row["id"], "step": step.name, "iteration": row["iteration"]}
        for r in tx.fetch(_LATEST_RUNS, params):
            latest[r["agent"]] = r  # ordered by attempt: the last one wins
        kept: dict[str, AgentRun] = {}
        to_run: list[AgentRun] = []
        started: list[dict[str, Any]] = []
        for task in tasks:
            prev = latest.get(task.key)
            attempt = 1
            if prev is not None:
                status = AgentRunStatus(prev["status"])
                keep = status in (AgentRunStatus.COMPLETED, AgentRunStatus.SKIPPED) or (
                    status is AgentRunStatus.FAILED and task.key not in retry and "*" not in retry
                )
                if keep:
                    kept[task.key] = to_agent_run(prev)
                    continue
                if status is AgentRunStatus.RUNNING:  # cut short by a dead worker
                    transition_txn(
                        tx,
                        Entity.AGENT_RUN,
                        prev["id"],
                        workflow_id=row["id"],
                        old=AgentRunStatus.RUNNING,
                        new=AgentRunStatus.INTERRUPTED,
                        values={
                            "finished_at": tx.now,
                            "error": "its worker stopped before it finished",
                        },
                    )
                attempt = prev["attempt"] + 1
            values = {
                "id": new_id(),
                "workflow_id": row["id"],
                "step_index": row["step_index"],
                "step_name": step.name,
                "iteration": row["iteration"],
                "agent": task.key,
                "job": task.job,
                "adapter": task.adapter,
                "status": AgentRunStatus.RUNNING.value,
                "attempt": attempt,
                "prompt": task.prompt,
                "started_at": tx.now,
            }
            started.append(values)
            tx.emit(
                row["id"],
                EventType.AGENT_RUN_STARTED,
                {
                    "agent_run_id": values["id"],
                    "agent": task.key,
                    "job": task.job,
                    "adapter": task.adapter,
                    "attempt": attempt,
                    "step": step.name,
                },
            )
            to_run.append(AgentRun.model_validate(values))
        if started:  # in one statement: a step's agents start together
            tx.execute(_INSERT_RUN, started)
        return kept, to_run

    async def _run_agent(
        self,
        task: AgentTask,
        run: AgentRun,
        progress: _ProgressBuffer,
        workspace: Path | None,
        timeout: float,
    ) -> tuple[AgentRun, AgentResult | AgentFailure]:
        started = time.monotonic()
        result: AgentResult | AgentFailure
        workdir = task.workdir
        try:
            adapter = task.runner or create_adapter(task.adapter, task.options)
            if workdir is not None and workdir.prepare is not None:
                await asyncio.to_thread(workdir.prepare)
            request = AgentRequest(
                prompt=task.prompt,
                job=task.job,
                timeout_s=timeout,
                workspace=workdir.path if workdir is not None else workspace,
                output_schema=task.output_schema,
                resume_session=task.resume_session,
            )
            async with asyncio.timeout(timeout + 30):  # the adapter's own limit comes first
                result = await adapter.run(request, progress.add)
            if workdir is not None and workdir.capture is not None:
                # Recorded with the run, in the transaction that records it.
                result.meta.update(await asyncio.to_thread(workdir.capture))
        except AgentFailure as failure:
            result = failure
        except TimeoutError:
            result = AgentFailure("timeout", f"no answer within {timeout:g}s")
        except OrchestraError as exc:
            result = AgentFailure("agent_error", exc.message, retryable=False)
        if isinstance(result, AgentResult) and result.duration_ms is None:
            result.duration_ms = int((time.monotonic() - started) * 1000)
        return run, result

    def _record_runs_leased_txn(
        self,
        tx: Tx,
        lease: Lease,
        outcomes: list[tuple[AgentRun, AgentResult | AgentFailure]],
        progress: dict[str, _Progress | None],
    ) -> dict[str, AgentRun]:
        """Record runs that finished before the rest of their step, under the lease."""
        lease.renew_txn(tx)
        return self._record_runs_txn(tx, outcomes, progress)

    def _record_runs_txn(
        self,
        tx: Tx,
        outcomes: list[tuple[AgentRun, AgentResult | AgentFailure]],
        progress: dict[str, _Progress | None],
    ) -> dict[str, AgentRun]:
        """Record finished runs, with their last progress lines; the caller checks
        the lease in the same transaction."""
        recorded = {}
        for run, outcome in outcomes:
            pending_lines = progress.get(run.id)
            if pending_lines is not None:
                _emit_progress(tx, run, pending_lines)
            recorded[run.agent] = self._record_run(tx, run, outcome)
        return recorded

    def _record_run(self, tx: Tx, run: AgentRun, outcome: AgentResult | AgentFailure) -> AgentRun:
        duration = int((tx.now - run.started_at).total_seconds() * 1000)
        if isinstance(outcome, AgentResult):
            new = AgentRunStatus.COMPLETED
            values: dict[str, Any] = {
                "output": outcome.content,
                "structured": outcome.structured,
                "tokens_in": outcome.tokens_in,
                "tokens_out": outcome.tokens_out,
                "cost_usd": outcome.cost_usd,
                "duration_ms": outcome.duration_ms or duration,
                "meta": _meta(outcome.session_id, outcome.meta),
            }
            data: dict[str, Any] = {"agent": run.agent}
        else:
            new = AgentRunStatus.FAILED
            values = {
                "error": f"{outcome.reason}: {outcome.message}",
                "stderr_tail": outcome.stderr_tail or None,
                "meta": _meta(None, outcome.meta),
                "duration_ms": duration,
            }
            data = {"agent": run.agent, "reason": outcome.reason, "error": outcome.message}
        values["finished_at"] = tx.now
        if not transition_txn(
            tx,
            Entity.AGENT_RUN,
            run.id,
            workflow_id=run.workflow_id,
            old=AgentRunStatus.RUNNING,
            new=new,
            values=values,
            data=data,
        ):
            raise LeaseLost(f"agent run {run.id} is no longer running")
        return run.model_copy(update={**values, "status": new})

    def _finish_step_txn(
        self,
        tx: Tx,
        p: Prepared,
        lease: Lease,
        runs: dict[str, AgentRun],
        outcomes: list[tuple[AgentRun, AgentResult | AgentFailure]],
        progress: dict[str, _Progress | None],
    ) -> Prepared:
        """Record the last runs, let the definition pick the next step, and prepare
        it: one commit per agent step. The lease is checked by the workflow's guarded
        move (a miss raises :class:`LeaseLost` and rolls everything back)."""
        runs = {**runs, **self._record_runs_txn(tx, outcomes, progress)}
        assert p.step is not None
        nxt = p.step.on_done(context_of(p.row), runs)
        row = apply_next_txn(tx, p.row, nxt, lease=lease)
        return self._prepare_txn(tx, row, lease)


def _meta(session_id: str | None, meta: dict[str, Any]) -> dict[str, Any] | None:
    """An agent's extra facts as stored on its run (``None`` when it said nothing)."""
    found = {k: v for k, v in meta.items() if v is not None}
    if session_id:
        found["session_id"] = session_id
    return found or None


#: Progress lines of one run waiting to be written, and how many were dropped.
_Progress = tuple[list[dict[str, str]], int]


def _emit_progress(tx: Tx, run: AgentRun, progress: _Progress) -> None:
    lines, dropped = progress
    tx.emit(
        run.workflow_id,
        EventType.AGENT_PROGRESS,
        {"agent_run_id": run.id, "agent": run.agent, "lines": lines, "dropped": dropped},
    )


class _Heartbeat:
    """Renews a lease every ``heartbeat_s`` while its workflow is driven; when the
    lease is lost, cancels the driving task. A timer until its first beat (most
    steps end sooner), a task from then on."""

    def __init__(self, worker: Worker, lease: Lease, body: asyncio.Task[Any] | None) -> None:
        self._worker = worker
        self._lease = lease
        self._body = body
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(worker.settings.heartbeat_s, self._start)

    def _start(self) -> None:
        self._task = asyncio.create_task(self._beat())

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    async def _beat(self) -> None:
        lease = self._lease
        while True:
            try:
                await self._worker.db.write(lease.renew_txn)
            except LeaseLost:
                lease.lost = True
                if self._body is not None:
                    self._body.cancel()
                return
            except Exception:  # not only the database's: a dead heartbeat loses the lease
                log.warning("heartbeat for %s failed; will retry", lease.workflow_id, exc_info=True)
            await asyncio.sleep(self._worker.settings.heartbeat_s)


class _ProgressBuffer:
    """Collects an agent's progress lines and writes them as throttled events: at
    most one event per run per interval, at most ``max_lines`` lines per event.
    Lines still buffered when the run ends go out with its result."""

    max_lines = 50
    max_chars = 300

    def __init__(self, worker: Worker, run: AgentRun, lease: Lease) -> None:
        self._worker = worker
        self._run = run
        self._lease = lease
        self._lines: list[dict[str, str]] = []
        self._dropped = 0
        #: The flush scheduled for the end of the interval (a timer: cheap to cancel).
        self._timer: asyncio.TimerHandle | None = None
        #: Flushes being written (referenced so they are not garbage collected).
        self._writes: set[asyncio.Task[None]] = set()

    def add(self, kind: str, text: str) -> None:
        if len(self._lines) >= self.max_lines:
            self._dropped += 1
        else:
            self._lines.append({"kind": kind, "text": text[: self.max_chars]})
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._worker.settings.progress_interval_s, self._flush)

    def take(self) -> _Progress | None:
        """Hand over what is buffered (to be written with the run's result)."""
        self.stop()
        if not self._lines and not self._dropped:
            return None
        taken = (self._lines, self._dropped)
        self._lines, self._dropped = [], 0
        return taken

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self._timer = None
        taken = self.take()
        if taken is not None:
            task = asyncio.create_task(self._write(taken))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, taken: _Progress) -> None:
        run, lease = self._run, self._lease

        def txn(tx: Tx) -> None:
            lease.renew_txn(tx)
            _emit_progress(tx, run, taken)

        try:
            await self._worker.db.write(txn)
        except LeaseLost:
            log.info("progress of %s not recorded: lease lost", run.id)
        except OrchestraError:
            log.warning("progress of %s not recorded", run.id, exc_info=True)
