"""Following the event log: every event after a cursor, in id order, none skipped.

The log is the truth; this is only the cheapest way to keep up with it. This
process's commits ring the doorbell with the events they appended: when they
start right after the follower's cursor they are taken as they are, with no
read (a ring carrying an empty list: that commit appended no events).
Anything else sends the follower to the log — a ring that does not say what
it carries (another process's commit, heard over Postgres ``LISTEN``), a gap
(another process wrote in between, or this process's Postgres commits rang out
of order), too many rings queued, or ``poll_s`` since its last read (another
process may write the same SQLite file without ringing this one's bell, so
rings alone never postpone that read).

This is exact because event ids are handed out in commit order (see
:mod:`orchestra.store.db`): a carried batch that starts at ``cursor + 1``
leaves nothing committed between them.

Given a ``workflow_id``, the follower yields only that workflow's events (``orchestra
watch``), but its cursor still walks the whole log: the rings of other workflows'
commits move it on without a read, and a read asks the database for the workflow's
rows only, then moves the cursor to the log's end as it was before that query (every
id up to there had committed, so its rows were visible to the query).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncGenerator, Sequence

from sqlalchemy import Connection

from orchestra.domain.models import Event
from orchestra.store import queries
from orchestra.store.db import Database

#: Rings queued unread beyond this are dropped: the follower reads the log instead.
_MAX_QUEUED = 10_000


class LogFollower:
    """An async iterator of event batches after ``after``: every workflow's, or
    ``workflow_id``'s only."""

    def __init__(
        self,
        db: Database,
        after: int,
        *,
        workflow_id: str | None = None,
        poll_s: float = 1.0,
        page: int = 1000,
    ) -> None:
        self.db = db
        #: Every event of the log up to here has been seen (yielded, or not the workflow's).
        self.cursor = after
        self.workflow_id = workflow_id
        self.poll_s = poll_s
        self.page = page
        #: How many times it read the log (including reads that found nothing).
        self.reads = 0
        self._rung: collections.deque[Sequence[Event] | None] = collections.deque()

    def _heard(self, events: Sequence[Event] | None) -> None:
        if len(self._rung) >= _MAX_QUEUED:
            self._rung.clear()
            events = None
        self._rung.append(events)

    def _take_rung(self) -> tuple[list[Event], bool]:
        """The carried events that continue the cursor, and whether to read the log."""
        taken: list[Event] = []
        must_read = False
        while self._rung:
            events = self._rung.popleft()
            if events is None:
                must_read = True
                continue
            fresh = [e for e in events if e.id > self.cursor] if events else []
            if not fresh:
                continue
            if fresh[0].id != self.cursor + 1:  # someone else wrote in between
                must_read = True
                continue
            taken += self._mine(fresh)
            self.cursor = fresh[-1].id
        return taken, must_read

    def _mine(self, events: list[Event]) -> list[Event]:
        if self.workflow_id is None:
            return events
        return [e for e in events if e.workflow_id == self.workflow_id]

    def _read(self, conn: Connection) -> tuple[list[Event], int]:
        """The events after the cursor (a page), and the cursor after them."""
        if self.workflow_id is None:
            rows = queries.events_after(conn, after=self.cursor, limit=self.page)
            return rows, rows[-1].id if rows else self.cursor
        end = queries.last_event_id(conn)  # first: every id up to it has committed
        rows = queries.events_after(
            conn, workflow_id=self.workflow_id, after=self.cursor, limit=self.page
        )
        if len(rows) == self.page:  # more to come: continue from the last one
            return rows, rows[-1].id
        return rows, max(end, rows[-1].id if rows else self.cursor)

    async def batches(self) -> AsyncGenerator[list[Event]]:
        """Yield the events after the cursor as they commit, for ever (cancel to stop).
        Read errors propagate; the cursor stays at the last event yielded."""
        bell = self.db.doorbell
        clock = asyncio.get_running_loop().time
        stop_listening = bell.listen(self._heard)
        try:
            must_read, last_read = True, 0.0
            while True:
                seen = bell.generation
                if must_read or clock() - last_read >= self.poll_s:
                    last_read = clock()
                    read, self.cursor = await self.db.read(self._read)
                    self.reads += 1
                    if read:
                        yield read
                    must_read = len(read) == self.page
                    if must_read:
                        continue
                taken, must_read = self._take_rung()
                if taken:
                    yield taken
                if must_read:
                    continue
                await bell.wait(max(0.0, self.poll_s - (clock() - last_read)), since=seen)
        finally:
            stop_listening()
