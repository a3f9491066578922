"""One reader of the event log per process, shared by every live stream.

The hub follows the ``events`` table (:class:`~orchestra.store.follow.LogFollower`:
the events this process commits come with the doorbell; others are read), keeps
the recent rows in memory, each encoded to JSON once, and wakes the streams. A
stream whose cursor is older than the hub's memory reads its backlog from the
database first. So a thousand subscribers cost one query per commit, not a
thousand, and every client still gets exactly the rows after its own cursor:
the rows are the message, the hub is only a cache that may be dropped at any
moment.

:class:`StreamSlots` caps how many streams are open, per principal and in all,
so one client cannot hold every connection (and the memory behind each).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from orchestra.api.errors import log_task_failure
from orchestra.domain.errors import LimitReached, OrchestraError
from orchestra.domain.models import Event
from orchestra.service import Orchestra
from orchestra.store import settled
from orchestra.store.db import Database
from orchestra.store.follow import LogFollower

log = logging.getLogger(__name__)

Observer = Callable[[list[Event]], None]


@dataclass(frozen=True, slots=True)
class Entry:
    """An event row as streams send it, encoded once for every subscriber: its JSON
    (a WebSocket message) and its Server-Sent Events frame."""

    id: int
    workflow_id: str | None
    json: str
    frame: bytes

    @classmethod
    def of(cls, event: Event) -> Entry:
        body = event.model_dump_json()
        frame = f"id: {event.id}\nevent: {event.type.value}\ndata: {body}\n\n".encode()
        return cls(event.id, event.workflow_id, body, frame)


class TooManyStreams(LimitReached):
    code = "too_many_streams"


class StreamSlot:
    """One open stream's place under the caps; :meth:`release` (idempotent) frees it."""

    def __init__(self, slots: StreamSlots, principal: str) -> None:
        self._slots: StreamSlots | None = slots
        self.principal = principal

    def release(self) -> None:
        if self._slots is not None:
            self._slots._release(self.principal)
            self._slots = None


class StreamSlots:
    """Caps on open SSE and WebSocket streams: per principal (a token's name; ``local``
    under no-auth) and overall. Taken before a stream starts, so a refusal is a plain
    429; the event loop is the only thread, so plain counters suffice."""

    def __init__(self, *, per_principal: int, total: int) -> None:
        self.per_principal = per_principal
        self.total = total
        self.open = 0
        self._by_principal: Counter[str] = Counter()

    def acquire(self, principal: str) -> StreamSlot:
        """A slot for ``principal``'s new stream, or :class:`TooManyStreams`."""
        if self.open >= self.total:
            raise TooManyStreams(
                f"the server already has {self.total} live streams open (its max_streams); "
                "try again later",
                details={"limit": self.total, "scope": "server"},
            )
        if self._by_principal[principal] >= self.per_principal:
            raise TooManyStreams(
                f"{principal} already has {self.per_principal} live streams open "
                "(max_streams_per_principal); close one before opening another",
                details={"limit": self.per_principal, "scope": "principal"},
            )
        self.open += 1
        self._by_principal[principal] += 1
        return StreamSlot(self, principal)

    def _release(self, principal: str) -> None:
        self.open -= 1
        self._by_principal[principal] -= 1
        if self._by_principal[principal] <= 0:
            del self._by_principal[principal]


class EventHub:
    def __init__(
        self,
        db: Database,
        *,
        poll_s: float = 1.0,
        capacity: int = 20_000,
        page: int = 1000,
        max_streams: int = 1000,
        max_streams_per_principal: int = 20,
    ) -> None:
        self.db = db
        self.slots = StreamSlots(per_principal=max_streams_per_principal, total=max_streams)
        self.poll_s = poll_s
        self.capacity = capacity
        self.page = page
        #: The buffer holds every event with base < id <= cursor.
        self.base = 0
        self.cursor = 0
        self._ids: list[int] = []
        self._entries: list[Entry] = []
        self._changed = asyncio.Event()
        self._observers: list[Observer] = []
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        self.subscribers = 0

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self.base = self.cursor = await self.db.read(settled.end)
        self._task = asyncio.create_task(self._tail(), name="event-hub")
        self._task.add_done_callback(
            log_task_failure("the event hub stopped; live streams get no new events")
        )

    def position(self) -> int | None:
        """Where a live view may start: every event up to it has committed and is in
        the log for good (the hub only moves over the settled part of the log), so a
        page that takes this before its reads and follows the events after it misses
        nothing. None until the hub has started. Cheaper than asking the database
        (on PostgreSQL that waits for the transactions in flight)."""
        return self.cursor if self._task is not None else None

    def close_streams(self) -> None:
        """End every open stream (server shutdown): clients reconnect elsewhere or later."""
        self.closing = True
        self._wake()

    async def stop(self) -> None:
        self.close_streams()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def observe(self, observer: Observer) -> None:
        """Call ``observer`` with each batch of new events (metrics)."""
        self._observers.append(observer)

    # -- tailing ---------------------------------------------------------------

    async def _tail(self) -> None:
        while True:
            follower = LogFollower(self.db, self.cursor, poll_s=self.poll_s, page=self.page)
            try:
                async with contextlib.aclosing(follower.batches()) as batches:
                    async for batch in batches:
                        self._append(batch)
            except OrchestraError as exc:
                log.warning("event hub: reading the log failed (%s); retrying", exc.message)
                await asyncio.sleep(self.poll_s)
            except Exception:
                # Anything else (a driver error SQLAlchemy does not map, a bug) must not
                # end the hub either: every live stream would silently stop moving.
                log.exception("event hub: following the log failed; retrying")
                await asyncio.sleep(self.poll_s)

    def _append(self, batch: list[Event]) -> None:
        for event in batch:
            self._ids.append(event.id)
            self._entries.append(Entry.of(event))
        self.cursor = batch[-1].id
        if len(self._ids) > self.capacity:
            cut = len(self._ids) - self.capacity * 3 // 4
            self.base = self._ids[cut - 1]
            del self._ids[:cut], self._entries[:cut]
        for observer in self._observers:
            observer(batch)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- following -------------------------------------------------------------

    def since(self, position: int, workflow_id: str | None) -> list[Entry]:
        """Buffered entries after ``position`` (which must be ≥ ``base``)."""
        start = bisect.bisect_right(self._ids, position)
        found = self._entries[start:]
        if workflow_id is not None:
            found = [e for e in found if e.workflow_id == workflow_id]
        return found

    async def follow(
        self,
        service: Orchestra,
        *,
        workflow_id: str | None,
        after: int,
        keepalive_s: float,
    ) -> AsyncIterator[list[Entry]]:
        """Every event after ``after``, then live ones, in batches (one write each);
        an empty batch means "send a keep-alive".

        Ends when the hub closes. Nothing is yielded twice and nothing is
        skipped: ``position`` only moves past rows that were read.
        """
        self.subscribers += 1
        position = after
        idle_since = time.monotonic()
        try:
            while not self.closing:
                changed = self._changed
                more = False
                if position >= self.base:
                    entries = self.since(position, workflow_id)
                    position = max(position, self.cursor)
                else:
                    entries, position, more = await self._backlog(service, workflow_id, position)
                if entries:
                    yield entries
                now = time.monotonic()
                if entries:
                    idle_since = now
                if entries or more or changed.is_set():
                    continue
                remaining = keepalive_s - (now - idle_since)
                if remaining <= 0:
                    yield []
                    idle_since = time.monotonic()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await changed.wait()
        finally:
            self.subscribers -= 1

    async def _backlog(
        self, service: Orchestra, workflow_id: str | None, position: int
    ) -> tuple[list[Entry], int, bool]:
        """Rows older than the buffer, from the database: (entries, new position, more?)."""
        known = self.cursor  # every row up to here committed before the read below
        limit = 500
        rows = await service.events_after(workflow_id=workflow_id, after=position, limit=limit)
        entries = [Entry.of(e) for e in rows]
        if len(rows) == limit:
            return entries, rows[-1].id, True
        last = rows[-1].id if rows else position
        return entries, max(known, last), False
