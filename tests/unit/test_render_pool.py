"""The render pool: markdown and diffs in worker processes, bounded in size and time, with
fallbacks; the event loop keeps running while a hostile text is being rendered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from orchestra.web import render_pool
from orchestra.web.render_pool import RenderPool

SLOW = "[" * 100_000  # markdown-it needs seconds for this


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    renders = RenderPool(timeout_s=0.5)
    try:
        yield renders
    finally:
        renders.close()


async def _ticks_while(work: asyncio.Future[object]) -> float:
    """The longest gap between ticks of the loop while ``work`` runs."""
    longest, last = 0.0, time.monotonic()
    while not work.done():
        await asyncio.sleep(0.02)  # the tick whose lateness is measured
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    return longest


async def test_a_slow_text_falls_back_and_the_loop_keeps_running(pool: RenderPool) -> None:
    await pool.render(["warm up"])
    work = asyncio.ensure_future(pool.render([SLOW, "**bold**"]))
    gap = await _ticks_while(work)
    done = work.result()
    assert gap < 0.3, gap
    assert "took too long to render" in done.html[SLOW] and "<pre" in done.html[SLOW]
    assert "<strong>bold</strong>" in done.html["**bold**"]
    # The stuck worker was replaced: ordinary text renders again, the slow one is remembered.
    start = time.monotonic()
    again = await pool.render([SLOW, "# Title"])
    assert "took too long" in again.html[SLOW] and "<h4>Title</h4>" in again.html["# Title"]
    assert time.monotonic() - start < 0.5 + 30  # a restart may be slow on a busy machine


async def test_size_caps_and_diffs(pool: RenderPool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_pool, "MAX_MARKDOWN_CHARS", 10)
    done = await pool.render(["a" * 11, "<b>x</b>"], [("a\nb\n", "a\nc\n"), ("x\n" * 5_001, "")])
    assert "too large to render" in done.html["a" * 11]
    assert "&lt;b&gt;" in done.html["<b>x</b>"]
    small, big = done.diffs
    assert (small.added, small.removed, small.note) == (1, 1, "")
    assert big.changed and big.note == "too large to compare"
    slow = await pool.render(pairs=[("x\n" * 4_900, "y\n" + "x\n" * 4_900 + "z\n")])
    assert slow.diffs[0].note in ("took too long to compare", "")  # 0.5 s: usually too slow


async def test_without_workers_everything_is_plain_text(
    pool: RenderPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        return None

    monkeypatch.setattr(pool, "_ready", broken)
    done = await pool.render(["# hi"], [("a", "b")])
    assert "not available" in done.html["# hi"] and done.diffs[0].note
