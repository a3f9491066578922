"""LangGraph peer for the Orchestra workflow-engine benchmark.

This module runs the same workflow *shape* that Orchestra's ``plan_review`` benchmark
runs, on LangGraph, so the two engines' orchestration overhead can be compared. The
agents are instant fakes (no LLM, no I/O of their own), so what gets measured is the
engine: scheduling, state merging, checkpoint persistence and human-checkpoint
suspend/resume.

Shape ("Plan & Review")::

    START -> planner -> plan_checkpoint -+-> reviewer_1 -+-> reviews_checkpoint -> END
                         (interrupt)     +-> reviewer_2 -+      (interrupt)
                                         +-> reviewer_3 -+

* ``planner`` writes a short plan string into the state.
* ``plan_checkpoint`` calls ``langgraph.types.interrupt`` with a checkpoint payload:
  the run suspends and is persisted until a human decision arrives.
* ``reviewer_1..3`` run in parallel (one superstep), each appending one small review
  dict to ``reviews`` through an ``Annotated[list, operator.add]`` reducer.
* ``reviews_checkpoint`` is the fan-in (it waits for all three reviewers) and suspends
  again with ``interrupt``.

Each workflow is one ``thread_id`` driven through three calls, the way a user would
drive it: ``ainvoke(initial input)`` until the first interrupt,
``ainvoke(Command(resume={"action": "approve"}))`` until the second one, and the same
resume again until the graph reaches END. That is the same sequence as an Orchestra
run: start, approve the plan checkpoint, approve the reviews checkpoint.

Persistence and fairness:

* The checkpointer is ``AsyncSqliteSaver`` on a fresh SQLite *file* (not ``:memory:``).
  Orchestra's store runs SQLite with ``journal_mode=WAL`` and ``synchronous=FULL``, so
  we open the ``aiosqlite`` connection ourselves, set those two pragmas and hand the
  connection to the saver. ``AsyncSqliteSaver.setup()`` (langgraph-checkpoint-sqlite
  3.1.2) itself only executes ``PRAGMA journal_mode=WAL``; it never touches
  ``synchronous``, so without our pragma the SQLite build default would apply.
  The saver commits after every ``aput`` / ``aput_writes`` and serialises all access to
  its single connection with an ``asyncio.Lock``.
* Durability is LangGraph's default. In langgraph 1.2.24 ``durability=None`` resolves
  to ``"async"`` (``Pregel._defaults``): the checkpoint of step N is written in the
  background while step N+1 runs, and the run loop waits for every pending write
  before ``ainvoke`` returns, so each suspension/finish is on disk (and, with
  ``synchronous=FULL``, fsynced) by the time the caller sees it. We do not pass
  ``durability`` and do not weaken it.
* The graph is compiled once; ``n`` workflows run with at most ``concurrency`` in
  flight (a fixed pool of worker tasks pulling from a shared counter).

PostgreSQL mode (``run_langgraph_pg``): the checkpointer is ``AsyncPostgresSaver``
(langgraph-checkpoint-postgres 3.2.0) on a ``psycopg_pool.AsyncConnectionPool``, the
way its docs set it up (``autocommit=True``, ``prepare_threshold=0``,
``row_factory=dict_row``), on a fresh database per run (created and dropped here,
like Orchestra's in ``benchmarks/engine.py``), tables created by ``setup()`` outside
the timed section. The pool holds ``concurrency`` connections (at most 20), opened
before the clock starts. Note: the saver serialises its own statements with one
``asyncio.Lock`` even on a pool (``AsyncPostgresSaver._cursor``), so one compiled
graph issues one statement at a time; that is the library's behaviour, not weakened
or worked around here. The server's durability settings apply to both engines.

After the timed section every thread is checked: it has no pending node, no pending
interrupt, both human decisions were recorded, and it holds exactly three reviews.

Usage::

    python benchmarks/langgraph_peer.py --n 200 --concurrency 1 --concurrency 20
    python benchmarks/langgraph_peer.py --pg postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import pathlib
import tempfile
import time
from typing import Annotated, Any, TypedDict

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt
from pgtools import drop_pg, fresh_pg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

REVIEWERS = ("reviewer_1", "reviewer_2", "reviewer_3")
APPROVE: dict[str, str] = {"action": "approve"}
RESUME: Command[str] = Command(resume=APPROVE)


class PlanReviewState(TypedDict, total=False):
    """Graph state. ``reviews`` is merged across the parallel reviewers."""

    task: str
    plan: str
    plan_decision: str
    reviews: Annotated[list[dict[str, Any]], operator.add]
    reviews_decision: str


# --------------------------------------------------------------------------- nodes


def planner(state: PlanReviewState) -> dict[str, Any]:
    return {"plan": f"1. read the task: {state['task']}\n2. do it\n3. verify it"}


def plan_checkpoint(state: PlanReviewState) -> dict[str, Any]:
    decision = interrupt({"checkpoint": "plan", "plan": state["plan"], "actions": ["approve"]})
    return {"plan_decision": decision["action"]}


def _make_reviewer(name: str) -> Any:
    def review(state: PlanReviewState) -> dict[str, Any]:
        return {"reviews": [{"reviewer": name, "verdict": "lgtm", "plan_len": len(state["plan"])}]}

    review.__name__ = name
    return review


def reviews_checkpoint(state: PlanReviewState) -> dict[str, Any]:
    decision = interrupt(
        {"checkpoint": "reviews", "reviews": state["reviews"], "actions": ["approve"]}
    )
    return {"reviews_decision": decision["action"]}


def build_graph() -> StateGraph[PlanReviewState]:
    builder: StateGraph[PlanReviewState] = StateGraph(PlanReviewState)
    builder.add_node("planner", planner)
    builder.add_node("plan_checkpoint", plan_checkpoint)
    for name in REVIEWERS:
        builder.add_node(name, _make_reviewer(name))
    builder.add_node("reviews_checkpoint", reviews_checkpoint)

    builder.add_edge(START, "planner")
    builder.add_edge("planner", "plan_checkpoint")
    for name in REVIEWERS:  # fan-out: all three run in the same superstep
        builder.add_edge("plan_checkpoint", name)
    builder.add_edge(list(REVIEWERS), "reviews_checkpoint")  # fan-in: waits for all three
    builder.add_edge("reviews_checkpoint", END)
    return builder


# ------------------------------------------------------------------------ runner


async def open_connection(db_path: pathlib.Path) -> aiosqlite.Connection:
    """Open the saver's connection with the same pragmas as Orchestra's store."""
    conn = await aiosqlite.connect(db_path)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=FULL")
    return conn


async def read_pragmas(conn: aiosqlite.Connection) -> dict[str, str]:
    out: dict[str, str] = {}
    for pragma in ("journal_mode", "synchronous"):
        async with conn.execute(f"PRAGMA {pragma}") as cur:
            row = await cur.fetchone()
        assert row is not None
        out[pragma] = str(row[0])
    return out


def _fresh(db_path: pathlib.Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        pathlib.Path(f"{db_path}{suffix}").unlink(missing_ok=True)


async def _run_one(graph: CompiledStateGraph[Any, Any, Any, Any], thread_id: str) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    first = await graph.ainvoke({"task": f"task {thread_id}", "reviews": []}, config)
    assert "__interrupt__" in first, f"{thread_id}: expected plan checkpoint"
    second = await graph.ainvoke(RESUME, config)
    assert "__interrupt__" in second, f"{thread_id}: expected reviews checkpoint"
    final = await graph.ainvoke(RESUME, config)
    assert "__interrupt__" not in final, f"{thread_id}: expected completion"


async def _verify(graph: CompiledStateGraph[Any, Any, Any, Any], thread_ids: list[str]) -> None:
    for thread_id in thread_ids:
        snap = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        assert snap.next == (), f"{thread_id}: still pending {snap.next}"
        assert not snap.interrupts, f"{thread_id}: pending interrupts"
        values = snap.values
        assert values["plan_decision"] == "approve", thread_id
        assert values["reviews_decision"] == "approve", thread_id
        reviews = values["reviews"]
        assert len(reviews) == 3, f"{thread_id}: {len(reviews)} reviews"
        assert sorted(r["reviewer"] for r in reviews) == list(REVIEWERS), thread_id


async def _drive(
    graph: CompiledStateGraph[Any, Any, Any, Any], n: int, concurrency: int
) -> tuple[float, float]:
    """Run ``n`` workflows, ``concurrency`` at a time; verify them after the clock stops.
    Returns (wall seconds, process CPU seconds) of the timed section."""
    thread_ids = [f"wf-{i:06d}" for i in range(n)]
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            thread_id = thread_ids[next_index]
            next_index += 1
            await _run_one(graph, thread_id)

    started, cpu_started = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as tg:
        for _ in range(min(concurrency, n)):
            tg.create_task(worker())
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    await _verify(graph, thread_ids)
    return seconds, cpu


def _figures(n: int, concurrency: int, seconds: float, cpu: float) -> dict[str, float]:
    return {
        "workflows": n,
        "concurrency": concurrency,
        "seconds": seconds,
        "workflows_per_s": n / seconds,
        "cpu_ms_per_workflow": cpu / n * 1000,
    }


async def run_langgraph(n: int, concurrency: int, db_path: pathlib.Path) -> dict[str, float]:
    """Run ``n`` Plan & Review workflows with at most ``concurrency`` in flight.

    ``db_path`` is deleted first (with its WAL/SHM files) so every run starts fresh.
    Only the workflow runs are timed; setup and the final verification are not.
    """
    if n < 1 or concurrency < 1:
        raise ValueError("n and concurrency must be >= 1")
    db_path = pathlib.Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    _fresh(db_path)

    conn = await open_connection(db_path)
    try:
        saver = AsyncSqliteSaver(conn)
        await saver.setup()  # create tables outside the timed section
        pragmas = await read_pragmas(conn)
        # setup() re-issues journal_mode=WAL only; make sure nothing reset ours.
        assert pragmas == {"journal_mode": "wal", "synchronous": "2"}, pragmas

        seconds, cpu = await _drive(build_graph().compile(checkpointer=saver), n, concurrency)
    finally:
        await conn.close()
    return _figures(n, concurrency, seconds, cpu)


async def run_langgraph_pg(n: int, concurrency: int, admin_url: str) -> dict[str, float]:
    """The same run on PostgreSQL: ``AsyncPostgresSaver`` on a connection pool, in a
    fresh database created from ``admin_url`` and dropped afterwards."""
    if n < 1 or concurrency < 1:
        raise ValueError("n and concurrency must be >= 1")
    url = fresh_pg(admin_url)
    try:
        size = min(concurrency, 20)
        async with AsyncConnectionPool(
            conninfo=url,
            min_size=size,
            max_size=size,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        ) as pool:
            await pool.wait()  # every connection open before the clock starts
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await saver.setup()
            seconds, cpu = await _drive(build_graph().compile(checkpointer=saver), n, concurrency)
    finally:
        drop_pg(url, admin_url)
    return _figures(n, concurrency, seconds, cpu)


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200, help="workflows per run")
    parser.add_argument(
        "--concurrency",
        type=int,
        action="append",
        help="workflows in flight (repeatable; default: 1 and 20)",
    )
    parser.add_argument(
        "--db-dir",
        type=pathlib.Path,
        default=None,
        help="directory for the SQLite files (default: a temporary directory)",
    )
    parser.add_argument(
        "--pg",
        default=None,
        help="run on PostgreSQL instead: a database URL to create fresh databases from",
    )
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    levels: list[int] = args.concurrency or [1, 20]
    with tempfile.TemporaryDirectory(prefix="langgraph-peer-") as tmp:
        db_dir: pathlib.Path = args.db_dir or pathlib.Path(tmp)
        print("engine     workflows  concurrency   seconds  workflows/s")
        for c in levels:
            if args.pg:
                res = await run_langgraph_pg(args.n, c, args.pg)
            else:
                res = await run_langgraph(args.n, c, db_dir / f"langgraph-c{c}.sqlite")
            print(
                f"langgraph  {int(res['workflows']):>9}  {int(res['concurrency']):>11}"
                f"  {res['seconds']:>8.3f}  {res['workflows_per_s']:>11.1f}"
            )


if __name__ == "__main__":
    asyncio.run(_main(_parse_args()))
