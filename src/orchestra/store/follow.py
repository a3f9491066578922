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

A carried batch is taken only as far as its ids continue the cursor without a
hole (``cursor + 1``, ``cursor + 2``, …): on PostgreSQL another transaction may
still hold an id in between, and a read of the log settles that (see
:mod:`orchestra.store.settled`); reads take only the settled part of the log.

Given a ``workflow_id``, the follower yields only that workflow's events (``orchestra
watch``), but its cursor still walks the whole log: the rings of other workflows'
commits move it on without a read, and a read asks the database for the workflow's
rows up to where the log is settled, and moves the cursor there.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncGenerator, Sequence

from sqlalchemy import Connection

from orchestra.domain.models import Event
from orchestra.store import settled
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
            run = 0
            while run < len(fresh) and fresh[run].id == self.cursor + 1 + run:
                run += 1
            if run < len(fresh):  # someone else wrote in between, or still writes
                must_read = True
            if run:
                taken += self._mine(fresh[:run])
                self.cursor = fresh[run - 1].id
        return taken, must_read

    def _mine(self, events: list[Event]) -> list[Event]:
        if self.workflow_id is None:
            return events
        return [e for e in events if e.workflow_id == self.workflow_id]

    def _read(self, conn: Connection) -> settled.Settled:
        """The settled events after the cursor (a page of the log)."""
        return settled.read(conn, after=self.cursor, limit=self.page, workflow_id=self.workflow_id)

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
                    found = await self.db.read(self._read)
                    self.cursor = found.cursor
                    self.reads += 1
                    if found.events:
                        yield found.events
                    must_read = found.more
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
