"""What an admin does with the outbox, for the API and the local CLI alike: read
one notification with its attempts, requeue a failed one, prune finished ones.
Each change is logged with who made it (the outbox has no event log of its own)."""

from __future__ import annotations

import logging
from datetime import timedelta

from orchestra.domain.durations import parse_duration
from orchestra.domain.models import Notification, NotificationDetail, NotificationsPruned
from orchestra.store import outbox
from orchestra.store.db import Database, utcnow

log = logging.getLogger(__name__)

#: ``prune`` keeps at least the last hour (a typo such as ``1s`` cannot empty the outbox
#: of rows an admin is looking at) and takes at most ten years.
PRUNE_MIN = timedelta(hours=1)


async def notification(db: Database, notification_id: str) -> NotificationDetail:
    return await db.read(lambda conn: outbox.get_notification(conn, notification_id))


async def requeue(db: Database, notification_id: str, *, actor: str) -> Notification:
    """A failed notification back to pending, due now (Conflict: not failed)."""
    row = await db.write(lambda tx: outbox.requeue_txn(tx, notification_id))
    log.info("notification %s to %s requeued by %s", row.id, row.target, actor)
    return row


async def prune(db: Database, older_than: object, *, actor: str) -> NotificationsPruned:
    """Delete delivered and failed notifications older than ``older_than`` (``30d``)."""
    age = parse_duration(older_than, field="older_than", minimum=PRUNE_MIN)
    cutoff = utcnow() - age
    done = await db.write(lambda tx: outbox.prune_txn(tx, cutoff))
    log.info(
        "notifications older than %s pruned by %s: %d rows, %d attempts, %d links",
        older_than,
        actor,
        done.deleted,
        done.attempts_deleted,
        done.links_deleted,
    )
    return done
