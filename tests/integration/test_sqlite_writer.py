"""The SQLite writer: a lone write commits at once on its caller's thread; writes
that arrive together are committed together by the writer thread (group commit);
a slow inline commit sends writes back to the thread for a while."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from orchestra.domain.errors import DatabaseUnavailable
from orchestra.domain.events import EventType
from orchestra.store.db import Database, Tx
from orchestra.store.migrate import upgrade
from tests.support.waiting import eventually


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(db.write_engine)
    yield db
    db.close()


def _commits(db: Database) -> list[int]:
    """A list that grows by one with every commit on the write connection."""
    seen: list[int] = []

    @event.listens_for(db.write_engine, "commit")
    def _on_commit(_conn: Any) -> None:
        seen.append(1)

    return seen


def _note(n: int) -> Any:
    """A write that appends one event and says which thread ran it."""

    def txn(tx: Tx) -> str:
        tx.emit(None, EventType.WORKFLOW_CREATED, {"n": n})
        return threading.current_thread().name

    return txn


async def _event_count(db: Database) -> int:
    return int(
        await db.read(lambda c: c.exec_driver_sql("SELECT count(*) FROM events").scalar_one())
    )


async def test_a_lone_write_commits_on_the_callers_thread(sqlite_db: Database) -> None:
    commits = _commits(sqlite_db)
    assert await sqlite_db.write(_note(1)) == threading.current_thread().name
    assert await sqlite_db.write(_note(2)) == threading.current_thread().name
    assert len(commits) == 2
    assert await _event_count(sqlite_db) == 2


async def test_writes_that_arrive_together_commit_together_on_the_writer(
    sqlite_db: Database,
) -> None:
    threads = await asyncio.gather(*(sqlite_db.write(_note(n)) for n in range(20)))
    assert set(threads) == {"orchestra-writer"}
    assert await _event_count(sqlite_db) == 20


async def test_writes_queued_while_the_writer_is_busy_share_one_commit(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How many writes one commit takes depends on what is queued when the writer
    looks; kept busy in a commit, it finds every write queued meanwhile and commits
    them together."""
    writer = sqlite_db._writer
    assert writer is not None
    monkeypatch.setattr(writer, "_inline_paused_until", float("inf"))  # all to the thread
    inside, go_on = threading.Event(), threading.Event()

    def held(tx: Tx) -> None:
        inside.set()
        assert go_on.wait(30), "the test never let the first commit finish"
        tx.emit(None, EventType.WORKFLOW_CREATED, {"n": -1})

    commits = _commits(sqlite_db)
    first = asyncio.create_task(sqlite_db.write(held))
    try:
        await eventually(inside.is_set, what="the writer thread inside the first commit")
        queued = [asyncio.create_task(sqlite_db.write(_note(n))) for n in range(19)]
        await eventually(lambda: writer._queue.qsize() == 19, what="the writes to queue")
    finally:
        go_on.set()
    await first
    assert set(await asyncio.gather(*queued)) == {"orchestra-writer"}
    assert len(commits) == 2  # the held write's, then one for the 19 queued behind it
    assert await _event_count(sqlite_db) == 20


async def test_a_failing_lone_write_raises_and_writes_nothing(sqlite_db: Database) -> None:
    def broken(tx: Tx) -> None:
        tx.emit(None, EventType.WORKFLOW_CREATED, {"n": 0})
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await sqlite_db.write(broken)
    assert await _event_count(sqlite_db) == 0
    assert await sqlite_db.write(_note(1)) == threading.current_thread().name
    assert await _event_count(sqlite_db) == 1


async def test_a_slow_inline_commit_sends_writes_to_the_writer_thread(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = sqlite_db._writer
    assert writer is not None
    monkeypatch.setattr(writer, "inline_max_s", 0.0)  # every commit counts as slow
    assert await sqlite_db.write(_note(1)) == threading.current_thread().name
    assert await sqlite_db.write(_note(2)) == "orchestra-writer"
    monkeypatch.setattr(writer, "_inline_paused_until", 0.0)  # the pause is over
    monkeypatch.setattr(writer, "inline_max_s", 60.0)
    assert await sqlite_db.write(_note(3)) == threading.current_thread().name


async def test_writes_from_another_event_loop_ring_the_bells_on_theirs(
    sqlite_db: Database,
) -> None:
    """A write made on another thread's event loop (alone: inline there; together:
    on the writer thread) still rings this loop's doorbell, carrying its events; and
    waking the workers from there wakes this loop's."""
    heard: list[list[int]] = []
    rang_on: set[str] = set()

    def listener(events: Any) -> None:
        rang_on.add(threading.current_thread().name)
        heard.append([e.data["n"] for e in events or []])

    sqlite_db.doorbell.bind(asyncio.get_running_loop())
    sqlite_db.work_bell.bind(asyncio.get_running_loop())
    sqlite_db.doorbell.listen(listener)
    woken = sqlite_db.work_bell.generation

    def wakes(tx: Tx) -> str:
        tx.emit(None, EventType.WORKFLOW_CREATED, {"n": 100})
        return threading.current_thread().name

    async def elsewhere() -> tuple[str, list[str]]:
        alone = await sqlite_db.write(wakes)
        await sqlite_db.wake_workers()
        together = await asyncio.gather(*(sqlite_db.write(_note(n)) for n in range(3)))
        return alone, together

    alone, together = await asyncio.to_thread(asyncio.run, elsewhere())
    assert alone not in ("orchestra-writer", threading.current_thread().name)  # inline there
    assert set(together) == {"orchestra-writer"}

    async def all_heard() -> bool:
        return sorted(n for ring in heard for n in ring) == [0, 1, 2, 100]

    await eventually(all_heard, what="the doorbell's rings on this loop")
    assert rang_on == {threading.current_thread().name}
    assert sqlite_db.work_bell.generation > woken
    assert await _event_count(sqlite_db) == 4


async def test_a_write_after_close_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'closed.db'}")
    upgrade(db.write_engine)
    db.close()
    with pytest.raises(DatabaseUnavailable, match="closed"):
        await db.write(_note(1))


async def test_a_write_waits_for_another_processs_write_lock_off_the_event_loop(
    tmp_path: Path,
) -> None:
    """While another process holds SQLite's write lock, a write waits for it on the
    writer thread: this event loop keeps running, and the write lands afterwards."""
    path = tmp_path / "shared.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db.write_engine)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
        writer = db._writer
        assert writer is not None
        writing = asyncio.create_task(db.write(_note(1)))
        # This coroutine runs on while the write waits: the wait is not on the loop.
        await eventually(lambda: not writer.idle, what="the write handed to the writer")
        assert await _event_count(db) == 0  # a read, too, is answered meanwhile
        assert not writing.done()
        other.execute("COMMIT")
        assert await writing == "orchestra-writer"
        assert await _event_count(db) == 1
        # and a lone write commits inline again once the lock is free
        assert await db.write(_note(2)) == threading.current_thread().name
    finally:
        other.close()
        db.close()


async def test_a_write_lock_held_past_the_busy_timeout_gives_database_unavailable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stuck.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db.write_engine)
    assert db._writer is not None
    db._writer.busy_timeout_s = 0.2
    db._writer.inline_max_s = float("inf")  # a slow commit must not pause inline ones here
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseUnavailable, match="locked by another process"):
            await db.write(_note(1))
        other.execute("ROLLBACK")
        assert await _event_count(db) == 0
        assert await db.write(_note(2)) == threading.current_thread().name  # usable again
    finally:
        other.close()
        db.close()


async def test_a_failing_database_gives_unavailable_and_the_next_write_reconnects(
    sqlite_db: Database,
) -> None:
    """A database error (here: the connection made read-only) fails the write with
    DatabaseUnavailable, inline or grouped, and the next write opens a new connection."""
    writer = sqlite_db._writer
    assert writer is not None
    # A slow commit on a loaded machine would pause inline commits (and so send the
    # last write to the writer thread): not what this test is about.
    writer.inline_max_s = float("inf")

    async def break_connection() -> None:
        await sqlite_db.write(_note(0))  # opens the write connection
        assert writer._conn is not None
        raw = writer._conn.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA query_only=1")

    await break_connection()
    with pytest.raises(DatabaseUnavailable):
        await sqlite_db.write(_note(1))  # alone: inline
    await break_connection()
    grouped = await asyncio.gather(
        *(sqlite_db.write(_note(n)) for n in range(2, 5)), return_exceptions=True
    )
    assert all(isinstance(r, DatabaseUnavailable) for r in grouped), grouped
    assert await sqlite_db.write(_note(5)) == threading.current_thread().name
    notes = await sqlite_db.read(
        lambda c: c.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
    )
    assert notes == 3  # the two writes that opened the connection, and the last one
