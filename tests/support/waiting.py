"""Waiting on a condition, never on time: the one polling loop of the tests.

A test that needs something to have happened (a checkpoint, a row, a process gone)
asks :func:`eventually` (or :func:`eventually_sync` where no event loop runs) with a
probe that says whether it has; the bound only turns a hang into a failure, so it is
generous and no test depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar, cast

T = TypeVar("T")

#: Long enough for a loaded machine; only a hang should ever reach it.
TIMEOUT_S = 20.0
EVERY_S = 0.05


def _tries(timeout_s: float) -> Iterator[None]:
    """One per attempt: the first at once, then while ``timeout_s`` has not passed."""
    deadline = time.monotonic() + timeout_s
    yield
    while time.monotonic() <= deadline:
        yield


def _timed_out(what: str, timeout_s: float) -> AssertionError:
    return AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


async def eventually(
    probe: Callable[[], Awaitable[T | None] | T | None],
    *,
    what: str,
    timeout_s: float = TIMEOUT_S,
    every_s: float = EVERY_S,
) -> T:
    """Call ``probe`` (plain or async) until it returns something truthy, and return
    that; fail naming ``what`` after ``timeout_s``. The probe may raise to fail at once."""
    for _ in _tries(timeout_s):
        found = probe()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return cast(T, found)
        await asyncio.sleep(every_s)
    raise _timed_out(what, timeout_s)


def eventually_sync(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout_s: float = TIMEOUT_S,
    every_s: float = EVERY_S,
) -> T:
    """:func:`eventually` for code without an event loop (fixtures that start servers,
    synchronous HTTP clients)."""
    for _ in _tries(timeout_s):
        found = probe()
        if found:
            return found
        time.sleep(every_s)
    raise _timed_out(what, timeout_s)
