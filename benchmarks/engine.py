"""Engine benchmark: Plan & Review with instant demo agents, Orchestra vs LangGraph.

Each workflow: start → planner → plan checkpoint (approve) → three reviewers in
parallel → reviews checkpoint (approve) → completed. Every transition is durable
(SQLite WAL + synchronous=FULL, the default), has its event row, and each
checkpoint is audited with its resolution. The same shape runs in LangGraph with
``AsyncSqliteSaver`` (``benchmarks/langgraph_peer.py``) in the same process run; with
``--pg`` (on by default) both engines then run again on PostgreSQL, LangGraph with
``AsyncPostgresSaver``, each run in a fresh database (``--pg ''`` skips it).

Clients wait for checkpoints the way the HTTP API's event streams do: one follower
of the event log (``orchestra.store.follow``), dispatching to the waiting clients.

    python benchmarks/engine.py [--n 500] [--repeat 3] [--pg postgresql://…/test]

Each engine runs ``--repeat`` times, alternating, and the medians are printed (the
machine's speed drifts; the ratio of runs made side by side is the steady figure).
Prints workflows/second for both engines and the ratio, Orchestra's p50/p99
latency from a resolution to the next checkpoint being pending, and the CPU time
each engine's process spent per workflow (steadier than wall time on a shared
machine: the figure to watch when optimising).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pgtools import drop_pg, fresh_pg

from orchestra.domain.events import EventType
from orchestra.domain.models import Decision
from orchestra.engine.api import WorkerSettings
from orchestra.service import Orchestra
from orchestra.store.db import Database
from orchestra.store.follow import LogFollower
from orchestra.store.migrate import upgrade


def _load_peer() -> Any:
    """Load benchmarks/langgraph_peer.py by path (benchmarks/ is not a package, and
    putting it on sys.path would let benchmarks/http.py shadow the standard library)."""
    spec = importlib.util.spec_from_file_location(
        "langgraph_peer", Path(__file__).with_name("langgraph_peer.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["langgraph_peer"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Tail:
    """One reader of the event log that wakes the clients waiting for a checkpoint."""

    db: Database
    waiting: dict[str, asyncio.Future[str]] = field(default_factory=dict)

    async def run(self) -> None:
        async with contextlib.aclosing(LogFollower(self.db, 0).batches()) as batches:
            async for events in batches:
                for event in events:
                    if event.type is EventType.CHECKPOINT_CREATED and event.workflow_id:
                        fut = self.waiting.pop(event.workflow_id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(event.data["checkpoint_id"])

    def expect(self, workflow_id: str) -> asyncio.Future[str]:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting[workflow_id] = fut
        return fut


APPROVE = Decision(action="approve")


async def drive(
    service: Orchestra,
    tail: Tail,
    n: int,
    concurrency: int,
    agents: Mapping[str, Any] | None = None,
) -> tuple[float, float, list[float]]:
    """``n`` workflows, ``concurrency`` clients each running one after another: create,
    approve the plan checkpoint, approve the reviews checkpoint. Returns wall seconds,
    this process's CPU seconds, and each resolve → next checkpoint latency."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def one() -> None:
        wf = await service.create_workflow(name="bench", prompt="Add a --json flag", agents=agents)
        first = tail.expect(wf.id)
        cp_id = await first
        second = tail.expect(wf.id)
        t0 = time.perf_counter()
        await service.resolve(cp_id, APPROVE, actor="bench")
        cp_id = await second
        latencies.append(time.perf_counter() - t0)
        await service.resolve(cp_id, APPROVE, actor="bench")

    async def client() -> None:
        for _ in counter:
            await one()

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - start, time.process_time() - cpu_start, latencies


def latency_ms(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
    }


async def run_orchestra(url: str, n: int, concurrency: int) -> dict[str, float]:
    db = Database(url)
    upgrade(db.write_engine)
    # As `orchestra serve` does: the engine's own worker, so hand-offs skip the claim commit.
    service = Orchestra(db, worker=WorkerSettings(concurrency=max(32, concurrency * 2)))
    stop = asyncio.Event()
    worker_task = asyncio.create_task(service.engine.run(stop))
    tail = Tail(db)
    tail_task = asyncio.create_task(tail.run())
    seconds, cpu, latencies = await drive(service, tail, n, concurrency)
    stop.set()
    await worker_task
    tail_task.cancel()
    done = await service.list_workflows(limit=1)
    assert done.items and done.items[0].status.is_terminal
    db.close()
    return {
        "workflows_per_s": n / seconds,
        "cpu_ms_per_workflow": cpu / n * 1000,
        **latency_ms(latencies),
    }


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


Runs = list[tuple[int, list[dict[str, float]], list[dict[str, float]]]]


async def side_by_side(
    args: argparse.Namespace,
    orchestra: Callable[[int, int], Awaitable[dict[str, float]]],
    langgraph: Callable[[int, int], Awaitable[dict[str, float]]],
) -> Runs:
    """Each concurrency level, ``--repeat`` times, alternating engines (both see the
    same machine); ``orchestra(c, i)`` / ``langgraph(c, i)`` run one of them."""
    rows: Runs = []
    for c in args.concurrency:
        orch_runs, lg_runs = [], []
        for i in range(args.repeat):
            orch_runs.append(await orchestra(c, i))
            lg_runs.append(await langgraph(c, i))
        rows.append((c, orch_runs, lg_runs))
    return rows


def print_table(title: str, rows: Runs, repeat: int) -> None:
    print(
        f"\n{title}; median of {repeat} alternating runs (ratio: median of the runs' "
        "ratios, with its range)\n"
    )
    print(
        f"{'conc':>4} {'orchestra wf/s':>15} {'langgraph wf/s':>15} {'ratio':>7} {'range':>11} "
        f"{'p50 ms':>8} {'p99 ms':>8}   CPU ms per workflow (orchestra / langgraph)"
    )
    for c, orch_runs, lg_runs in rows:
        ratios = sorted(
            o["workflows_per_s"] / g["workflows_per_s"]
            for o, g in zip(orch_runs, lg_runs, strict=True)
        )
        spread = f"{ratios[0]:.1f}–{ratios[-1]:.1f}x"
        print(
            f"{c:>4} {_median(orch_runs, 'workflows_per_s'):>15.0f} "
            f"{_median(lg_runs, 'workflows_per_s'):>15.1f} {statistics.median(ratios):>6.1f}x "
            f"{spread:>11} {_median(orch_runs, 'p50_ms'):>8.2f} "
            f"{_median(orch_runs, 'p99_ms'):>8.2f}"
            f"   {_median(orch_runs, 'cpu_ms_per_workflow'):.2f} / "
            f"{_median(lg_runs, 'cpu_ms_per_workflow'):.2f}"
        )


async def run_orchestra_pg(admin_url: str, n: int, concurrency: int) -> dict[str, float]:
    url = fresh_pg(admin_url)
    try:
        return await run_orchestra(url, n, concurrency)
    finally:
        drop_pg(url, admin_url)


def pg_durability(url: str) -> str:
    """The server settings that decide what a commit costs (the same for both engines)."""
    with psycopg.connect(url) as conn:
        version, fsync, sync_commit = (
            conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit")
        )
    return f"PostgreSQL {version.split()[0]}, fsync={fsync}, synchronous_commit={sync_commit}"


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    peer = _load_peer()
    with tempfile.TemporaryDirectory() as tmp:
        rows = await side_by_side(
            args,
            lambda c, i: run_orchestra(f"sqlite:///{tmp}/orch-{c}-{i}.db", args.n, c),
            lambda c, i: peer.run_langgraph(args.n, c, Path(tmp) / f"lg-{c}-{i}.db"),
        )
    print_table(
        f"Plan & Review, instant demo agents, N={args.n}, SQLite synchronous=FULL",
        rows,
        args.repeat,
    )
    if args.pg:
        pg_rows = await side_by_side(
            args,
            lambda c, i: run_orchestra_pg(args.pg, args.n, c),
            lambda c, i: peer.run_langgraph_pg(args.n, c, args.pg),
        )
        print_table(
            f"The same on {pg_durability(args.pg)} at {args.pg.split('@')[-1]}, LangGraph "
            "with AsyncPostgresSaver on a connection pool, a fresh database per run",
            pg_rows,
            args.repeat,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, action="append")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per engine")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parsed = parser.parse_args()
    parsed.concurrency = parsed.concurrency or [1, 20]
    asyncio.run(main(parsed))
