"""The doorbell: an in-process "look again" signal, rung after commits.

It carries no data. Listeners re-read the event rows after their own cursor,
so a missed ring costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib


class Doorbell:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        #: Bumped by every ring, so a waiter can tell it missed one.
        self.generation = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the event loop that waits on this bell (the first one wins
        until it closes)."""
        if self._loop is not loop and (self._loop is None or self._loop.is_closed()):
            self._loop = loop
            self._event = asyncio.Event()

    def ring_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed between check and call
                loop.call_soon_threadsafe(self.ring)

    def ring(self) -> None:
        self.generation += 1
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
