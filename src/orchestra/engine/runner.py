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
import uuid
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

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
    NO_LEASE,
    apply_next_txn,
    check_lease_txn,
    context_of,
    fail_txn,
    load_workflow_txn,
    new_id,
)
from orchestra.engine.definition import AgentStep, AgentTask, CheckpointStep, Next, get_definition
from orchestra.engine.transition import transition_txn
from orchestra.store.db import Database, Tx
from orchestra.store.queries import RowMap, to_agent_run
from orchestra.store.schema import agent_runs, workflows

log = logging.getLogger(__name__)

#: Engine-reserved state key: agents to run again although their last attempt
#: failed (set by a retry), mapped to a timeout override or ``None``.
RETRY_KEY = "_retry"


@dataclass
class Lease:
    workflow_id: str
    token: str
    ttl: float
    lost: bool = False

    def expires(self) -> float:
        return time.time() + self.ttl

    def check_txn(self, tx: Tx) -> None:
        check_lease_txn(tx, self.workflow_id, self.token, self.expires())


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


class Worker:
    def __init__(self, db: Database, settings: WorkerSettings | None = None) -> None:
        self.db = db
        self.settings = settings or WorkerSettings()
        self._active: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    # -- main loop ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and drive workflows until ``stop`` is set, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        self.db.start_listening(loop)
        bell = self.db.work_bell
        stopper = asyncio.create_task(self._ring_on(stop))
        log.info(
            "worker %s started (concurrency %d)", self.settings.name, self.settings.concurrency
        )
        try:
            while not stop.is_set():
                seen = bell.generation
                free = self.settings.concurrency - len(self._active)
                if free > 0:
                    try:
                        claimed = await self.db.write(partial(self._claim_txn, limit=free))
                    except OrchestraError:
                        log.exception("claiming work failed; retrying")
                        claimed = []
                    for workflow_id, token in claimed:
                        self._spawn(workflow_id, token)
                    if len(claimed) == free:
                        continue
                await bell.wait(self.settings.poll_s, since=seen)
        finally:
            stopper.cancel()
            await self._shutdown()

    async def _ring_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.db.work_bell.ring()

    def _spawn(self, workflow_id: str, token: str) -> None:
        lease = Lease(workflow_id, token, self.settings.lease_ttl_s)
        task = asyncio.create_task(self._drive(lease), name=f"drive-{workflow_id}")
        self._active[workflow_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._active.pop(workflow_id, None)
            self.db.work_bell.ring()  # a slot is free

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
            for workflow_id, token in claimed:
                self._spawn(workflow_id, token)
            if not self._active:
                return
            await asyncio.wait(list(self._active.values()), return_when=asyncio.FIRST_COMPLETED)
        raise TimeoutError("workflows still running after the timeout")

    # -- claiming ------------------------------------------------------------

    def _claim_txn(self, tx: Tx, limit: int) -> list[tuple[str, str]]:
        now = time.time()
        q = (
            select(workflows.c.id)
            .where(
                workflows.c.status.in_([s.value for s in RUNNABLE_WORKFLOW_STATUSES]),
                (workflows.c.lease_expires_at.is_(None)) | (workflows.c.lease_expires_at < now),
            )
            .order_by(workflows.c.updated_at)
            .limit(limit)
        )
        if tx.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        claimed = []
        for workflow_id in tx.conn.execute(q).scalars().all():
            token = uuid.uuid4().hex
            tx.conn.execute(
                workflows.update()
                .where(workflows.c.id == workflow_id)
                .values(
                    lease_owner=self.settings.name,
                    lease_token=token,
                    lease_expires_at=now + self.settings.lease_ttl_s,
                )
            )
            claimed.append((workflow_id, token))
        return claimed

    # -- driving one workflow ------------------------------------------------

    async def _drive(self, lease: Lease) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(lease, asyncio.current_task()))
        try:
            row = await self.db.write(lambda tx: self._enter_txn(tx, lease))
            while row["status"] == WorkflowStatus.RUNNING and not self._stopping:
                step = get_definition(row["type"]).step(row["current_step"])
                if not isinstance(step, AgentStep):
                    raise RuntimeError(f"running workflow is at checkpoint step {step.name}")
                row = await self._run_agent_step(row, step, lease)
            if row["status"] == WorkflowStatus.RUNNING:  # stopping: hand it back now
                await self.db.write(lambda tx: self._release_txn(tx, lease))
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
            heartbeat.cancel()

    async def _fail(self, lease: Lease, error: str) -> None:
        def txn(tx: Tx) -> None:
            lease.check_txn(tx)
            row = load_workflow_txn(tx, lease.workflow_id)
            fail_txn(tx, row, error, guard={"lease_token": lease.token})

        try:
            await self.db.write(txn)
        except LeaseLost:
            log.info("workflow %s: not marked failed, lease lost", lease.workflow_id)

    async def _heartbeat(self, lease: Lease, body: asyncio.Task[Any] | None) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.db.write(lease.check_txn)
            except LeaseLost:
                lease.lost = True
                if body is not None:
                    body.cancel()
                return
            except OrchestraError:
                log.warning("heartbeat for %s failed; will retry", lease.workflow_id, exc_info=True)

    def _enter_txn(self, tx: Tx, lease: Lease) -> RowMap:
        """Take over a claimed workflow: start it if new, or resume its step."""
        lease.check_txn(tx)
        row = load_workflow_txn(tx, lease.workflow_id)
        guard = {"lease_token": lease.token}
        if row["status"] == WorkflowStatus.PENDING:
            transition_txn(
                tx,
                Entity.WORKFLOW,
                row["id"],
                workflow_id=row["id"],
                old=WorkflowStatus.PENDING,
                new=WorkflowStatus.RUNNING,
                guard=guard,
            )
            row = {**row, "status": WorkflowStatus.RUNNING.value}
            first = get_definition(row["type"]).first_step
            return apply_next_txn(tx, row, Next(step=first), guard=guard)
        step = get_definition(row["type"]).step(row["current_step"])
        if isinstance(step, CheckpointStep):  # only if a definition starts at one
            return apply_next_txn(
                tx, {**row, "step_index": row["step_index"] - 1}, Next(step=step.name), guard=guard
            )
        return row

    def _release_txn(self, tx: Tx, lease: Lease) -> None:
        """Give a workflow back without finishing its step (shutdown)."""
        lease.check_txn(tx)
        rows = (
            tx.conn.execute(
                select(agent_runs.c.id).where(
                    agent_runs.c.workflow_id == lease.workflow_id,
                    agent_runs.c.status == AgentRunStatus.RUNNING,
                )
            )
            .scalars()
            .all()
        )
        for run_id in rows:
            transition_txn(
                tx,
                Entity.AGENT_RUN,
                run_id,
                workflow_id=lease.workflow_id,
                old=AgentRunStatus.RUNNING,
                new=AgentRunStatus.INTERRUPTED,
                values={"finished_at": tx.now, "error": "worker shut down"},
            )
        tx.conn.execute(
            workflows.update()
            .where(workflows.c.id == lease.workflow_id, workflows.c.lease_token == lease.token)
            .values(**NO_LEASE)
        )
        tx.wake_workers()

    # -- agent steps ---------------------------------------------------------

    async def _run_agent_step(self, row: RowMap, step: AgentStep, lease: Lease) -> RowMap:
        ctx = context_of(row)
        tasks = {t.key: t for t in step.tasks(ctx)}
        kept, to_run = await self.db.write(
            lambda tx: self._start_runs_txn(tx, row, step, list(tasks.values()), lease)
        )
        runs: dict[str, AgentRun] = dict(kept)
        retry: dict[str, Any] = row["state"].get(RETRY_KEY) or {}
        pending = {
            asyncio.create_task(
                self._run_agent(
                    tasks[run.agent],
                    run,
                    lease,
                    ctx.workspace,
                    float(retry.get(run.agent) or tasks[run.agent].timeout_s),
                )
            ): run.agent
            for run in to_run
        }
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                finished = list(done)
                for i, task in enumerate(finished):
                    del pending[task]
                    run, outcome = task.result()
                    if not pending and i == len(finished) - 1:
                        runs[run.agent] = run
                        return await self.db.write(
                            partial(
                                self._finish_step_txn,
                                row=row,
                                step=step,
                                lease=lease,
                                runs=runs,
                                run=run,
                                outcome=outcome,
                            )
                        )
                    runs[run.agent] = await self.db.write(
                        partial(self._record_run_txn, lease=lease, run=run, outcome=outcome)
                    )
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        # Nothing left to run (all kept), or the last batch finished together.
        return await self.db.write(
            lambda tx: self._finish_step_txn(tx, row, step, lease, runs, None, None)
        )

    def _start_runs_txn(
        self, tx: Tx, row: RowMap, step: AgentStep, tasks: list[AgentTask], lease: Lease
    ) -> tuple[dict[str, AgentRun], list[AgentRun]]:
        lease.check_txn(tx)
        retry: dict[str, Any] = row["state"].get(RETRY_KEY) or {}
        latest: dict[str, RowMap] = {}
        for r in tx.conn.execute(
            select(agent_runs)
            .where(
                agent_runs.c.workflow_id == row["id"],
                agent_runs.c.step_name == step.name,
                agent_runs.c.iteration == row["iteration"],
            )
            .order_by(agent_runs.c.attempt)
        ):
            latest[r.agent] = dict(r._mapping)
        kept: dict[str, AgentRun] = {}
        to_run: list[AgentRun] = []
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
                "role": task.role,
                "adapter": task.adapter,
                "status": AgentRunStatus.RUNNING.value,
                "attempt": attempt,
                "prompt": task.prompt,
                "started_at": tx.now,
            }
            tx.conn.execute(insert(agent_runs).values(values))
            tx.emit(
                row["id"],
                EventType.AGENT_RUN_STARTED,
                {
                    "agent_run_id": values["id"],
                    "agent": task.key,
                    "role": task.role,
                    "adapter": task.adapter,
                    "attempt": attempt,
                    "step": step.name,
                },
            )
            to_run.append(AgentRun.model_validate(values))
        return kept, to_run

    async def _run_agent(
        self, task: AgentTask, run: AgentRun, lease: Lease, workspace: Path | None, timeout: float
    ) -> tuple[AgentRun, AgentResult | AgentFailure]:
        progress = _ProgressBuffer(self, run, lease)
        started = time.monotonic()
        try:
            adapter = create_adapter(task.adapter, task.options)
            request = AgentRequest(
                prompt=task.prompt,
                role=task.role,
                timeout_s=timeout,
                workspace=workspace,
                output_schema=task.output_schema,
            )
            async with asyncio.timeout(timeout + 30):  # the adapter's own limit comes first
                result: AgentResult | AgentFailure = await adapter.run(request, progress.add)
        except AgentFailure as failure:
            result = failure
        except TimeoutError:
            result = AgentFailure("timeout", f"no answer within {timeout:g}s")
        except OrchestraError as exc:
            result = AgentFailure("agent_error", exc.message, retryable=False)
        finally:
            await progress.close()
        if isinstance(result, AgentResult) and result.duration_ms is None:
            result.duration_ms = int((time.monotonic() - started) * 1000)
        return run, result

    def _record_run_txn(
        self, tx: Tx, lease: Lease, run: AgentRun, outcome: AgentResult | AgentFailure
    ) -> AgentRun:
        lease.check_txn(tx)
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
            }
            data: dict[str, Any] = {"agent": run.agent}
        else:
            new = AgentRunStatus.FAILED
            values = {
                "error": f"{outcome.reason}: {outcome.message}",
                "stderr_tail": outcome.stderr_tail or None,
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
        row: RowMap,
        step: AgentStep,
        lease: Lease,
        runs: dict[str, AgentRun],
        run: AgentRun | None,
        outcome: AgentResult | AgentFailure | None,
    ) -> RowMap:
        """Record the last run, then let the definition pick the next step: one commit."""
        if run is not None and outcome is not None:
            runs[run.agent] = self._record_run_txn(tx, lease, run, outcome)
        else:
            lease.check_txn(tx)
        fresh = load_workflow_txn(tx, row["id"])
        nxt = step.on_done(context_of(fresh), runs)
        nxt = Next(
            step=nxt.step,
            state={RETRY_KEY: None, **nxt.state},
            iteration=nxt.iteration,
            result=nxt.result,
            cancel=nxt.cancel,
            skip_failed=nxt.skip_failed,
        )
        return apply_next_txn(tx, fresh, nxt, guard={"lease_token": lease.token})


class _ProgressBuffer:
    """Collects an agent's progress lines and writes them as throttled events."""

    max_lines = 50
    max_chars = 300

    def __init__(self, worker: Worker, run: AgentRun, lease: Lease) -> None:
        self._worker = worker
        self._run = run
        self._lease = lease
        self._lines: list[dict[str, str]] = []
        self._dropped = 0
        self._flusher: asyncio.Task[None] | None = None

    def add(self, kind: str, text: str) -> None:
        if len(self._lines) >= self.max_lines:
            self._dropped += 1
        else:
            self._lines.append({"kind": kind, "text": text[: self.max_chars]})
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._worker.settings.progress_interval_s)
        self._flusher = None
        await self._flush()

    async def _flush(self) -> None:
        if not self._lines:
            return
        lines, dropped = self._lines, self._dropped
        self._lines, self._dropped = [], 0
        run, lease = self._run, self._lease

        def txn(tx: Tx) -> None:
            lease.check_txn(tx)
            tx.emit(
                run.workflow_id,
                EventType.AGENT_PROGRESS,
                {"agent_run_id": run.id, "agent": run.agent, "lines": lines, "dropped": dropped},
            )

        try:
            await self._worker.db.write(txn)
        except OrchestraError:
            log.warning("progress of %s not recorded", run.id, exc_info=True)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        await self._flush()
