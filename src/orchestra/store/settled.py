"""The settled part of the event log: the events after a cursor that can no longer change.

A reader's cursor must never pass an event that is still to commit. On SQLite
that is free: one writer holds the database, so ids are handed out in commit
order and the largest visible id has nothing missing below it.

On PostgreSQL transactions commit side by side, with no lock between them, so
ids from the sequence may become visible out of order: a transaction holding
id 11 can commit after another's 12. A reader that sees 10 and 12 has a *hole*
at 11, and cannot tell from the rows whether 11 is on its way (its transaction
is in flight) or never will be (it rolled back). Every transaction that could
hold 11 took it before 12 was taken, so it was running when the snapshot that
saw 12 was taken: once every transaction running then has ended, whatever is
still missing below 12 is missing for good. A writer takes its transaction id
before its event ids (see ``PostgresTx.flush_events``), so "running then" is a
question about transaction ids, which snapshots answer (:func:`_ended`).

Readers here therefore take the run of ids after the cursor that has no hole,
and at a hole wait (on a database thread, briefly) for the transactions of the
snapshot that saw it. When they take longer than the wait (a long transaction
elsewhere in the cluster), only the run before the hole is settled; the
reader comes back later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, text

from orchestra.domain.models import Event
from orchestra.store import queries
from orchestra.store._fast import fetch_all
from orchestra.store.schema import events

#: How long a read waits at a hole for the transactions in flight when it was seen.
HOLE_WAIT_S = 0.5

#: One statement, so one snapshot: the snapshot and the ids after the cursor.
_SNAPSHOT_AND_IDS = text(
    "SELECT pg_current_snapshot()::text AS snap, "
    "ARRAY(SELECT id FROM events WHERE id > :after ORDER BY id LIMIT :limit) AS ids"
)
_SNAPSHOT_AND_TOP = text(
    "SELECT pg_current_snapshot()::text AS snap, (SELECT max(id) FROM events) AS top"
)
_SNAPSHOT = text("SELECT pg_current_snapshot()::text")
_TAKE_ID = text("SELECT pg_current_xact_id()::text")
_BACK = 1000
_IDS_BETWEEN = (
    select(events.c.id)
    .where(events.c.id > bindparam("after"), events.c.id <= bindparam("upto"))
    .order_by(events.c.id)
)
_EVENTS_BETWEEN = (
    select(events)
    .where(events.c.id > bindparam("after"), events.c.id <= bindparam("upto"))
    .order_by(events.c.id)
)
_WORKFLOW_EVENTS_BETWEEN = _EVENTS_BETWEEN.where(events.c.workflow_id == bindparam("wid"))


@dataclass(frozen=True)
class Settled:
    """What a read found: ``events`` (the workflow's only, when one was asked for)
    with ids in ``(after, cursor]``; every id up to ``cursor`` is settled. ``more``:
    the read stopped at its limit, read again at once."""

    events: list[Event]
    cursor: int
    more: bool


def read(conn: Connection, *, after: int, limit: int, workflow_id: str | None = None) -> Settled:
    """The settled events after ``after`` (at most ``limit`` ids of the log are
    looked at), and the cursor after them."""
    if conn.dialect.name != "postgresql":
        return _read_sqlite(conn, after=after, limit=limit, workflow_id=workflow_id)
    row = conn.execute(_SNAPSHOT_AND_IDS, {"after": after, "limit": limit}).one()
    ids: list[int] = list(row.ids)
    if not ids:
        return Settled([], after, False)
    end = _run_end(after, ids)
    if end != ids[-1] and _ended(conn, _Snapshot.parse(row.snap)):
        end = ids[-1]  # what is still missing up to here rolled back
    params = {"after": after, "upto": end}
    if workflow_id is None:
        rows = fetch_all(conn, _EVENTS_BETWEEN, params)
    else:
        rows = fetch_all(conn, _WORKFLOW_EVENTS_BETWEEN, {**params, "wid": workflow_id})
    more = len(ids) == limit and end == ids[-1]
    return Settled([queries.to_event(r) for r in rows], end, more)


def end(conn: Connection) -> int:
    """An id with every event up to it settled, as close to the log's end as the
    transactions in flight allow (0 for an empty log): where a live view starts.

    When those transactions outlast the wait, the end is the id before the lowest
    hole among the last ``_BACK`` ids: a writer takes its event ids just before it
    commits, so one still in flight that many ids back is taken to have failed."""
    if conn.dialect.name != "postgresql":
        return queries.last_event_id(conn)
    row = conn.execute(_SNAPSHOT_AND_TOP).one()
    top = int(row.top or 0)
    if _ended(conn, _Snapshot.parse(row.snap)):
        return top
    low = max(0, top - _BACK)
    ids = [int(i) for i in conn.execute(_IDS_BETWEEN, {"after": low, "upto": top}).scalars()]
    return _run_end(ids[0] - 1, ids) if ids else low


def _read_sqlite(conn: Connection, *, after: int, limit: int, workflow_id: str | None) -> Settled:
    # One writer: ids are commit-ordered, everything visible is settled.
    if workflow_id is None:
        rows = queries.events_after(conn, after=after, limit=limit)
        return Settled(rows, rows[-1].id if rows else after, len(rows) == limit)
    top = queries.last_event_id(conn)  # first: every id up to it has committed
    rows = queries.events_after(conn, workflow_id=workflow_id, after=after, limit=limit)
    if len(rows) == limit:
        return Settled(rows, rows[-1].id, True)
    return Settled(rows, max(top, rows[-1].id if rows else after), False)


def _run_end(after: int, ids: list[int]) -> int:
    """The last id of the run ``after + 1, after + 2, …`` at the start of ``ids``."""
    end = after
    for event_id in ids:
        if event_id != end + 1:
            break
        end = event_id
    return end


@dataclass(frozen=True)
class _Snapshot:
    """A snapshot's text (``xmin:xmax:xip,…``): every transaction id below ``xmax``
    not in ``xip`` had ended; ``xip`` and anything from ``xmax`` on may be running."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text_: str) -> _Snapshot:
        xmin, xmax, xip = text_.split(":", 2)
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))


def _ended(conn: Connection, seen: _Snapshot, wait_s: float = HOLE_WAIT_S) -> bool:
    """Wait until every transaction that may have been running at ``seen`` has
    ended (True), or ``wait_s`` passed (False).

    Those are ``seen.xip`` and any that had taken an id from ``seen.xmax`` on (a
    snapshot does not list those). A mark taken now bounds the latter: an id taken
    and given back at once on another connection (a rollback writes nothing to
    wait for), above every id taken before it; once the mark has ended, any of
    them still running is listed in a newer snapshot."""
    with conn.engine.connect() as other:
        mark = int(other.execute(_TAKE_ID).scalar_one())
        other.rollback()
    give_up = time.monotonic() + wait_s
    pause = 0.0005
    while True:
        now = _Snapshot.parse(str(conn.execute(_SNAPSHOT).scalar_one()))
        if not any(x < mark and (x in seen.xip or x >= seen.xmax) for x in now.xip):
            return True
        if time.monotonic() >= give_up:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
