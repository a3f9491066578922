"""The doorbell: an in-process "look again" signal, rung after commits.

A ring may carry the events its commit appended, ids and all, when the commit
was this process's own. A follower of the log whose
cursor sits right before them takes them without reading; any other ring means
"something committed, read the log after your cursor", so a missed or empty-handed
ring costs latency, never an event. See :mod:`orchestra.store.follow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from orchestra.domain.models import Event

log = logging.getLogger(__name__)

#: Called on the loop with each ring's events (``None``: unknown, read the log).
Listener = Callable[[Sequence[Event] | None], None]


class Doorbell:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._listeners: list[Listener] = []
        #: Bumped by every ring, so a waiter can tell it missed one.
        self.generation = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop this bell rings on (None until bound)."""
        return self._loop

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the event loop that waits on this bell (the first one wins
        until it closes)."""
        if self._loop is not loop and (self._loop is None or self._loop.is_closed()):
            self._loop = loop
            self._event = asyncio.Event()

    @property
    def listening(self) -> bool:
        """Whether anyone listens for what rings carry (else they need carry nothing)."""
        return bool(self._listeners)

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Hear every ring with what it carries; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def ring_threadsafe(self, events: Sequence[Event] | None = None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed between check and call
                loop.call_soon_threadsafe(self.ring, events)

    def ring(self, events: Sequence[Event] | None = None) -> None:
        """Say that something committed; ``events``, when given, are exactly the rows
        that commit appended, in id order (an empty list: it appended none)."""
        self.generation += 1
        for listener in list(self._listeners):
            try:
                listener(events)
            except Exception:  # one listener's failure must not silence the bell
                log.exception("a doorbell listener failed")
        if self._event is not None:
            self._event.set()
            self._event = asyncio.Event()

    async def wait(self, timeout: float, since: int | None = None) -> bool:
        """Wait for a ring, at most ``timeout`` seconds; True if it rang.

        With ``since`` (a generation read earlier), return at once if the bell
        rang after that reading.
        """
        if since is not None and self.generation != since:
            return True
        if self._event is None:
            self.bind(asyncio.get_running_loop())
        assert self._event is not None
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        return True
