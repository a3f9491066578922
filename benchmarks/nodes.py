"""Nodes benchmark: Orchestra on one PostgreSQL database with 1, 2 and 4 worker processes.

Two parts, each on a fresh database (created and dropped here):

1. **Scaling.** For each K in ``--workers`` (default 1, 2, 4): K ``orchestra worker``
   processes (the real CLI, configured as an operator would: ``ORCHESTRA_*`` variables
   and an agents file) share the database; this process holds ``--clients`` client
   tasks that drive Plan & Review with instant demo agents through the service layer
   (``Orchestra.create_workflow`` / ``resolve``, no worker of its own: every step runs in
   a worker process; checkpoints are seen through one follower of the event log, woken
   by ``LISTEN/NOTIFY``). After a warm-up, ``--n`` workflows are timed. Printed per K:
   workflows/s and the scaling ratio against K=1; CPU per workflow of the worker
   processes (user + system from ``/proc/PID/stat``), of this client process, and of
   the database's server backends; p50/p99 resolve → next checkpoint; lock waits: every
   50 ms a thread samples ``pg_stat_activity`` for the database's active backends and
   counts those with ``wait_event_type = 'Lock'`` (the share of sampled active backends
   waiting on a lock, the estimated backend-milliseconds of lock wait per workflow,
   and which locks); and from ``pg_stat_database``: transactions per workflow, deadlocks,
   and block read/write time (when ``track_io_timing`` is on).

2. **Failover.** Two workers; ``--failover-workflows`` workflows whose demo agents take
   ``--delay`` seconds each, so work is in flight. Half a delay after both workers hold
   leases, the one holding more is killed with SIGKILL. Printed: how many workflows it
   held and the time from the kill until each of them was continued by the survivor
   (its first event after the kill): what remained of the dead worker's leases, at most
   ``--lease-ttl``, plus the survivor's next claim (a ring or its 1 s poll). Then,
   after every workflow completed, the check that no step ran twice: one completed agent
   run per workflow, step, iteration and agent, one checkpoint per step and iteration,
   one ``agent_run_started`` event per run; runs cut short by the kill are counted (they
   run again as attempt + 1, by design).

    python benchmarks/nodes.py [--pg postgresql://postgres@127.0.0.1:5432/test]
        [--n 300] [--clients 20] [--workers 1 --workers 2 --workers 4]
        [--failover-workflows 16] [--delay 2] [--lease-ttl 5]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from engine import Tail, drive, latency_ms
from pgtools import cpu_seconds, drop_pg, fresh_pg
from sqlalchemy import func, select

from orchestra.agents.config import load_agents_config
from orchestra.domain.events import EventType
from orchestra.domain.statuses import AgentRunStatus, WorkflowStatus
from orchestra.service import Orchestra
from orchestra.store.db import Database
from orchestra.store.migrate import upgrade
from orchestra.store.schema import agent_runs, checkpoints, events, workflows

#: The operator's agents file for both parts: instant demo agents by default, and a
#: slow demo agent the failover workflows choose.
AGENTS_TOML = """
[agents.demo]
adapter = "demo"

[agents.slow]
adapter = "demo"
[agents.slow.options]
delay_s = {delay}

[jobs]
planner = "demo"
reviewers = ["demo", "demo", "demo"]
"""
SLOW = {"planner": "slow", "reviewers": ["slow", "slow", "slow"]}
SAMPLE_S = 0.05


def orchestra_command() -> list[str]:
    """The ``orchestra`` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("orchestra")
    found = str(beside) if beside.exists() else shutil.which("orchestra")
    if found is None:
        raise SystemExit("no `orchestra` command beside this Python or on PATH")
    return [found]


# -- worker processes ---------------------------------------------------------------


@dataclass
class Workers:
    """``orchestra worker`` processes on one database, started and stopped by us only."""

    url: str
    work: Path
    lease_ttl_s: float
    #: Names this set's log files (``NAME-worker-I.log`` in ``work``).
    name: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ORCHESTRA_DATABASE_URL": self.url,
            "ORCHESTRA_DATA_DIR": str(self.work),
            "ORCHESTRA_CONFIG": str(self.work / "orchestra.toml"),
            "ORCHESTRA_LEASE_TTL_S": str(self.lease_ttl_s),
            "ORCHESTRA_LOG_LEVEL": "WARNING",
        }

    def start(self, k: int) -> None:
        for _ in range(k):
            log = (self.work / f"{self.name}-worker-{len(self.procs)}.log").open("wb")
            self.procs.append(
                subprocess.Popen(
                    [*orchestra_command(), "worker"],
                    env=self.env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()  # the child holds its own copy
        self._wait_listening(k)

    def _wait_listening(self, k: int, timeout_s: float = 60.0) -> None:
        """Until ``k`` workers LISTEN on the database (each one's last start-up step)."""
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                for proc in self.procs:
                    if proc.poll() is not None:
                        raise SystemExit(f"worker {proc.pid} exited:\n{self.logs()}")
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND query ILIKE 'LISTEN %'"
                ).fetchone()
                if row is not None and row[0] >= k:
                    return
                time.sleep(0.1)
        raise SystemExit(f"{k} workers did not start listening:\n{self.logs()}")

    def kill(self, pid: int) -> None:
        """SIGKILL one of our workers (by its pid; nothing else is ever signalled)."""
        (proc,) = [p for p in self.procs if p.pid == pid]
        proc.kill()
        proc.wait()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
            for path in sorted(self.work.glob(f"{self.name}-worker-*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


# -- database-side measurements ----------------------------------------------------


@dataclass
class LockSampler:
    """A thread sampling the database's active backends every 50 ms."""

    url: str
    samples: int = 0
    active: int = 0
    waiting: collections.Counter[str] = field(default_factory=collections.Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LockSampler:
        self._thread = threading.Thread(target=self._run, name="lock-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(SAMPLE_S):
                rows = conn.execute(
                    "SELECT wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND state = 'active' AND query NOT ILIKE 'LISTEN %'"
                ).fetchall()
                self.samples += 1
                self.active += len(rows)
                self.waiting.update(event for kind, event in rows if kind == "Lock")

    def figures(self, workflows: int) -> str:
        waits = sum(self.waiting.values())
        share = waits / self.active if self.active else 0.0
        which = ", ".join(f"{name} {count}" for name, count in self.waiting.most_common()) or "–"
        return (
            f"{share:.1%} of {self.active} sampled active backends waiting on a lock "
            f"(~{waits * SAMPLE_S * 1000 / workflows:.2f} backend-ms per workflow; {which})"
        )


def backend_cpu(url: str) -> dict[int, float]:
    """CPU so far of each server backend connected to ``url``'s database (root or the
    postgres user can read their ``/proc`` entries)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return {pid: cpu_seconds(pid) for (pid,) in rows}


def database_stats(admin_url: str, url: str) -> dict[str, Any]:
    """``pg_stat_database`` for ``url``'s database (read once its clients have gone, so
    every backend has reported) and whether ``track_io_timing`` is on."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, deadlocks, blk_read_time, blk_write_time"
            " FROM pg_stat_database WHERE datname = %s",
            (name,),
        ).fetchone()
        timing = conn.execute("SHOW track_io_timing").fetchone()
    assert row is not None and timing is not None
    keys = ("commits", "rollbacks", "deadlocks", "blk_read_ms", "blk_write_ms")
    return {**dict(zip(keys, row, strict=True)), "track_io_timing": timing[0]}


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    url = fresh_pg(admin_url)
    try:
        db = Database(url)
        try:
            upgrade(db.write_engine)
        finally:
            db.close()
        yield url
    finally:
        drop_pg(url, admin_url)


class Client:
    """This process's side: the service (no worker of its own) and one log follower."""

    def __init__(self, url: str, work: Path) -> None:
        self.db = Database(url)
        agents = load_agents_config(work / "orchestra.toml")
        self.service = Orchestra(self.db, agents=agents)
        self.tail = Tail(self.db)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Client:
        self.db.start_listening(asyncio.get_running_loop())  # hear the workers' commits
        self._task = asyncio.create_task(self.tail.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.db.close()


# -- 1: scaling --------------------------------------------------------------------


async def scaling_run(args: argparse.Namespace, work: Path, k: int) -> dict[str, Any]:
    with fresh_database(args.pg) as url:
        workers = Workers(url, work, args.lease_ttl, f"k{k}")
        workers.start(k)
        try:
            async with Client(url, work) as client:
                await drive(client.service, client.tail, args.warmup, args.clients)
                worker_cpu, servers = workers.cpu(), backend_cpu(url)
                with LockSampler(url) as locks:
                    seconds, cpu, latencies = await drive(
                        client.service, client.tail, args.n, args.clients
                    )
                worker_cpu = workers.cpu() - worker_cpu
                server_cpu = sum(
                    now - servers.get(pid, 0.0) for pid, now in backend_cpu(url).items()
                )
                done = await client.db.read(
                    lambda c: c.execute(
                        select(func.count()).where(
                            workflows.c.status == WorkflowStatus.COMPLETED.value
                        )
                    ).scalar_one()
                )
                assert done == args.warmup + args.n, (done, args.warmup + args.n)
        finally:
            workers.stop()
        stats = database_stats(args.pg, url)
    n = args.n
    return {
        "k": k,
        "workflows_per_s": n / seconds,
        "worker_cpu_ms": worker_cpu / n * 1000,
        "client_cpu_ms": cpu / n * 1000,
        "server_cpu_ms": server_cpu / n * 1000,
        **latency_ms(latencies),
        "locks": locks.figures(n),
        "stats": stats,
        "all_workflows": args.warmup + n,
    }


def print_scaling(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    print(
        f"\nPlan & Review, instant demo agents, {args.n} timed workflows (after {args.warmup} "
        f"warm-up) from {args.clients} client tasks in one process, K `orchestra worker` "
        f"processes on one PostgreSQL database ({args.pg.split('@')[-1]}, "
        f"{os.cpu_count()} cores)\n"
    )
    print(
        f"{'K':>2} {'wf/s':>7} {'vs K=1':>7} {'p50 ms':>8} {'p99 ms':>8}   "
        "CPU ms per workflow: workers / client / PostgreSQL backends"
    )
    base = rows[0]["workflows_per_s"]
    for r in rows:
        print(
            f"{r['k']:>2} {r['workflows_per_s']:>7.1f} {r['workflows_per_s'] / base:>6.2f}x "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}   {r['worker_cpu_ms']:.2f} / "
            f"{r['client_cpu_ms']:.2f} / {r['server_cpu_ms']:.2f}"
        )
    print("\nLock waits (pg_stat_activity every 50 ms, timed section):")
    for r in rows:
        print(f"{r['k']:>2} {r['locks']}")
    print("pg_stat_database, whole run (warm-up included):")
    for r in rows:
        s, total = r["stats"], r["all_workflows"]
        io = (
            f"block read/write {s['blk_read_ms']:.0f} / {s['blk_write_ms']:.0f} ms"
            if s["track_io_timing"] == "on"
            else "block times not measured (track_io_timing off)"
        )
        print(
            f"{r['k']:>2} {s['commits'] / total:.1f} transactions committed (reads included) "
            f"and {s['rollbacks'] / total:.2f} rolled back per workflow, "
            f"{s['deadlocks']} deadlocks, {io}"
        )


# -- 2: failover -------------------------------------------------------------------


def _owner_pid(owner: str) -> int:
    """A worker's lease owner name is ``host:pid``."""
    return int(owner.rsplit(":", 1)[1])


async def _leases(db: Database) -> collections.Counter[str]:
    q = select(workflows.c.lease_owner).where(
        workflows.c.lease_owner.is_not(None),
        workflows.c.status == WorkflowStatus.RUNNING.value,
    )
    return collections.Counter(await db.read(lambda c: c.execute(q).scalars().all()))


async def _first_events_after(db: Database, after: int, ids: set[str]) -> dict[str, datetime]:
    q = (
        select(events.c.workflow_id, func.min(events.c.created_at))
        .where(events.c.id > after, events.c.workflow_id.in_(sorted(ids)))
        .group_by(events.c.workflow_id)
    )
    rows = await db.read(lambda c: c.execute(q).all())
    return {wid: at for wid, at in rows}


async def _kill_one_and_time_takeover(
    db: Database, workers: Workers, kill_after_s: float, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        owners = await _leases(db)
        if len(owners) == 2:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"both workers never held leases at once: {dict(owners)}")
        await asyncio.sleep(SAMPLE_S)
    await asyncio.sleep(kill_after_s)  # into the agents' work, and the leases' cycle
    owners = await _leases(db)
    if not owners:
        raise SystemExit("no worker held a lease at the kill (raise --delay)")
    victim, _ = owners.most_common(1)[0]
    workers.kill(_owner_pid(victim))
    killed_at = datetime.now(UTC)
    held_q = select(workflows.c.id, workflows.c.lease_expires_at).where(
        workflows.c.lease_owner == victim
    )
    expires: dict[str, datetime] = dict(await db.read(lambda c: c.execute(held_q).all()))
    held = set(expires)
    last_q = select(func.coalesce(func.max(events.c.id), 0))
    after = await db.read(lambda c: c.execute(last_q).scalar_one())
    running_q = select(func.count()).where(
        agent_runs.c.workflow_id.in_(sorted(held)),
        agent_runs.c.status == AgentRunStatus.RUNNING.value,
    )
    cut_short = await db.read(lambda c: c.execute(running_q).scalar_one())
    continued: dict[str, datetime] = {}
    while len(continued) < len(held):
        if time.monotonic() > deadline:
            raise SystemExit(f"not continued: {sorted(held - set(continued))}")
        await asyncio.sleep(SAMPLE_S)
        continued = await _first_events_after(db, after, held)
    waits = sorted((at - killed_at).total_seconds() for at in continued.values())
    late = sorted((at - expires[wid]).total_seconds() for wid, at in continued.items())
    return {"held": len(held), "running_runs": cut_short, "waits": waits, "late": late}


async def _no_step_twice(db: Database, expected: int) -> dict[str, Any]:
    """What the database holds about the runs; ``problems``: what went wrong (none
    when every step ran once)."""

    def query(c: Any) -> dict[str, Any]:
        completed = c.execute(
            select(
                agent_runs.c.workflow_id,
                agent_runs.c.step_name,
                agent_runs.c.iteration,
                agent_runs.c.agent,
                func.count(),
            )
            .where(agent_runs.c.status == AgentRunStatus.COMPLETED.value)
            .group_by(
                agent_runs.c.workflow_id,
                agent_runs.c.step_name,
                agent_runs.c.iteration,
                agent_runs.c.agent,
            )
        ).all()
        per_step = c.execute(
            select(checkpoints.c.workflow_id, checkpoints.c.step_name, checkpoints.c.iteration)
            .group_by(checkpoints.c.workflow_id, checkpoints.c.step_name, checkpoints.c.iteration)
            .having(func.count() > 1)
        ).all()
        by_status = {
            status: count
            for status, count in c.execute(
                select(agent_runs.c.status, func.count()).group_by(agent_runs.c.status)
            ).all()
        }
        started = c.execute(
            select(func.count()).where(events.c.type == EventType.AGENT_RUN_STARTED.value)
        ).scalar_one()
        done = c.execute(
            select(func.count()).where(workflows.c.status == WorkflowStatus.COMPLETED.value)
        ).scalar_one()
        created = c.execute(
            select(func.count()).where(events.c.type == EventType.CHECKPOINT_CREATED.value)
        ).scalar_one()
        return {
            "completed": completed,
            "per_step": per_step,
            "by_status": by_status,
            "started": started,
            "done": done,
            "checkpoints": created,
        }

    facts = await db.read(query)
    problems = [
        f"{w} {s} iteration {i}: {a} completed {n} times"
        for w, s, i, a, n in facts["completed"]
        if n != 1
    ]
    problems += [f"{w}: two checkpoints for {s} iteration {i}" for w, s, i in facts["per_step"]]
    runs = sum(facts["by_status"].values())
    if facts["started"] != runs:
        problems.append(f"{facts['started']} agent_run_started events for {runs} runs")
    if facts["done"] != expected:
        problems.append(f"{facts['done']} of {expected} workflows completed")
    if facts["checkpoints"] != 2 * expected:
        problems.append(f"{facts['checkpoints']} checkpoints created, expected {2 * expected}")
    if len(facts["completed"]) != 4 * expected:  # a planner and three reviewers each
        problems.append(f"{len(facts['completed'])} completed agent steps, expected {4 * expected}")
    facts["problems"] = problems
    return facts


async def failover(args: argparse.Namespace, work: Path) -> None:
    m = args.failover_workflows
    with fresh_database(args.pg) as url:
        workers = Workers(url, work, args.lease_ttl, "failover")
        workers.start(2)
        try:
            async with Client(url, work) as client:
                clients = asyncio.create_task(drive(client.service, client.tail, m, m, agents=SLOW))
                timeout = 10 * (args.delay * 2 + args.lease_ttl) + 60
                takeover = await _kill_one_and_time_takeover(
                    client.db, workers, args.delay / 2, timeout
                )
                async with asyncio.timeout(timeout):
                    await clients
                facts = await _no_step_twice(client.db, m)
        finally:
            workers.stop()
    waits, late = takeover["waits"], takeover["late"]
    interrupted = facts["by_status"].get(AgentRunStatus.INTERRUPTED.value, 0)
    print(
        f"\nFailover: 2 workers (lease TTL {args.lease_ttl:g} s), {m} workflows whose demo "
        f"agents take {args.delay:g} s each; the worker holding more leases was killed "
        f"with SIGKILL {args.delay / 2:g} s after both held leases"
    )
    print(
        f"  it held {takeover['held']} workflows ({takeover['running_runs']} agent runs in "
        f"flight); kill → continued by the survivor: min {waits[0]:.2f} s, median "
        f"{statistics.median(waits):.2f} s, max {waits[-1]:.2f} s; of which after its lease "
        f"expired: min {late[0]:.2f} s, median {statistics.median(late):.2f} s, "
        f"max {late[-1]:.2f} s"
    )
    if facts["problems"]:
        print("  STEPS RUN TWICE OR LOST:\n    " + "\n    ".join(facts["problems"]))
        raise SystemExit(1)
    print(
        f"  all {m} workflows completed; no step ran twice: {len(facts['completed'])} agent "
        f"steps completed once each, {facts['checkpoints']} checkpoints, one per step; "
        f"{interrupted} runs cut short by the kill were run again as attempt 2"
    )


# -- main --------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="orchestra-nodes-") as tmp:
        work = Path(tmp)
        (work / "orchestra.toml").write_text(AGENTS_TOML.format(delay=args.delay))
        if args.workers != [0]:
            rows = [await scaling_run(args, work, k) for k in args.workers]
            print_scaling(args, rows)
        if args.failover_workflows:
            await failover(args, work)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--n", type=int, default=300, help="timed workflows per K")
    parser.add_argument("--warmup", type=int, default=40, help="untimed workflows first")
    parser.add_argument("--clients", type=int, default=20, help="client tasks")
    parser.add_argument(
        "--workers", type=int, action="append", help="K (repeatable; 0 skips the scaling part)"
    )
    parser.add_argument("--failover-workflows", type=int, default=16, help="0 skips failover")
    parser.add_argument("--delay", type=float, default=2.0, help="failover agents' seconds")
    parser.add_argument("--lease-ttl", type=float, default=5.0, help="workers' lease TTL (s)")
    parsed = parser.parse_args()
    parsed.workers = parsed.workers or [1, 2, 4]
    asyncio.run(main(parsed))
