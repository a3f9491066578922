"""Many workflows paused at a checkpoint, fast: the volume benchmark's and tests' seed.

One Plan & Review workflow is run by the real engine (demo agents) to its first
checkpoint; its rows — the workflow, its agent run, its pending checkpoint and its
events — are then copied ``n - 1`` times with new ids and earlier timestamps, in a
few bulk INSERTs through the schema's tables. Every copy is therefore exactly what
the engine wrote, not a hand-built imitation, and can be resolved and continued
like the original (the benchmark checks a few through the API).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, Table, select

from orchestra.app import create_app
from orchestra.config import Settings
from orchestra.domain.statuses import WorkflowStatus
from orchestra.engine.advance import new_id
from orchestra.runtime import Runtime, open_runtime
from orchestra.service import Orchestra
from orchestra.store.db import Database, Tx
from orchestra.store.schema import agent_runs, checkpoints, events, workflows

Row = dict[str, Any]
#: Workflow ``i`` is named "volume i" (the template: "volume 0").
NAME = "volume"
#: Rows per INSERT statement batch and per transaction.
BATCH = 5_000


async def paused_template(db: Database) -> str:
    """Run one Plan & Review to its first (plan) checkpoint; its id."""
    service = Orchestra(db)
    wf = await service.create_workflow(name=f"{NAME} 0", prompt="Plan a change at volume")
    await service.engine.worker.run_until_idle()
    done = await service.get_workflow(wf.id)
    if done.status is not WorkflowStatus.AWAITING_CHECKPOINT:
        raise RuntimeError(f"the template workflow ended {done.status}, not at a checkpoint")
    return wf.id


def _rows(conn: Connection, table: Table, workflow_id: str) -> list[Row]:
    column = table.c.id if table is workflows else table.c.workflow_id
    query = select(table).where(column == workflow_id).order_by(table.c.id)
    return [dict(r._mapping) for r in conn.execute(query)]


def _replacer(ids: dict[str, str]) -> Any:
    """A function renaming the template's ids in one value (text or JSON)."""

    def swap_text(text: str) -> str:
        for old, new in ids.items():
            if old in text:
                text = text.replace(old, new)
        return text

    def swap(value: Any) -> Any:
        if isinstance(value, str):
            return swap_text(value)
        if isinstance(value, dict | list):
            return json.loads(swap_text(json.dumps(value)))
        return value

    return swap


def _copies(
    template: dict[Table, list[Row]], n: int, tie_every: int, spacing: timedelta
) -> Iterator[dict[Table, list[Row]]]:
    """The rows of copy ``i`` (1 … n-1), each ``spacing`` (× i // tie_every) older."""
    first = template[workflows][0]
    old_ids = [first["id"]] + [r["id"] for t in (checkpoints, agent_runs) for r in template[t]]
    for i in range(1, n):
        ids = {old: new_id() for old in old_ids}
        ids[first["name"]] = f"{NAME} {i}"  # in the workflow_created event too
        swap = _replacer(ids)
        shift = spacing * (i // tie_every)
        copy: dict[Table, list[Row]] = {}
        for table, rows in template.items():
            out = []
            for row in rows:
                new: Row = {}
                for name, value in row.items():
                    if table is events and name == "id":
                        continue  # the log hands out its own ids, in insertion order
                    if isinstance(value, datetime):
                        new[name] = value - shift
                    else:
                        new[name] = swap(value)
                out.append(new)
            copy[table] = out
        yield copy


async def seed_paused(
    db: Database, template_id: str, n: int, *, tie_every: int = 1, spacing_s: float = 1.0
) -> None:
    """Copy the paused workflow of :func:`paused_template` until there are ``n``.

    Copy ``i`` is ``spacing_s × (i // tie_every)`` seconds older than the template, so
    ``tie_every > 1`` makes groups of rows with equal timestamps (a cursor's hard case).
    ``template_id`` is the workflow :func:`paused_template` made."""
    tables = (workflows, agent_runs, checkpoints, events)  # parents first
    template = await db.read(lambda c: {t: _rows(c, t, template_id) for t in tables})
    pending: dict[Table, list[Row]] = {t: [] for t in template}

    def insert(tx: Tx) -> None:
        for table, rows in pending.items():
            if rows:
                tx.conn.execute(table.insert(), rows)  # one executemany per table

    async def flush() -> None:
        await db.write(insert)
        for rows in pending.values():
            rows.clear()

    for count, copy in enumerate(_copies(template, n, tie_every, timedelta(seconds=spacing_s)), 1):
        for table, rows in copy.items():
            pending[table].extend(rows)
        if count % BATCH == 0:
            await flush()
    await flush()
    if db.kind == "postgresql":
        # What autovacuum does after a bulk load (the test server runs without it):
        # without statistics the planner guesses, as it never would in production.
        await db.write(lambda tx: tx.conn.exec_driver_sql("ANALYZE"))


@asynccontextmanager
async def seeded_app(
    db_url: str, data_dir: Path, n: int, *, tie_every: int = 1
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A runtime on ``db_url`` with ``n`` paused workflows, and a client of its app
    (in-process, no worker, no authentication)."""
    runtime = open_runtime(Settings(data_dir=data_dir, database_url=db_url, no_auth=True))
    try:
        await seed_paused(runtime.db, await paused_template(runtime.db), n, tie_every=tie_every)
        transport = httpx.ASGITransport(app=create_app(runtime, run_worker=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield runtime, client
    finally:
        runtime.close()
