"""Short ids: a unique prefix of 4+ hex digits names a workflow or a checkpoint, as git
takes a commit's; an ambiguous one is bad input listing the matches. Both databases,
through the service and over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from orchestra.app import create_app
from orchestra.config import Settings
from orchestra.domain.errors import InvalidInput, NotFound
from orchestra.engine.runner import Worker
from orchestra.runtime import open_runtime
from orchestra.service import Orchestra
from orchestra.store.db import Database, Tx
from orchestra.store.schema import workflows


async def _twins(db: Database, service: Orchestra, *ids: str) -> None:
    """Workflows with the given ids (copies of a real one), to make prefixes collide."""
    wf = await service.create_workflow(name="twin", prompt="x")

    def txn(tx: Tx) -> None:
        [row] = tx.fetch(select(workflows).where(workflows.c.id == wf.id), {})
        for new in ids:
            tx.execute(workflows.insert(), {**row, "id": new})

    await db.write(txn)


async def test_a_unique_prefix_names_the_workflow_and_the_checkpoint(
    service: Orchestra, worker: Worker
) -> None:
    wf = await service.create_workflow(name="flag", prompt="Add a flag")
    await worker.run_until_idle()
    cp = (await service.get_workflow(wf.id)).pending_checkpoint
    assert cp is not None
    assert await service.expand_id("workflow", wf.id[:8]) == wf.id
    assert await service.expand_id("workflow", wf.id.upper()) == wf.id
    assert await service.expand_id("checkpoint", cp.id[:6]) == cp.id
    assert await service.expand_id("workflow", wf.id) == wf.id


async def test_an_ambiguous_prefix_lists_the_matches_and_an_unknown_one_is_not_found(
    db: Database, service: Orchestra
) -> None:
    one, two = "abcd" + "1" * 28, "abcd" + "2" * 28
    await _twins(db, service, one, two)
    with pytest.raises(InvalidInput) as caught:
        await service.expand_id("workflow", "abcd")
    assert caught.value.details["matches"] == [one, two]
    assert one in caught.value.message and "give more digits" in caught.value.message
    assert await service.expand_id("workflow", "abcd1") == one
    with pytest.raises(NotFound):
        await service.expand_id("workflow", "ffff0000")
    for bad in ("abc", "abcd%", "ab_d", "g" * 8, "a" * 33, "ab cd"):
        with pytest.raises(InvalidInput):
            await service.expand_id("workflow", bad)


async def test_the_api_expands_a_prefix(db_url: str, tmp_path: Any) -> None:
    runtime = open_runtime(Settings(data_dir=tmp_path, database_url=db_url, no_auth=True))
    try:
        wf = await runtime.service.create_workflow(name="flag", prompt="Add a flag")
        await _twins(runtime.db, runtime.service, "abcd" + "1" * 28, "abcd" + "2" * 28)
        transport = httpx.ASGITransport(app=create_app(runtime, run_worker=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            found = await client.get(f"/api/ids/workflow/{wf.id[:6]}")
            assert found.status_code == 200 and found.json() == {"id": wf.id}
            ambiguous = await client.get("/api/ids/workflow/abcd")
            assert ambiguous.status_code == 422
            assert len(ambiguous.json()["error"]["details"]["matches"]) == 2
            assert (await client.get("/api/ids/workflow/ffff")).status_code == 404
            assert (await client.get("/api/ids/workflow/ab%25d")).status_code == 422
            assert (await client.get("/api/ids/tokens/abcd")).status_code == 422
            # Where the log is now: the cursor `orchestra inbox --watch` follows from.
            last = (await client.get("/api/events/last")).json()
            assert last == {"id": await runtime.service.last_event_id()} and last["id"] > 0
    finally:
        runtime.close()
