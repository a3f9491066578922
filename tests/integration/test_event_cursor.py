"""The event cursor under concurrent committers in several processes.

Four processes append events as fast as they can, each transaction in two
statements with a pause between them (so their ids interleave and commit out of
order on PostgreSQL), one in ten rolled back after its ids were taken. A
follower in this process must see every committed event exactly once, in id
order, and skip none; a log end read at any moment must never change later
(no event may commit below it afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys

from sqlalchemy import select

from orchestra.store import settled
from orchestra.store.db import Database
from orchestra.store.follow import LogFollower
from orchestra.store.schema import events
from tests.support.processes import ROOT

WRITERS = 4
TRANSACTIONS = 60


def _ids_upto(upto: int):  # type: ignore[no-untyped-def]
    def read(conn):  # type: ignore[no-untyped-def]
        query = select(events.c.id).where(events.c.id <= upto).order_by(events.c.id)
        return list(conn.execute(query).scalars())

    return read


async def test_a_follower_sees_every_event_once_in_order_while_four_processes_commit(
    db_url: str, db: Database
) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.event_writer", db_url, str(TRANSACTIONS), str(i)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(WRITERS)
    ]
    seen: list[int] = []
    ends: list[tuple[int, list[int]]] = []
    follower = LogFollower(db, 0, poll_s=0.05)

    async def follow() -> None:
        async for batch in follower.batches():
            seen.extend(e.id for e in batch)

    async def sample_ends() -> None:
        while True:
            end = await db.read(settled.end)
            ends.append((end, await db.read(_ids_upto(end))))
            await asyncio.sleep(0.01)

    following = asyncio.create_task(follow())
    sampling = asyncio.create_task(sample_ends())
    try:
        outputs = await asyncio.gather(
            *(asyncio.to_thread(w.communicate, timeout=120) for w in writers)
        )
        for writer, (out, err) in zip(writers, outputs, strict=True):
            assert writer.returncode == 0, err.decode()[-2000:]
            assert out.startswith(b"done"), out
        committed = sum(int(out.split()[1]) for out, _ in outputs)
        all_ids = await db.read(_ids_upto(10**12))
        assert len(all_ids) == committed  # the rolled-back ones left holes
        if db.kind == "postgresql":  # (SQLite hands a rolled-back id out again)
            assert all_ids[-1] > committed  # … which the follower must step over

        async def caught_up() -> None:
            while follower.cursor < all_ids[-1]:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(caught_up(), timeout=30)
    finally:
        for task in (following, sampling):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for writer in writers:
            if writer.poll() is None:
                writer.kill()

    missing = sorted(set(all_ids) - set(seen))
    print(
        "MISSING", missing[:20], "DUP", len(seen) - len(set(seen)), "ORDERED", seen == sorted(seen)
    )
    assert seen == all_ids  # every committed event, once each, in id order
    assert ends, "no log end was sampled"
    for end, ids_then in ends:
        assert [i for i in all_ids if i <= end] == ids_then, (
            f"{db.kind}: an event committed below {end} later"
        )
