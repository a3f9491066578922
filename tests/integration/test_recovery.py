"""Crash recovery with real worker processes, leases, and zombie workers.

A worker process is SIGKILLed in the middle of a step; another one continues
from the last committed step: the run that was cut short is ``interrupted`` and
run again as attempt 2, finished runs are kept, no checkpoint is created twice,
and the event log stays ordered. On PostgreSQL two worker processes share the
work without running any step twice. A worker whose lease was taken over
cannot write.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from orchestra.domain.errors import LeaseLost
from orchestra.domain.events import EventType
from orchestra.domain.models import Decision
from orchestra.domain.statuses import AgentRunStatus, CheckpointStatus, WorkflowStatus
from orchestra.engine.leases import Lease
from orchestra.engine.runner import Worker, WorkerSettings
from orchestra.service import Orchestra
from orchestra.store.db import Database, Tx
from orchestra.store.schema import workflows
from tests.conftest import BACKENDS
from tests.support.engine import (
    agents,
    assert_events_ordered,
    demo,
    pending,
    runs,
    snapshot,
    start,
    use_agents,
)
from tests.support.waiting import eventually

REVIEWS_READY = "reviews_ready_for_consolidation"
PLAN_READY = "plan_ready_for_review"


async def _statuses(service: Orchestra, workflow_id: str) -> list[tuple[str, int, str]]:
    return sorted((r.agent, r.attempt, r.status.value) for r in await runs(service, workflow_id))


async def test_a_worker_killed_mid_step_is_replaced_without_repeating_work(
    service: Orchestra, db_url: str, spawn: Any
) -> None:
    slow = demo(delay_s=1.5)
    wf = await service.create_workflow(
        name="crash",
        prompt="Survive a crash",
        agents=use_agents(service, agents(reviewers=[demo(), slow, demo()])),
    )
    first = spawn(db_url, "--lease-ttl", "1.5", "--heartbeat", "0.3", "--name", "first")
    await first.ready()

    async def at_checkpoint(step: str) -> bool:
        current = await service.get_workflow(wf.id)
        cp = current.pending_checkpoint
        return cp is not None and cp.step_name == step

    await eventually(lambda: at_checkpoint(PLAN_READY), what="the plan checkpoint")
    plan_cp = await pending(service, wf.id, PLAN_READY)
    await service.resolve(plan_cp.id, Decision(action="approve"), actor="ana")

    async def mid_step() -> bool:
        return await _statuses(service, wf.id) == [
            ("planner", 1, AgentRunStatus.COMPLETED),
            ("reviewer-1", 1, AgentRunStatus.COMPLETED),
            ("reviewer-2", 1, AgentRunStatus.RUNNING),
            ("reviewer-3", 1, AgentRunStatus.COMPLETED),
        ]

    await eventually(mid_step, what="reviewer-2 running, the others finished")
    first.kill()
    assert await mid_step(), "the killed worker wrote nothing more"

    second = spawn(db_url, "--lease-ttl", "2", "--heartbeat", "0.3", "--name", "second")
    await second.ready()
    await eventually(
        lambda: at_checkpoint(REVIEWS_READY), what=f"the reviews checkpoint:\n{second.log()}"
    )
    assert await _statuses(service, wf.id) == [
        ("planner", 1, AgentRunStatus.COMPLETED),
        ("reviewer-1", 1, AgentRunStatus.COMPLETED),
        ("reviewer-2", 1, AgentRunStatus.INTERRUPTED),
        ("reviewer-2", 2, AgentRunStatus.COMPLETED),
        ("reviewer-3", 1, AgentRunStatus.COMPLETED),
    ]
    review_cp = await pending(service, wf.id, REVIEWS_READY)
    assert len(review_cp.agent_outputs) == 3

    await service.resolve(review_cp.id, Decision(action="approve"), actor="ana")
    assert (await service.get_workflow(wf.id)).status is WorkflowStatus.COMPLETED
    assert second.stop() == 0, second.log()

    history = await service.history(wf.id)
    assert [(c.step_name, c.status) for c in history.checkpoints] == [
        (PLAN_READY, CheckpointStatus.APPROVED),
        (REVIEWS_READY, CheckpointStatus.APPROVED),
    ]
    assert_events_ordered(history.events)
    types = Counter(e.type for e in history.events)
    assert types[EventType.CHECKPOINT_CREATED] == 2
    assert types[EventType.AGENT_RUN_STARTED] == len(history.agent_runs) == 5
    interrupted = [
        e
        for e in history.events
        if e.type is EventType.AGENT_RUN_STATUS_CHANGED and e.data["to"] == "interrupted"
    ]
    assert len(interrupted) == 1


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="PostgreSQL not selected")
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("k", [2, 4])
async def test_worker_processes_share_the_work_and_run_no_step_twice(
    service: Orchestra, db: Database, db_url: str, spawn: Any, k: int
) -> None:
    names = tuple(f"worker-{i}" for i in range(k))
    procs = [
        spawn(db_url, "--lease-ttl", "5", "--concurrency", "3", "--name", name) for name in names
    ]
    for proc in procs:
        await proc.ready()
    owners: set[str] = set()  # lease owners seen so far (a lease lasts a step)

    async def shared() -> bool:
        """Two workers: both held leases. Four: at least two did (which ones win the
        races for ten workflows is up to the machine)."""
        q = select(workflows.c.lease_owner).where(workflows.c.lease_owner.is_not(None))
        owners.update(await db.read(lambda c: c.execute(q).scalars().all()))
        return owners == set(names) if k == 2 else len(owners) >= 2

    watcher = asyncio.create_task(eventually(shared, what="the workers to share the work"))
    slow = demo(delay_s=0.2)
    created = [
        await service.create_workflow(
            name=f"shared-{i}",
            prompt=f"Task {i}",
            agents=use_agents(service, agents(planner=slow, reviewers=[slow, slow, slow])),
        )
        for i in range(10)
    ]
    ids = {wf.id for wf in created}

    async def all_waiting_at(step: str) -> list[str] | None:
        page = await service.list_checkpoints(limit=100)
        found = [cp.id for cp in page.items if cp.step_name == step]
        return found if len(found) == len(ids) else None

    try:
        plan_cps = await eventually(
            lambda: all_waiting_at(PLAN_READY), what="every plan checkpoint"
        )
        for cp_id in plan_cps:
            await service.resolve(cp_id, Decision(action="approve"), actor="ana")
        await eventually(lambda: all_waiting_at(REVIEWS_READY), what="every review checkpoint")
        await watcher  # the workers held leases side by side at some point
    finally:
        watcher.cancel()
    for proc in procs:
        assert proc.stop() == 0, proc.log()

    per_task: Counter[tuple[str, str, int, str]] = Counter()
    for wf_id in ids:
        history = await service.history(wf_id)
        for run in history.agent_runs:
            assert run.status is AgentRunStatus.COMPLETED and run.attempt == 1
            per_task[(wf_id, run.step_name, run.iteration, run.agent)] += 1
        assert [c.step_name for c in history.checkpoints] == [PLAN_READY, REVIEWS_READY]
        assert_events_ordered(history.events)
    assert len(per_task) == 10 * 4
    assert set(per_task.values()) == {1}


# -- leases --------------------------------------------------------------------


async def _steal_lease(db: Database, workflow_id: str, expires_in_s: float) -> None:
    """Give the workflow's lease to a "thief" expiring ``expires_in_s`` from now
    (negative: already expired)."""

    def steal(tx: Tx) -> None:
        expires_at = tx.now + timedelta(seconds=expires_in_s)
        tx.conn.execute(
            workflows.update()
            .where(workflows.c.id == workflow_id)
            .values(lease_owner="thief", lease_token="thief-token", lease_expires_at=expires_at)
        )

    await db.write(steal)


async def test_a_zombie_worker_cannot_write_after_its_lease_was_taken_over(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    cp = await start(service, worker, agents=agents(reviewers=[demo(), demo(delay_s=0.5), demo()]))
    await service.resolve(cp.id, Decision(action="approve"), actor="ana")
    # no heartbeat during the test: the zombie's next write is the slow run's result
    zombie = Worker(db, WorkerSettings(heartbeat_s=3600, lease_ttl_s=3600, poll_s=0.05))
    driving = asyncio.create_task(zombie.run_until_idle())

    async def slow_run_started() -> bool:
        found = {r.agent: r.status for r in await runs(service, cp.workflow_id)}
        return found.get("reviewer-2") is AgentRunStatus.RUNNING and len(found) == 4

    await eventually(slow_run_started, what="reviewer-2 running")
    await _steal_lease(db, cp.workflow_id, 3600)
    taken_over = await snapshot(db)
    await driving  # the zombie's agent finishes, its write is refused, it lets go
    assert await snapshot(db) == taken_over
    wf = await service.get_workflow(cp.workflow_id)
    assert wf.status is WorkflowStatus.RUNNING and wf.error is None

    # the thief dies too: its lease expires and a worker continues from the last commit
    await _steal_lease(db, cp.workflow_id, -1)
    await worker.run_until_idle()
    await pending(service, cp.workflow_id, REVIEWS_READY)
    slow = await runs(service, cp.workflow_id, agent="reviewer-2")
    assert [(r.attempt, r.status) for r in slow] == [
        (1, AgentRunStatus.INTERRUPTED),
        (2, AgentRunStatus.COMPLETED),
    ]
    assert len(await runs(service, cp.workflow_id, agent="reviewer-1")) == 1


async def test_a_write_under_a_lost_lease_raises_and_writes_nothing(
    service: Orchestra, db: Database
) -> None:
    wf = await service.create_workflow(name="t", prompt="p")
    await _steal_lease(db, wf.id, 60)
    before = await snapshot(db)

    def zombie(tx: Tx) -> None:
        Lease(wf.id, "my-old-token", 60).renew_txn(tx)
        tx.emit(wf.id, EventType.STEP_STARTED, {"step": "plan"})

    with pytest.raises(LeaseLost):
        await db.write(zombie)
    assert await snapshot(db) == before
    # the holder of the lease may write
    await db.write(Lease(wf.id, "thief-token", 60).renew_txn)


async def test_graceful_shutdown_hands_an_unfinished_step_back_at_once(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    """Stopping a worker mid-step interrupts its runs and releases the lease (no waiting
    for it to expire), and another worker reruns only what was cut short."""
    cp = await start(service, worker, agents=agents(reviewers=[demo(), demo(delay_s=1)]))
    await service.resolve(cp.id, Decision(action="approve"), actor="ana")
    leaving = Worker(
        db, WorkerSettings(heartbeat_s=0.2, lease_ttl_s=3600, poll_s=0.05, shutdown_grace_s=0.1)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(leaving.run(stop))

    async def slow_run_started() -> bool:
        found = {r.agent: r.status for r in await runs(service, cp.workflow_id)}
        return found.get("reviewer-2") is AgentRunStatus.RUNNING

    await eventually(slow_run_started, what="reviewer-2 running")
    stop.set()
    await running
    wf = await service.get_workflow(cp.workflow_id)
    assert wf.status is WorkflowStatus.RUNNING and wf.current_step == "review"
    await worker.run_until_idle()  # the lease was released: claimable right away
    await pending(service, cp.workflow_id, REVIEWS_READY)
    assert await _statuses(service, cp.workflow_id) == [
        ("planner", 1, AgentRunStatus.COMPLETED),
        ("reviewer-1", 1, AgentRunStatus.COMPLETED),
        ("reviewer-2", 1, AgentRunStatus.INTERRUPTED),
        ("reviewer-2", 2, AgentRunStatus.COMPLETED),
    ]


async def test_a_failed_claim_is_logged_and_the_worker_keeps_going(
    service: Orchestra, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a claim raises (here an unexpected error, not a database one), the
    worker's loop logs it and claims again: a server's embedded worker never dies
    and leaves the engine frozen."""
    worker = Worker(db, WorkerSettings(poll_s=0.05))
    real_claim, failures = worker._claim_txn, []

    def claim_failing_twice(tx: Tx, limit: int) -> Any:
        if len(failures) < 2:
            failures.append(limit)
            raise RuntimeError("a bug in claiming")
        return real_claim(tx, limit)

    worker._claim_txn = claim_failing_twice  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        wf = await service.create_workflow(name="after a hiccup", prompt="Plan it")

        async def at_checkpoint() -> bool:
            return (await service.get_workflow(wf.id)).pending_checkpoint is not None

        await eventually(at_checkpoint, what="the plan checkpoint despite failed claims")
        assert not running.done()
    finally:
        stop.set()
        await running
    assert len(failures) == 2
    logged = [r for r in caplog.records if "claiming work failed" in r.getMessage()]
    assert len(logged) == 2 and logged[0].exc_info is not None


async def test_a_worker_with_nothing_to_claim_spends_no_write_on_a_ring(
    service: Orchestra, db: Database
) -> None:
    """Every worker hears every ring (on PostgreSQL, every process's), but only one
    takes the work: the others look with one read and write nothing."""
    worker = Worker(db, WorkerSettings(poll_s=0.05))
    real_claim, claims = worker._claim_txn, []

    def counted(tx: Tx, limit: int) -> Any:
        claims.append(limit)
        return real_claim(tx, limit)

    worker._claim_txn = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(5):
            await db.wake_workers()
            await asyncio.sleep(0.06)  # and a poll each time
        assert claims == []
        wf = await service.create_workflow(name="work at last", prompt="Plan it")

        async def at_checkpoint() -> bool:
            return (await service.get_workflow(wf.id)).pending_checkpoint is not None

        await eventually(at_checkpoint, what="the workflow claimed once there was work")
        assert len(claims) >= 1
    finally:
        stop.set()
        await running


async def test_a_failed_heartbeat_is_retried_and_the_lease_kept(
    service: Orchestra, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heartbeat that raises something unexpected is retried at the next beat: the
    lease stays renewed through a step longer than it, and the agent runs once."""
    worker = Worker(db, WorkerSettings(heartbeat_s=0.05, lease_ttl_s=0.6, poll_s=0.05))
    real_write, failed = db.write, []

    async def write_failing_one_beat(fn: Any) -> Any:
        if getattr(fn, "__name__", "") == "renew_txn" and not failed:
            failed.append(fn)
            raise RuntimeError("an unexpected error in a heartbeat")
        return await real_write(fn)

    monkeypatch.setattr(db, "write", write_failing_one_beat)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        slow = agents(planner=demo(delay_s=1.5))  # longer than the lease
        wf = await service.create_workflow(
            name="long step", prompt="Plan it", agents=use_agents(service, slow)
        )

        async def at_checkpoint() -> bool:
            return (await service.get_workflow(wf.id)).pending_checkpoint is not None

        await eventually(at_checkpoint, what="the plan checkpoint after the long step")
    finally:
        stop.set()
        await running
    assert failed
    planner = await runs(service, wf.id, job="planner")
    assert [(r.attempt, r.status) for r in planner] == [(1, AgentRunStatus.COMPLETED)]
