"""Webhook notifications from the durable outbox, against a real local HTTP receiver,
on both databases: queued after the commit (never inside a transition), once per
target and event whatever is replayed, signed, retried with backoff, and never in
the way of a resolution.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestra.domain.events import NotificationKind
from orchestra.domain.models import Decision, Notification
from orchestra.domain.statuses import NotificationStatus
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.store import outbox, queries
from orchestra.store.db import Database
from orchestra.store.schema import notifications
from tests.support.engine import start
from tests.support.notifier import (
    LINK,
    SECRET,
    delivered,
    given_up,
    rows,
    running,
)
from tests.support.notifier import make_notifier as _notifier
from tests.support.receiver import receiving
from tests.support.waiting import eventually


async def test_a_pending_checkpoint_is_posted_signed_with_what_is_needed_and_a_link(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving() as receiver:
        async with running(_notifier(db, {"name": "ops", "url": receiver.url})):
            cp = await start(service, worker, name="flag")
            [row] = await delivered(db, 1)
    [got] = receiver.received
    assert got.signed_by(SECRET)
    assert not got.signed_by("another secret")
    assert got.headers["x-orchestra-event"] == "checkpoint_pending"
    assert got.delivery == row.id
    assert abs(int(got.headers["x-orchestra-timestamp"]) - time.time()) < 60
    body = got.json
    assert body["event"] == "checkpoint_pending"
    assert body["workflow"] == {
        "id": cp.workflow_id,
        "name": "flag",
        "type": "plan_review",
        "status": "awaiting_checkpoint",
    }
    assert body["checkpoint"]["id"] == cp.id
    assert body["checkpoint"]["step"] == "plan_ready_for_review"
    assert body["checkpoint"]["title"] == cp.title
    # The checkpoint's own one-line summary, and the action it recommends.
    assert body["summary"] == cp.summary and cp.summary.startswith("Plan v1 ready")
    assert body["recommended"] == cp.recommended == "approve"
    assert body["link"] == f"{LINK}/workflows/{cp.workflow_id}#decide"
    assert row.attempts == 1 and row.last_status_code == 200 and row.last_error is None
    assert row.delivered_at is not None and row.target == "ops"


async def test_a_receiver_failing_twice_gets_it_on_the_third_attempt(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving([500, 503]) as receiver:
        async with running(_notifier(db, {"name": "ops", "url": receiver.url})):
            await start(service, worker)
            [row] = await delivered(db, 1)
    assert row.attempts == 3 and row.last_status_code == 200
    assert receiver.arrived == 3
    # One delivery, three requests, one id: the receiver can tell they are the same.
    assert receiver.by_delivery() == {row.id: 3}
    assert all(r.signed_by(SECRET) for r in receiver.received)


async def test_attempts_and_the_last_error_are_kept_and_it_gives_up_at_max_attempts(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving([500] * 10) as receiver:
        target = {"name": "ops", "url": receiver.url, "max_attempts": 2}
        async with running(_notifier(db, target)):
            await start(service, worker)

            [row] = await given_up(db)
    assert row.attempts == 2 and receiver.arrived == 2
    assert row.last_status_code == 500 and row.last_error == "HTTP 500: no"


async def test_an_unreachable_receiver_records_the_error_and_backs_off(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving() as receiver:
        url = receiver.url
    notifier = _notifier(db, {"name": "gone", "url": url}, base_s=60)
    async with running(notifier):
        await start(service, worker)

        async def tried() -> list[Notification] | None:
            found = [r for r in await rows(db) if r.attempts == 1 and r.last_error]
            return found or None

        [row] = await eventually(tried, what="a failed attempt")
    assert row.status is NotificationStatus.PENDING and row.last_status_code is None
    assert "ConnectError" in (row.last_error or "")
    assert (row.next_attempt_at - row.created_at).total_seconds() >= 59  # backoff, not a loop


async def test_a_hanging_receiver_never_slows_a_resolution(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving(["hang"] * 5) as receiver:
        target = {"name": "slow", "url": receiver.url, "timeout_s": 30}
        async with running(_notifier(db, target)):
            cp = await start(service, worker)
            await eventually(lambda: receiver.arrived >= 1, what="the request to hang")
            began = time.monotonic()
            await service.resolve(cp.id, Decision(action="approve"), actor="ana")
            took = time.monotonic() - began
            await worker.run_until_idle()
            review = (await service.get_workflow(cp.workflow_id)).pending_checkpoint
            assert review is not None
            await eventually(lambda: receiver.arrived >= 2, what="the second notification")
            receiver.release()
    assert took < 1.0, took


async def test_each_event_is_queued_once_per_target_whatever_is_replayed(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    """A restart reads the log again from its stored cursor: nothing is queued twice,
    and a row already delivered is not sent again."""
    with receiving() as receiver:
        targets = [{"name": "a", "url": receiver.url}, {"name": "b", "url": receiver.url}]
        async with running(_notifier(db, *targets)):
            cp = await start(service, worker)
            await delivered(db, 2)
        log = await db.read(lambda c: queries.events_after(c, after=0, limit=1000))
        again = _notifier(db, *targets)
        assert await again.queue(log) == 0  # a full replay adds nothing
        async with running(again):  # a restart: from the stored cursor
            await service.resolve(cp.id, Decision(action="approve"), actor="ana")
            await worker.run_until_idle()
            await delivered(db, 4)
            await asyncio.sleep(0.3)  # a resend would come within a few polls
    assert sorted(receiver.by_delivery().values()) == [1, 1, 1, 1]
    per_event = {(r.target, r.event_id) for r in await rows(db)}
    assert len(per_event) == 4


async def test_events_from_before_the_first_start_are_not_sent(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    await start(service, worker)  # no notifier yet
    with receiving() as receiver:
        async with running(_notifier(db, {"name": "ops", "url": receiver.url})):
            await start(service, worker, name="after")
            [row] = await delivered(db, 1)
    assert row.payload["workflow"]["name"] == "after" and len(receiver.received) == 1


async def test_subscriptions_choose_the_events_and_slack_gets_text_and_blocks(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving() as receiver:
        targets = [
            {"name": "chat", "url": receiver.url, "format": "slack", "secret": None},
            {"name": "done", "url": receiver.url, "events": ["workflow_cancelled"]},
        ]
        async with running(_notifier(db, *targets)):
            cp = await start(service, worker, name="<!channel> ship it")
            await delivered(db, 1)
            await service.cancel(cp.workflow_id, actor="ana")
            found = await delivered(db, 2)
    kinds = {(r.target, r.kind) for r in found}
    assert kinds == {
        ("chat", NotificationKind.CHECKPOINT_PENDING),
        ("done", NotificationKind.WORKFLOW_CANCELLED),
    }
    slack = next(
        r for r in receiver.received if r.headers["x-orchestra-event"] == "checkpoint_pending"
    )
    assert "x-orchestra-signature" not in slack.headers  # no secret configured
    body = slack.json
    assert set(body) == {"text", "blocks"}
    assert "&lt;!channel&gt; ship it" in body["text"] and "<!channel>" not in body["text"]
    [section] = body["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert section["accessory"]["type"] == "button"
    assert section["accessory"]["url"] == f"{LINK}/workflows/{cp.workflow_id}#decide"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_notifiers_on_postgres_send_each_row_once(
    service: Orchestra, worker: Worker, db: Database, db_url: str
) -> None:
    other = Database(db_url)
    try:
        with receiving() as receiver:
            target = {"name": "ops", "url": receiver.url}
            async with running(_notifier(db, target), _notifier(other, target)):
                for n in range(6):
                    await start(service, worker, name=f"wf{n}")
                await delivered(db, 6)
                await asyncio.sleep(0.3)
        assert sorted(receiver.by_delivery().values()) == [1] * 6
        count = await db.read(
            lambda c: c.execute(select(func.count()).select_from(notifications)).scalar()
        )
        assert count == 6
    finally:
        other.close()


async def test_an_idle_outbox_costs_no_write(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Looking for due rows is a read; only a row that is due makes a claim (a write,
    which on SQLite takes the one write lock)."""
    writes = 0
    real_write = db.write

    async def counted(fn: Any) -> Any:
        nonlocal writes
        writes += 1
        return await real_write(fn)

    monkeypatch.setattr(db, "write", counted)
    with receiving() as receiver:
        async with running(_notifier(db, {"name": "ops", "url": receiver.url})):
            started = writes  # the cursor row
            await asyncio.sleep(0.5)  # ten polls
            assert writes == started


async def test_a_huge_answer_is_not_downloaded_and_the_error_kept_is_short(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving(["huge"]) as receiver:
        async with running(_notifier(db, {"name": "ops", "url": receiver.url})):
            await start(service, worker)
            [row] = await delivered(db, 1)  # the retry got a 200
            [first] = receiver.received[:1]
            assert first.delivery == row.id
    assert receiver.sent_bytes < 16 << 20  # the client hung up after 4 KB (+ buffers)
    assert row.attempts == 2


async def test_the_last_error_of_a_huge_answer_is_bounded(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving(["huge"]) as receiver:
        target = {"name": "ops", "url": receiver.url, "max_attempts": 1}
        async with running(_notifier(db, target)):
            await start(service, worker)

            [row] = await given_up(db)
    assert row.last_status_code == 500
    assert row.last_error is not None and len(row.last_error) <= outbox.MAX_ERROR_CHARS
    assert row.last_error.startswith("HTTP 500: xxx")
