"""What admins see and do with the outbox, on both databases, against a real local
receiver: every delivery attempt recorded with its outcome, a failed notification
requeued and delivered, finished ones pruned (pending ones never), and decision
links minted per attempt with only their hash stored."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from orchestra.domain.errors import Conflict, InvalidInput, NotFound
from orchestra.domain.statuses import CheckpointStatus, NotificationStatus
from orchestra.engine.runner import Worker
from orchestra.notifications import admin
from orchestra.service import Orchestra
from orchestra.store import links
from orchestra.store.db import Database, Tx, utcnow
from orchestra.store.links import LinkState
from orchestra.store.outbox import MAX_ERROR_CHARS
from orchestra.store.schema import decision_links, notification_attempts, notifications
from tests.support.engine import snapshot, start
from tests.support.notifier import LINK, delivered, given_up, make_notifier, rows, running
from tests.support.receiver import receiving
from tests.support.waiting import eventually


async def test_each_attempt_is_recorded_with_its_status_error_and_timing(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving([500, 503]) as receiver:
        async with running(make_notifier(db, {"name": "ops", "url": receiver.url})):
            await start(service, worker)
            [row] = await delivered(db, 1)
    shown = await admin.notification(db, row.id)
    assert shown.status is NotificationStatus.DELIVERED and shown.attempts == 3
    got = [(a.attempt, a.status_code, a.error) for a in shown.delivery_attempts]
    assert got == [(1, 500, "HTTP 500: no"), (2, 503, "HTTP 503: no"), (3, 200, None)]
    starts = [a.started_at for a in shown.delivery_attempts]
    assert starts == sorted(starts) and starts[0] >= row.created_at
    assert all(a.duration_ms is not None and a.duration_ms >= 0 for a in shown.delivery_attempts)
    # A short id (as the CLI shows) finds the same row.
    assert (await admin.notification(db, row.id[:8])).id == row.id


async def test_an_unreachable_receivers_error_is_kept_per_attempt_and_bounded(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving(["huge", "huge"]) as receiver:
        target = {"name": "ops", "url": receiver.url, "max_attempts": 2}
        async with running(make_notifier(db, target)):
            await start(service, worker)
            [row] = await given_up(db)
    shown = await admin.notification(db, row.id)
    assert [a.status_code for a in shown.delivery_attempts] == [500, 500]
    for attempt in shown.delivery_attempts:
        assert attempt.error is not None and attempt.error.startswith("HTTP 500: xxx")
        assert len(attempt.error) <= MAX_ERROR_CHARS


async def test_a_failed_notification_is_requeued_and_delivered_keeping_its_attempts(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving([500]) as receiver:
        target = {"name": "ops", "url": receiver.url, "max_attempts": 1}
        async with running(make_notifier(db, target)):
            await start(service, worker)
            [failed] = await given_up(db)
            requeued = await admin.requeue(db, failed.id, actor="root")
            assert requeued.status is NotificationStatus.PENDING
            assert requeued.attempts == 1 and requeued.next_attempt_at >= failed.next_attempt_at
            [row] = await delivered(db, 1)
    assert row.id == failed.id and receiver.by_delivery() == {row.id: 2}
    shown = await admin.notification(db, row.id)
    assert [(a.attempt, a.status_code) for a in shown.delivery_attempts] == [(1, 500), (2, 200)]
    with pytest.raises(Conflict, match="delivered"):
        await admin.requeue(db, row.id, actor="root")


async def test_requeue_refuses_pending_unknown_and_malformed_ids_and_changes_nothing(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving() as receiver:
        url = receiver.url  # gone after this block: every attempt fails, backing off
    notifier = make_notifier(db, {"name": "gone", "url": url}, base_s=60)
    async with running(notifier):
        await start(service, worker)

        async def tried() -> bool:
            found = await rows(db)
            return bool(found) and found[0].attempts == 1 and found[0].last_error is not None

        await eventually(tried, what="a failed attempt")
    [row] = await rows(db)
    before = await snapshot(db)
    with pytest.raises(Conflict, match="already pending"):
        await admin.requeue(db, row.id, actor="root")
    with pytest.raises(NotFound):
        await admin.requeue(db, "0" * 32, actor="root")
    for bad in ("", "xyz", "a" * 33, "../etc", "%"):
        with pytest.raises(InvalidInput, match="hex digits"):
            await admin.requeue(db, bad, actor="root")
    assert await snapshot(db) == before


async def test_prune_deletes_old_finished_rows_with_their_attempts_and_keeps_pending_ones(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving([500, 500]) as receiver:  # each target's first attempt fails
        targets = [
            {"name": "ok", "url": receiver.url},
            {"name": "bad", "url": receiver.url, "max_attempts": 1},
        ]
        async with running(make_notifier(db, *targets)):
            cp = await start(service, worker, name="old")
            await delivered(db, 1)
            await given_up(db)
    # One more for another target, queued and never sent: pending.
    history = await service.history(cp.workflow_id)
    await make_notifier(db, {"name": "later", "url": receiver.url}).queue(history.events)
    long_ago = utcnow() - timedelta(days=40)

    def age_all(tx: Tx) -> None:
        tx.execute(update(notifications).values(created_at=long_ago), {})

    await db.write(age_all)
    assert (await admin.prune(db, "60d", actor="root")).deleted == 0  # not old enough
    done = await admin.prune(db, "30d", actor="root")
    assert (done.deleted, done.attempts_deleted) == (2, 3)
    left = await db.read(
        lambda c: c.execute(select(notifications.c.target, notifications.c.status)).all()
    )
    assert [tuple(r) for r in left] == [("later", NotificationStatus.PENDING.value)]
    assert await db.read(lambda c: c.execute(select(notification_attempts)).all()) == []


async def test_prune_refuses_bad_ages_and_changes_nothing(db: Database) -> None:
    before = await snapshot(db)
    for bad in ("30", "thirty days", "1s", "59m", "0d", "99999999d", "3" * 10_000, None, 30):
        with pytest.raises(InvalidInput, match="older_than"):
            await admin.prune(db, bad, actor="root")
    assert await snapshot(db) == before


async def test_with_decision_links_each_attempt_gets_its_own_link_and_only_hashes_are_stored(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    with receiving([500]) as receiver:
        notifier = make_notifier(
            db, {"name": "ops", "url": receiver.url}, link_ttl=timedelta(hours=24)
        )
        async with running(notifier):
            cp = await start(service, worker)
            [row] = await delivered(db, 1)
    sent = [r.json["link"] for r in receiver.received]
    assert len(sent) == 2 and sent[0] != sent[1]
    tokens = [link.removeprefix(f"{LINK}/d/") for link in sent]
    assert all(links.looks_like_token(t) for t in tokens)
    # The outbox keeps the plain link; the tokens are nowhere in the database.
    assert row.payload["link"] == f"{LINK}/workflows/{cp.workflow_id}#decide"
    dump = repr(await snapshot(db))
    assert not any(t in dump for t in tokens)
    stored = await db.read(lambda c: c.execute(select(decision_links)).all())
    assert {r.id for r in stored} == {hashlib.sha256(t.encode()).hexdigest() for t in tokens}
    assert {(r.checkpoint_id, r.target) for r in stored} == {(cp.id, "ops")}
    assert all(
        timedelta(hours=23) < r.expires_at - r.created_at <= timedelta(hours=24) for r in stored
    )


async def test_a_link_opens_once_then_says_used_and_an_expired_one_says_expired(
    service: Orchestra, worker: Worker, db: Database
) -> None:
    cp = await start(service, worker)
    fresh = await db.write(lambda tx: links.create_link_txn(tx, cp.id, "ops", timedelta(hours=1)))
    old = await db.write(lambda tx: links.create_link_txn(tx, cp.id, "ops", timedelta(hours=1)))

    def expire(tx: Tx) -> None:
        digest = hashlib.sha256(old.encode()).hexdigest()
        tx.execute(
            update(decision_links)
            .where(decision_links.c.id == digest)
            .values(expires_at=utcnow() - timedelta(seconds=1)),
            {},
        )

    await db.write(expire)
    opened = await links.open_link(db, fresh, "vic")
    assert opened.state is LinkState.OPENED
    assert (opened.workflow_id, opened.checkpoint_id) == (cp.workflow_id, cp.id)
    assert (await links.open_link(db, fresh, "ana")).state is LinkState.USED
    assert (await links.open_link(db, old, "vic")).state is LinkState.EXPIRED
    assert (await links.open_link(db, fresh[:-1] + "A", "vic")).state is LinkState.UNKNOWN
    [used] = await db.read(
        lambda c: c.execute(
            select(decision_links).where(decision_links.c.used_at.is_not(None))
        ).all()
    )
    assert used.used_by == "vic"  # the first to open it
    # Opening a link decided nothing.
    assert (await service.get_checkpoint(cp.id)).status is CheckpointStatus.PENDING
