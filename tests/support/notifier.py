"""A notifier against a real local receiver, and waits on the outbox: shared by the
notification tests (integration and security)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from orchestra.domain.models import Notification
from orchestra.domain.statuses import NotificationStatus
from orchestra.notifications.delivery import Backoff, Notifier
from orchestra.notifications.targets import NotifyTarget, resolve_targets
from orchestra.store import outbox
from orchestra.store.db import Database
from orchestra.store.schema import notification_cursor
from tests.support.waiting import eventually

SECRET = "s3cret-for-tests"
LINK = "https://orchestra.example.com"


def make_notifier(
    db: Database,
    *targets: dict[str, Any],
    base_s: float = 0.05,
    link_ttl: timedelta | None = None,
) -> Notifier:
    configured = [NotifyTarget.model_validate({"secret": SECRET, **t}) for t in targets]
    return Notifier(
        db,
        resolve_targets(configured),
        link_base=LINK,
        backoff=Backoff(base_s),
        poll_s=0.05,
        link_ttl=link_ttl,
    )


@contextlib.asynccontextmanager
async def running(*notifiers: Notifier) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(n.run(stop)) for n in notifiers]
    try:
        # The cursor row exists once each notifier follows the log.
        await eventually(lambda: _cursor(notifiers[0].db), what="the notifier to start")
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def _cursor(db: Database) -> bool:
    def read(conn: Any) -> bool:
        return conn.execute(select(func.count()).select_from(notification_cursor)).scalar() == 1

    return await db.read(read)


async def rows(db: Database, status: NotificationStatus | None = None) -> list[Notification]:
    return await db.read(
        lambda c: outbox.list_notifications(c, status=status.value if status else None)
    )


async def delivered(db: Database, n: int) -> list[Notification]:
    async def probe() -> list[Notification] | None:
        found = await rows(db, NotificationStatus.DELIVERED)
        return found if len(found) >= n else None

    return await eventually(probe, what=f"{n} delivered notifications")


async def given_up(db: Database) -> list[Notification]:
    async def probe() -> list[Notification] | None:
        return await rows(db, NotificationStatus.FAILED) or None

    return await eventually(probe, what="a notification to fail")
