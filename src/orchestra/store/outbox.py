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

import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from orchestra.domain.errors import Conflict, InvalidInput, NotFound
from orchestra.domain.models import (
    MAX_NOTIFICATIONS_LISTED,
    Notification,
    NotificationAttempt,
    NotificationDetail,
    NotificationsPruned,
)
from orchestra.domain.statuses import NotificationStatus
from orchestra.store.db import Tx
from orchestra.store.queries import RowMap
from orchestra.store.schema import (
    checkpoints,
    decision_links,
    notification_attempts,
    notification_cursor,
    notifications,
    workflows,
)

#: The name of the one cursor row.
_LOG = "log"
MAX_LIST = MAX_NOTIFICATIONS_LISTED
#: What of a receiver's answer or error is kept in ``last_error``.
MAX_ERROR_CHARS = 500


def new_id() -> str:
    return secrets.token_hex(16)


def _ignoring_duplicates(dialect: str, table: Table, *unique: str) -> Insert:
    """INSERT … ON CONFLICT (unique) DO NOTHING in the dialect's spelling."""
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt: Insert = module.insert(table).on_conflict_do_nothing(index_elements=list(unique))
    return stmt


_DIALECTS = ("postgresql", "sqlite")
_INSERT = {d: _ignoring_duplicates(d, notifications, "target", "event_id") for d in _DIALECTS}
#: An attempt is recorded once (a retried write of the same outcome adds nothing).
_INSERT_ATTEMPT = {
    d: _ignoring_duplicates(d, notification_attempts, "notification_id", "attempt")
    for d in _DIALECTS
}
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
    started_at: datetime,
    duration_ms: int,
) -> bool:
    """Record what the attempt numbered ``attempts`` got: always in the attempts'
    history (the request was made), and on the row unless it moved on meanwhile
    (another process claimed it again after the lease ran out: then False)."""
    kept = error[:MAX_ERROR_CHARS] if error else None
    tx.conn.execute(
        _INSERT_ATTEMPT[tx.conn.dialect.name],
        {
            "id": new_id(),
            "notification_id": row_id,
            "attempt": attempts,
            "started_at": started_at,
            "duration_ms": max(0, duration_ms),
            "status_code": status_code,
            "error": kept,
        },
    )
    params = {
        "_id": row_id,
        "_attempts": attempts,
        "_status": status.value,
        "_next_at": next_attempt_at,
        "_error": kept,
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


# -- admin: one row, requeue, prune -----------------------------------------------

_HEX_PREFIX = re.compile(r"[0-9a-f]{4,32}")
#: Matches listed when a short id is ambiguous.
MAX_PREFIX_MATCHES = 10
#: Ids deleted per statement (bound parameters stay few).
PRUNE_CHUNK = 500
#: What ``prune`` removes: rows that will not be sent again.
FINISHED = (NotificationStatus.DELIVERED.value, NotificationStatus.FAILED.value)


def full_id(conn: Connection, given: str) -> str:
    """The id of the notification whose id is ``given`` or starts with it (4+ hex
    digits, as the CLI shows them); unknown → :class:`NotFound`, ambiguous → bad input."""
    wanted = given.strip().lower()
    if not _HEX_PREFIX.fullmatch(wanted):
        raise InvalidInput(
            f"notification id {given[:40]!r} must be 4 to 32 hex digits (a full id or its start)",
            details={"field": "notification_id"},
        )
    q = (
        select(notifications.c.id)
        .where(notifications.c.id.startswith(wanted, autoescape=True))
        .order_by(notifications.c.id)
        .limit(MAX_PREFIX_MATCHES + 1)
    )
    found = [str(r[0]) for r in conn.execute(q)]
    if not found:
        raise NotFound(f"no notification id starts with {wanted!r}")
    if len(found) > 1:
        raise InvalidInput(
            f"{wanted!r} is the start of several notification ids; give more digits",
            details={"field": "notification_id", "matches": found[:MAX_PREFIX_MATCHES]},
        )
    return found[0]


def get_notification(conn: Connection, given: str) -> NotificationDetail:
    """One row (by id or unique prefix) with its delivery attempts, oldest first."""
    row_id = full_id(conn, given)
    row = conn.execute(select(notifications).where(notifications.c.id == row_id)).one()
    tried = conn.execute(
        select(notification_attempts)
        .where(notification_attempts.c.notification_id == row_id)
        .order_by(notification_attempts.c.attempt)
    )
    made = [
        NotificationAttempt(**{k: r._mapping[k] for k in NotificationAttempt.model_fields})
        for r in tried
    ]
    fields = {name: row._mapping[name] for name in Notification.model_fields}
    return NotificationDetail(**fields, delivery_attempts=made)


def requeue_txn(tx: Tx, given: str) -> Notification:
    """A failed row back to pending, due now (its attempts and their history kept:
    the next attempt is numbered after them and, at ``max_attempts`` already, is its
    last unless requeued again). Delivered or pending rows: :class:`Conflict`."""
    row_id = full_id(tx.conn, given)
    # Admin statements are built per call: the connection's own path, not the
    # store's cache of prebuilt hot statements.
    done = tx.conn.execute(
        update(notifications)
        .where(
            notifications.c.id == row_id,
            notifications.c.status == NotificationStatus.FAILED.value,
        )
        .values(status=NotificationStatus.PENDING.value, next_attempt_at=tx.now)
    ).rowcount
    found = [
        dict(r._mapping)
        for r in tx.conn.execute(select(notifications).where(notifications.c.id == row_id))
    ]
    if not found:  # pruned meanwhile
        raise NotFound(f"notification {row_id} is gone (pruned)")
    row = found[0]
    if done != 1:
        status = row["status"]
        why = (
            "it was delivered"
            if status == NotificationStatus.DELIVERED.value
            else f"it is already {status} (due at {row['next_attempt_at'].isoformat()})"
        )
        raise Conflict(
            f"notification {row_id} cannot be requeued: {why}; only failed ones can",
            details={"status": status},
        )
    return to_notification(row)


_FINISHED_BEFORE = select(notifications.c.id).where(
    notifications.c.status.in_(FINISHED), notifications.c.created_at < bindparam("before")
)
_DELETE_ATTEMPTS = delete(notification_attempts).where(
    notification_attempts.c.notification_id.in_(bindparam("ids", expanding=True))
)
_DELETE_ROWS = delete(notifications).where(notifications.c.id.in_(bindparam("ids", expanding=True)))


def prune_txn(tx: Tx, older_than: datetime) -> NotificationsPruned:
    """Delete the delivered and failed rows created before ``older_than`` with their
    attempts, and the decision links that expired before it. The rows are locked
    first, so none is requeued between its attempts' delete and its own."""
    ids = [str(r["id"]) for r in tx.fetch_locked(_FINISHED_BEFORE, {"before": older_than})]
    attempts = rows = 0
    for start in range(0, len(ids), PRUNE_CHUNK):
        chunk = {"ids": ids[start : start + PRUNE_CHUNK]}
        attempts += tx.conn.execute(_DELETE_ATTEMPTS, chunk).rowcount
        rows += tx.conn.execute(_DELETE_ROWS, chunk).rowcount
    expired = delete(decision_links).where(decision_links.c.expires_at < older_than)
    links = tx.conn.execute(expired).rowcount
    return NotificationsPruned(deleted=rows, attempts_deleted=attempts, links_deleted=links)
