"""The notification outbox: rows queued from the event log, claimed, and finished.

Rows are queued after the commit that appended their event (never inside a
transition), once per (target, event) whatever crashes: the insert ignores a row
the unique constraint already holds. A claim is a short transaction that adds one
to ``attempts`` and pushes ``next_attempt_at`` past the request's timeout (the
claim's lease); the request is made outside any transaction, and its outcome is
written only if the row is still at the attempt that claimed it. A process killed
mid-request leaves the row pending: it is sent again, with the same id, once the
lease runs out (at least once; receivers dedupe on ``X-Orchestra-Delivery``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from orchestra.domain.errors import InvalidInput
from orchestra.domain.models import Notification
from orchestra.domain.statuses import NotificationStatus
from orchestra.store.db import Tx
from orchestra.store.queries import RowMap
from orchestra.store.schema import checkpoints, notification_cursor, notifications, workflows

#: The name of the one cursor row.
_LOG = "log"
MAX_LIST = 500
#: What of a receiver's answer or error is kept in ``last_error``.
MAX_ERROR_CHARS = 500


def new_id() -> str:
    return secrets.token_hex(16)


def _ignoring_duplicates(dialect: str) -> Insert:
    """INSERT … ON CONFLICT (target, event_id) DO NOTHING in the dialect's spelling."""
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt: Insert = module.insert(notifications).on_conflict_do_nothing(
        index_elements=["target", "event_id"]
    )
    return stmt


_INSERT = {d: _ignoring_duplicates(d) for d in ("postgresql", "sqlite")}
_CURSOR = select(notification_cursor.c.event_id).where(notification_cursor.c.name == _LOG)
_ADVANCE = (
    update(notification_cursor)
    .where(notification_cursor.c.name == _LOG, notification_cursor.c.event_id < bindparam("e"))
    .values(event_id=bindparam("e"))
)
_WORKFLOW = select(
    workflows.c.id, workflows.c.name, workflows.c.type, workflows.c.status, workflows.c.error
).where(workflows.c.id == bindparam("id"))
_CHECKPOINT = select(
    checkpoints.c.id, checkpoints.c.step_name, checkpoints.c.number, checkpoints.c.body
).where(checkpoints.c.id == bindparam("id"))
_DUE = (
    select(notifications)
    .where(
        notifications.c.status == NotificationStatus.PENDING.value,
        notifications.c.next_attempt_at <= bindparam("now"),
        notifications.c.target == bindparam("target"),
    )
    .order_by(notifications.c.next_attempt_at, notifications.c.id)
    .limit(bindparam("limit"))
)
#: The row, still pending at the attempt the caller claimed (or read): every write's guard.
_AT_ATTEMPT = update(notifications).where(
    notifications.c.id == bindparam("_id"),
    notifications.c.status == NotificationStatus.PENDING.value,
    notifications.c.attempts == bindparam("_attempts"),
)
_CLAIM = _AT_ATTEMPT.values(attempts=bindparam("_next"), next_attempt_at=bindparam("_until"))
_FINISH = _AT_ATTEMPT.values(
    status=bindparam("_status"),
    next_attempt_at=bindparam("_next_at"),
    last_error=bindparam("_error"),
    last_status_code=bindparam("_code"),
    delivered_at=bindparam("_delivered_at"),
)


_ANY_DUE = (
    select(notifications.c.id)
    .where(
        notifications.c.status == NotificationStatus.PENDING.value,
        notifications.c.next_attempt_at <= bindparam("now"),
        notifications.c.target.in_(bindparam("targets", expanding=True)),
    )
    .limit(1)
)


def any_due(conn: Connection, targets: Sequence[str], now: datetime) -> bool:
    """Whether a row of ``targets`` is due: a read, so an idle outbox costs no write."""
    return conn.execute(_ANY_DUE, {"now": now, "targets": list(targets)}).first() is not None


def start_cursor_txn(tx: Tx, log_end: int) -> int:
    """Where queueing goes on from: the stored cursor, or (first start) ``log_end``,
    stored, so that events committed before notifications were set up are not sent."""
    found = tx.fetch(_CURSOR, {})
    if found:
        return int(found[0]["event_id"])
    tx.execute(insert(notification_cursor), {"name": _LOG, "event_id": log_end})
    return log_end


def context_txn(
    tx: Tx, workflow_id: str, checkpoint_id: str | None
) -> tuple[RowMap | None, RowMap | None]:
    """The workflow row (and the checkpoint row) a notification's payload describes."""
    wf = tx.fetch(_WORKFLOW, {"id": workflow_id})
    cp = tx.fetch(_CHECKPOINT, {"id": checkpoint_id}) if checkpoint_id else []
    return (wf[0] if wf else None), (cp[0] if cp else None)


def enqueue_txn(tx: Tx, rows: Sequence[dict[str, Any]], cursor: int) -> int:
    """Queue ``rows`` (target, event_id, kind, payload), skipping any (target, event)
    already queued, and move the cursor to ``cursor``; how many were new."""
    added = 0
    if rows:
        stmt = _INSERT[tx.conn.dialect.name]
        values = [
            {
                "id": new_id(),
                "status": NotificationStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": tx.now,
                "created_at": tx.now,
                **row,
            }
            for row in rows
        ]
        for value in values:  # one by one: the row count says whether it was new
            added += max(0, int(tx.conn.execute(stmt, value).rowcount))
    tx.execute(_ADVANCE, {"e": cursor})
    return added


def claim_due_txn(
    tx: Tx, leases: dict[str, float], limit: int, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Claim up to ``limit`` due rows of the targets in ``leases`` (target → lease
    seconds): each gets attempts + 1 and its next attempt pushed past its lease.
    Postgres skips rows another process is claiming; SQLite has one writer."""
    if not leases:
        return []
    now = now or tx.now
    due = [
        row
        for target in sorted(leases)  # a few targets: one indexed query each
        for row in tx.fetch_locked(
            _DUE, {"now": now, "target": target, "limit": limit}, skip_locked=True
        )
    ]
    due.sort(key=lambda r: (r["next_attempt_at"], r["id"]))
    claimed: list[dict[str, Any]] = []
    for row in due[:limit]:
        until = now + timedelta(seconds=leases[row["target"]])
        params = {
            "_id": row["id"],
            "_attempts": row["attempts"],
            "_next": row["attempts"] + 1,
            "_until": until,
        }
        if tx.execute(_CLAIM, params) == 1:
            claimed.append({**row, "attempts": row["attempts"] + 1, "next_attempt_at": until})
    return claimed


def finish_txn(
    tx: Tx,
    row_id: str,
    attempts: int,
    *,
    status: NotificationStatus,
    next_attempt_at: datetime,
    error: str | None,
    status_code: int | None,
) -> bool:
    """Record what the attempt numbered ``attempts`` got; False when the row moved on
    meanwhile (another process claimed it again after the lease ran out)."""
    params = {
        "_id": row_id,
        "_attempts": attempts,
        "_status": status.value,
        "_next_at": next_attempt_at,
        "_error": error[:MAX_ERROR_CHARS] if error else None,
        "_code": status_code,
        "_delivered_at": tx.now if status is NotificationStatus.DELIVERED else None,
    }
    return tx.execute(_FINISH, params) == 1


def to_notification(row: RowMap) -> Notification:
    return Notification(**{name: row[name] for name in Notification.model_fields})


def list_notifications(
    conn: Connection, *, status: str | None = None, limit: int = 100
) -> list[Notification]:
    """The newest rows first (``status``: only those)."""
    if not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit must be 1 to {MAX_LIST}", details={"field": "limit"})
    q = select(notifications).order_by(
        notifications.c.created_at.desc(), notifications.c.event_id.desc()
    )
    if status is not None:
        try:
            wanted = NotificationStatus(status)
        except ValueError:
            choices = ", ".join(s.value for s in NotificationStatus)
            raise InvalidInput(
                f"unknown status {status!r}; choose one of: {choices}",
                details={"field": "status"},
            ) from None
        q = q.where(notifications.c.status == wanted.value)
    return [to_notification(dict(r._mapping)) for r in conn.execute(q.limit(limit))]


def count_by_status(conn: Connection) -> dict[str, int]:
    q = select(notifications.c.status, func.count()).group_by(notifications.c.status)
    return {str(s): int(n) for s, n in conn.execute(q)}
