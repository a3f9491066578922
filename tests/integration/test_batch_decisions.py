"""Batch decisions: one action applied to several checkpoints, each its own
exactly-once resolution with its own audit row; an item resolved elsewhere first
is reported as such and the rest still applied. Both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from orchestra.app import create_app
from orchestra.config import Settings
from orchestra.domain.errors import InvalidInput
from orchestra.domain.models import Checkpoint, Decision
from orchestra.domain.statuses import CheckpointStatus
from orchestra.engine.runner import Worker
from orchestra.runtime import open_runtime
from orchestra.service import Orchestra
from tests.support.engine import decide, snapshot


async def _waiting(service: Orchestra, worker: Worker, n: int) -> list[Checkpoint]:
    ids = [(await service.create_workflow(name=f"wf{i}", prompt="x")).id for i in range(n)]
    await worker.run_until_idle()
    found = []
    for wid in ids:
        cp = (await service.get_workflow(wid)).pending_checkpoint
        assert cp is not None
        found.append(cp)
    return found


async def test_a_batch_resolves_each_once_and_reports_the_one_resolved_elsewhere(
    service: Orchestra, worker: Worker
) -> None:
    one, two, three = await _waiting(service, worker, 3)
    await service.resolve(two.id, Decision(action="cancel"), actor="bo")  # elsewhere, first
    done = await service.resolve_batch(
        [one.id, two.id, three.id, "f" * 32],
        Decision(action="approve", notes="batch"),
        actor="ana",
    )
    assert [i.outcome for i in done.items] == [
        "resolved",
        "already_resolved",
        "resolved",
        "not_found",
    ]
    assert done.resolved == 2 and "bo" in done.items[1].message
    for cp in (one, three):
        got = await service.get_checkpoint(cp.id)
        assert got.status is CheckpointStatus.APPROVED
        assert got.resolution is not None and got.resolution.resolved_by == "ana"
        assert got.resolution.notes == "batch"
    assert (await service.get_checkpoint(two.id)).resolution.resolved_by == "bo"  # type: ignore[union-attr]


async def test_an_action_one_item_does_not_offer_is_reported_and_changes_nothing_there(
    service: Orchestra, worker: Worker
) -> None:
    one, two = await _waiting(service, worker, 2)
    wf = await decide(service, worker, two, "edit_reviewer_prompt")
    editing = wf.pending_checkpoint
    assert editing is not None and editing.step_name == "edit_reviewer_prompt"
    done = await service.resolve_batch([one.id, editing.id], Decision(action="approve"), actor="a")
    assert [i.outcome for i in done.items] == ["resolved", "invalid"]
    assert "not offered" in done.items[1].message
    assert (await service.get_checkpoint(editing.id)).status is CheckpointStatus.PENDING


async def test_two_batches_racing_resolve_each_checkpoint_exactly_once(
    service: Orchestra, worker: Worker
) -> None:
    cps = await _waiting(service, worker, 4)
    ids = [cp.id for cp in cps]
    first, second = await asyncio.gather(
        service.resolve_batch(ids, Decision(action="approve"), actor="ana"),
        service.resolve_batch(list(reversed(ids)), Decision(action="approve"), actor="bo"),
    )
    wins = first.resolved + second.resolved
    assert wins == 4
    for cp_id in ids:
        outcomes = {i.outcome for r in (first, second) for i in r.items if i.checkpoint_id == cp_id}
        assert outcomes == {"resolved", "already_resolved"}
    history = [await service.history(cp.workflow_id) for cp in cps]
    assert all(sum(1 for c in h.checkpoints if c.resolution is not None) == 1 for h in history)


async def test_bad_batches_are_refused_and_write_nothing(
    service: Orchestra, worker: Worker, db: object
) -> None:
    [one] = await _waiting(service, worker, 1)
    before = await snapshot(db)  # type: ignore[arg-type]
    for ids in ([], [one.id, one.id], [one.id] * 101):
        with pytest.raises(InvalidInput):
            await service.resolve_batch(ids, Decision(action="approve"), actor="a")
    assert await snapshot(db) == before  # type: ignore[arg-type]


async def test_the_api_resolves_a_batch(db_url: str, tmp_path: Path) -> None:
    runtime = open_runtime(Settings(data_dir=tmp_path, database_url=db_url, no_auth=True))
    try:
        service = runtime.service
        one, two = await _waiting(service, service.engine.worker, 2)
        await service.resolve(two.id, Decision(action="cancel"), actor="bo")
        transport = httpx.ASGITransport(app=create_app(runtime, run_worker=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            body = {"checkpoint_ids": [one.id, two.id], "action": "approve"}
            r = await client.post("/api/checkpoints/resolve", json=body)
            assert r.status_code == 200, r.text
            assert [i["outcome"] for i in r.json()["items"]] == ["resolved", "already_resolved"]
            bad = await client.post("/api/checkpoints/resolve", json={"checkpoint_ids": []})
            assert bad.status_code == 422
    finally:
        runtime.close()
