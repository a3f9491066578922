"""Following the event log: what the doorbell carries, and what the follower must read.

The follower takes the events this process's commits ring with, without reading
them back; it must still end up with exactly the rows in the database — same
ids, same content, in order, none skipped — when another process writes,
when a transaction in a group commit fails, and when Postgres commits run in
parallel threads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from orchestra.domain.events import EventType
from orchestra.domain.models import Decision, Event
from orchestra.service import Orchestra
from orchestra.store import follow, queries
from orchestra.store.db import NOTIFY_CHANNEL, Database, Tx
from orchestra.store.follow import LogFollower
from tests.support.waiting import eventually


class Boom(Exception):
    pass


def _emit(*notes: str) -> Callable[[Tx], None]:
    def txn(tx: Tx) -> None:
        for note in notes:
            tx.emit(None, EventType.WORKFLOW_CREATED, {"note": note, "n": [1, 2]})

    return txn


def _emit_for(workflow_id: str, note: str) -> Callable[[Tx], None]:
    def txn(tx: Tx) -> None:
        tx.emit(workflow_id, EventType.WORKFLOW_CREATED, {"note": note})

    return txn


def _fail_after_emitting(tx: Tx) -> None:
    tx.emit(None, EventType.WORKFLOW_CREATED, {"note": "undone"})
    raise Boom


class Collector:
    """Runs a follower in the background and keeps what it yields."""

    def __init__(self, db: Database, *, poll_s: float = 30, workflow_id: str | None = None) -> None:
        # By default: rings only.
        self.follower = LogFollower(db, 0, poll_s=poll_s, workflow_id=workflow_id)
        self.seen: list[Event] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with contextlib.aclosing(self.follower.batches()) as batches:
            async for batch in batches:
                self.seen.extend(batch)

    async def started(self) -> None:
        """Wait for the first read of the log: what follows may come by rings."""

        async def read_once() -> bool:
            return self.follower.reads >= 1

        await eventually(read_once, what="the follower's first read")

    async def until(self, count: int) -> list[Event]:
        async def enough() -> bool:
            return len(self.seen) >= count

        await eventually(enough, what=f"{count} events followed")
        return self.seen

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def _log(db: Database) -> list[Event]:
    return await db.read(lambda c: queries.events_after(c, after=0, limit=10_000))


def _same(followed: list[Event], logged: list[Event]) -> None:
    assert [e.model_dump(mode="json") for e in followed] == [
        e.model_dump(mode="json") for e in logged
    ]


async def test_followed_events_equal_the_log_through_a_failed_transaction(db: Database) -> None:
    collector = Collector(db)
    await collector.started()
    results = await asyncio.gather(
        db.write(_emit("a", "b")),
        db.write(_fail_after_emitting),
        db.write(_emit("c")),
        return_exceptions=True,
    )
    assert isinstance(results[1], Boom)
    followed = await collector.until(3)
    await collector.stop()
    logged = await _log(db)
    # Postgres runs the three writes in parallel: any commit order, the same in both
    assert sorted(e.data["note"] for e in logged) == ["a", "b", "c"]
    _same(followed, logged)
    if db.kind == "sqlite":  # the rings carried them: one read, at the start
        assert collector.follower.reads == 1


async def test_each_commit_rings_with_its_events_and_no_echo_makes_a_read(
    db: Database, db_url: str
) -> None:
    """Commits one after another: each ring carries its commit's events (Postgres'
    ids come back from the INSERT), so the follower reads the log only at the
    start. On Postgres this process hears its own notifications echo back over
    LISTEN; they must not send it to the log (it rang for them already). Another
    process's notification still does: one such before the writes shows the
    listener is live, one after them comes after their echoes (commit order)."""
    db.start_listening(asyncio.get_running_loop())  # LISTEN, as a server does
    collector = Collector(db)
    await collector.started()
    reads = 1

    async def another_process_notifies() -> None:
        nonlocal reads
        reads += 1
        plain_url = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(plain_url, autocommit=True) as conn:
            conn.execute(f"NOTIFY {NOTIFY_CHANNEL}, 'e:another process'")

        async def read_for_it() -> bool:
            return collector.follower.reads >= reads

        await eventually(read_for_it, what="a read for another process's notification")

    if db.kind == "postgresql":
        await another_process_notifies()
    for note in ("a", "b", "c"):
        await db.write(_emit(note, f"{note} again"))
    followed = await collector.until(6)
    if db.kind == "postgresql":
        await another_process_notifies()
    await collector.stop()
    assert [e.data["note"] for e in followed] == ["a", "a again", "b", "b again", "c", "c again"]
    _same(followed, await _log(db))
    assert collector.follower.reads == reads


async def test_another_process_commit_in_between_is_read_not_skipped(
    db: Database, db_url: str
) -> None:
    """Another writer's rows carry no ring here; the next carried batch starts after
    a gap, so the follower reads the log rather than jump over them."""
    other = Database(db_url)
    try:
        collector = Collector(db)
        await collector.started()
        await db.write(_emit("mine 1"))
        await collector.until(1)
        await other.write(_emit("theirs 1", "theirs 2"))
        await db.write(_emit("mine 2"))
        followed = await collector.until(4)
        await collector.stop()
    finally:
        other.close()
    logged = await _log(db)
    assert [e.data["note"] for e in followed] == ["mine 1", "theirs 1", "theirs 2", "mine 2"]
    _same(followed, logged)


async def test_a_workflow_followed_by_rings_alone_matches_its_history(
    service: Orchestra, db: Database
) -> None:
    """A whole Plan & Review run seen through the follower equals the stored log."""
    collector = Collector(db)
    await collector.started()
    stop = asyncio.Event()
    running = asyncio.create_task(service.engine.run(stop))
    try:
        wf = await service.create_workflow(name="f", prompt="Add a flag")

        async def at_checkpoint() -> bool:
            return (await service.get_workflow(wf.id)).pending_checkpoint is not None

        await eventually(at_checkpoint, what="the plan checkpoint")
        cp = (await service.get_workflow(wf.id)).pending_checkpoint
        assert cp is not None
        await service.resolve(cp.id, Decision(action="cancel"), actor="ana")
        logged = await _log(db)
        followed = await collector.until(len(logged))
    finally:
        stop.set()
        await running
        await collector.stop()
    _same(followed, logged)
    if db.kind == "sqlite":
        assert collector.follower.reads == 1


async def test_another_process_event_is_read_while_this_one_commits_without_events(
    db: Database, db_url: str
) -> None:
    """Commits that append no events (heartbeats) ring without anything to read;
    they must not keep postponing the poll that finds another process's rows."""
    other = Database(db_url)
    collector = Collector(db, poll_s=0.2)
    busy = True

    async def heartbeats() -> None:
        while busy:
            await db.write(lambda tx: None)
            await asyncio.sleep(0.05)  # the load under test: rings more often than poll_s

    beating = asyncio.create_task(heartbeats())
    try:
        await collector.started()
        await other.write(_emit("theirs"))
        followed = await collector.until(1)
    finally:
        busy = False
        await beating
        await collector.stop()
        other.close()
    assert [e.data["note"] for e in followed] == ["theirs"]


async def test_following_one_workflow_yields_its_events_only_and_skips_none(
    service: Orchestra, db: Database, db_url: str
) -> None:
    """``orchestra watch`` follows one workflow: the follower yields exactly its rows,
    in order — the backlog, this process's commits (rings), another process's (read)
    — while the other workflows' commits only move its cursor along the log."""
    mine = await service.create_workflow(name="mine", prompt="Add a flag")
    other_wf = await service.create_workflow(name="other", prompt="Add a flag")
    await db.write(_emit_for(mine.id, "backlog"))
    await db.write(_emit_for(other_wf.id, "not mine"))
    other = Database(db_url)
    try:
        collector = Collector(db, workflow_id=mine.id)
        await collector.started()
        await collector.until(2)  # created, backlog
        await db.write(_emit_for(other_wf.id, "not mine either"))
        await db.write(_emit_for(mine.id, "rung"))
        await other.write(_emit_for(mine.id, "theirs"))
        await other.write(_emit_for(other_wf.id, "theirs, not mine"))
        await db.write(_emit_for(mine.id, "after theirs"))
        followed = await collector.until(5)
        await collector.stop()
    finally:
        other.close()
    assert [e.data.get("note") for e in followed[1:]] == [
        "backlog",
        "rung",
        "theirs",
        "after theirs",
    ]
    _same(followed, await service.events_after(workflow_id=mine.id, after=0))
    everything = await _log(db)
    assert collector.follower.cursor == everything[-1].id  # the whole log was seen
    if db.kind == "sqlite":  # the start, and the gap another process left; no more
        assert collector.follower.reads == 2


def test_a_full_queue_of_rings_falls_back_to_reading(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        follower = LogFollower(db, 0)
        for _ in range(follow._MAX_QUEUED):
            follower._heard([])
        follower._heard([])
        taken, must_read = follower._take_rung()
        assert taken == [] and must_read
    finally:
        db.close()
