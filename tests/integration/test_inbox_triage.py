"""Inbox triage: snoozing ("not now" until a time, without deciding; it comes back
by itself) and the inbox's filters by workflow, step and age. Both databases; the
service's clock is moved instead of waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from orchestra.app import create_app
from orchestra.config import Settings
from orchestra.domain.errors import InvalidInput, NotFound
from orchestra.domain.events import EventType
from orchestra.domain.models import Checkpoint, Decision, InboxFilter
from orchestra.domain.statuses import CheckpointStatus, SnoozedView
from orchestra.engine.checkpoints import ResolutionConflict
from orchestra.engine.runner import Worker
from orchestra.runtime import open_runtime
from orchestra.service import Orchestra
from orchestra.store.db import Database
from orchestra.workflows.plan_review import EDIT_REVIEWER_PROMPT, PLAN_READY, REVIEWS_READY
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


async def _inbox(service: Orchestra, **given: object) -> set[str]:
    """The ids listed (as a set: checkpoints made by concurrent steps may be created
    in either order)."""
    page = await service.list_checkpoints(filter=InboxFilter.model_validate(given))
    return {cp.id for cp in page.items}


def _at(service: Orchestra, moment: datetime) -> None:
    service.clock = lambda: moment


async def test_a_snoozed_checkpoint_leaves_the_inbox_and_comes_back_when_its_time_passes(
    service: Orchestra, worker: Worker
) -> None:
    one, two = await _waiting(service, worker, 2)
    now = datetime.now(UTC)
    _at(service, now)
    snoozed = await service.snooze(one.id, "2h", actor="ana")
    assert snoozed.status is CheckpointStatus.PENDING
    assert snoozed.snoozed_by == "ana" and snoozed.snoozed_until == now + timedelta(hours=2)
    stored = await service.get_checkpoint(one.id)
    assert stored.snoozed_until == now + timedelta(hours=2) and stored.snoozed_by == "ana"

    assert await _inbox(service) == {two.id}
    assert await _inbox(service, snoozed="only") == {one.id}
    assert await _inbox(service, snoozed="include") == {one.id, two.id}
    count = await service.count_inbox()
    assert (count.pending, count.snoozed) == (1, 1)
    assert count.next_wake_at == now + timedelta(hours=2)

    _at(service, now + timedelta(hours=2, seconds=1))  # the time passes: a query, no job
    assert await _inbox(service) == {one.id, two.id}
    assert await _inbox(service, snoozed="only") == set()
    count = await service.count_inbox()
    assert (count.pending, count.snoozed, count.next_wake_at) == (2, 0, None)


async def test_snoozing_is_recorded_as_an_event_and_is_not_a_decision(
    service: Orchestra, worker: Worker
) -> None:
    [cp] = await _waiting(service, worker, 1)
    until = datetime.now(UTC) + timedelta(hours=4)
    await service.snooze(cp.id, until.isoformat(), actor="ana")
    await service.unsnooze(cp.id, actor="bo")
    history = await service.history(cp.workflow_id)
    snoozes = [e.data for e in history.events if e.type is EventType.CHECKPOINT_SNOOZED]
    assert snoozes == [
        {"checkpoint_id": cp.id, "until": until.isoformat(), "by": "ana"},
        {"checkpoint_id": cp.id, "until": None, "by": "bo"},
    ]
    woken = await service.get_checkpoint(cp.id)
    assert woken.snoozed_until is None and woken.snoozed_by is None
    assert await _inbox(service) == {cp.id}

    await service.snooze(cp.id, "1d", actor="ana")  # snoozed, and still decidable
    wf = await decide(service, worker, cp, "approve")
    assert (await service.get_checkpoint(cp.id)).status is CheckpointStatus.APPROVED
    assert wf.pending_checkpoint is not None and wf.pending_checkpoint.id != cp.id


async def test_a_resolved_checkpoint_cannot_be_snoozed_and_nothing_is_written(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    [cp] = await _waiting(service, worker, 1)
    await service.resolve(cp.id, Decision(action="cancel"), actor="bo")
    before = await snapshot(db)
    with pytest.raises(ResolutionConflict) as caught:
        await service.snooze(cp.id, "1h", actor="ana")
    assert "bo" in caught.value.message and caught.value.details["resolution"] is not None
    with pytest.raises(ResolutionConflict):
        await service.unsnooze(cp.id, actor="ana")
    with pytest.raises(NotFound):
        await service.snooze("f" * 32, "1h", actor="ana")
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    ("until", "says"),
    [
        ("0m", "out of range"),
        ("31d", "at most 30 days"),
        ("soon", "neither a duration"),
        ("2020-01-01T00:00:00+00:00", "has passed"),
        ("2030-01-01T00:00:00", "no timezone"),
        ("9" * 60, "neither a duration"),
    ],
)
async def test_a_bad_snooze_time_is_refused_with_what_to_write_and_writes_nothing(
    service: Orchestra, worker: Worker, db: Database, until: str, says: str
) -> None:
    [cp] = await _waiting(service, worker, 1)
    before = await snapshot(db)
    with pytest.raises(InvalidInput) as caught:
        await service.snooze(cp.id, until, actor="ana")
    assert says in caught.value.message and caught.value.details == {"field": "until"}
    assert await snapshot(db) == before


async def test_the_inbox_filters_by_workflow_step_and_age(
    service: Orchestra, worker: Worker
) -> None:
    one, two, three = await _waiting(service, worker, 3)
    wf = await decide(service, worker, three, "edit_reviewer_prompt")
    editing = wf.pending_checkpoint
    assert editing is not None
    assert await _inbox(service, workflow=one.workflow_id) == {one.id}
    assert await _inbox(service, workflow=two.workflow_id[:6].upper()) == {two.id}
    assert await _inbox(service, step=EDIT_REVIEWER_PROMPT) == {editing.id}
    assert await _inbox(service, step=PLAN_READY) == {one.id, two.id}
    assert await _inbox(service, step=PLAN_READY, workflow=two.workflow_id) == {two.id}

    now = datetime.now(UTC)
    _at(service, now)
    assert await _inbox(service, older_than="1h") == set()
    _at(service, now + timedelta(minutes=90))
    assert await _inbox(service, older_than="1h") == {one.id, two.id, editing.id}
    assert await _inbox(service, older_than="1h", step=PLAN_READY) == {one.id, two.id}


@pytest.mark.parametrize(
    ("given", "field", "says"),
    [
        ({"step": "plan_redy"}, "step", PLAN_READY),
        ({"workflow": "xyz!"}, "workflow", "first 4+ hex digits"),
        ({"workflow": "abc"}, "workflow", "first 4+ hex digits"),
        ({"older_than": "an hour"}, "older_than", "not a duration"),
        ({"older_than": "5000d"}, "older_than", "out of range: 1s to 3650d"),
    ],
)
async def test_bad_filters_are_refused_with_what_to_write(
    service: Orchestra, given: dict[str, str], field: str, says: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await service.list_checkpoints(filter=InboxFilter.model_validate(given))
    assert says in caught.value.message and caught.value.details["field"] == field
    if field == "step":  # the message lists the valid ones
        assert set(caught.value.details["allowed"]) >= {PLAN_READY, REVIEWS_READY}


async def test_a_batch_applies_to_snoozed_checkpoints_too(
    service: Orchestra, worker: Worker
) -> None:
    one, two = await _waiting(service, worker, 2)
    await service.snooze(one.id, "1h", actor="ana")
    done = await service.resolve_batch([one.id, two.id], Decision(action="approve"), actor="a")
    assert done.resolved == 2
    assert await _inbox(service, snoozed=SnoozedView.ONLY) == set()


async def test_the_api_snoozes_filters_and_counts(db_url: str, tmp_path: Path) -> None:
    runtime = open_runtime(Settings(data_dir=tmp_path, database_url=db_url, no_auth=True))
    try:
        service = runtime.service
        one, two = await _waiting(service, service.engine.worker, 2)
        transport = httpx.ASGITransport(app=create_app(runtime, run_worker=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            r = await client.post(f"/api/checkpoints/{one.id}/snooze", json={"until": "4h"})
            assert r.status_code == 200, r.text
            assert r.json()["snoozed_until"] and r.json()["status"] == CheckpointStatus.PENDING
            listed = (await client.get("/api/checkpoints")).json()["items"]
            assert [c["id"] for c in listed] == [two.id]
            only = await client.get("/api/checkpoints", params={"snoozed": "only"})
            assert [c["id"] for c in only.json()["items"]] == [one.id]
            count = (await client.get("/api/checkpoints/count")).json()
            assert (count["pending"], count["snoozed"]) == (1, 1) and count["next_wake_at"]
            step = await client.get("/api/checkpoints", params={"step": PLAN_READY})
            assert len(step.json()["items"]) == 1
            r = await client.delete(f"/api/checkpoints/{one.id}/snooze")
            assert r.status_code == 200 and r.json()["snoozed_until"] is None
            assert (await client.get("/api/checkpoints/count")).json()["pending"] == 2

            await service.resolve(two.id, Decision(action="cancel"), actor="bo")
            conflict = await client.post(f"/api/checkpoints/{two.id}/snooze", json={"until": "1h"})
            assert conflict.status_code == 409
            assert conflict.json()["error"]["details"]["resolution"]["resolved_by"] == "bo"
    finally:
        runtime.close()
