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
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncGenerator, Sequence
from functools import partial

from orchestra.domain.models import Event
from orchestra.store import queries
from orchestra.store.db import Database

#: Rings queued unread beyond this are dropped: the follower reads the log instead.
_MAX_QUEUED = 10_000


class LogFollower:
    """An async iterator of event batches after ``after`` (all workflows)."""

    def __init__(self, db: Database, after: int, *, poll_s: float = 1.0, page: int = 1000) -> None:
        self.db = db
        self.cursor = after
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
            taken += fresh
            self.cursor = fresh[-1].id
        return taken, must_read

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
                    read = await self.db.read(
                        partial(queries.events_after, after=self.cursor, limit=self.page)
                    )
                    self.reads += 1
                    if read:
                        self.cursor = read[-1].id
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
