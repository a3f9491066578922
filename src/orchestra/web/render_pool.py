"""Markdown and line diffs off the event loop, bounded in size and time.

Both are quadratic on crafted input (100 KB of ``[`` took markdown-it 12 s), and
the text is an agent's or a client's. So the work runs in a small pool of
worker *processes* (a thread would still hold the GIL and starve the loop),
each page's batch under one deadline; a worker still busy at the deadline is
killed and the pool started afresh. Whatever is too large, too slow or cannot
be run comes back as a fallback: markdown as escaped plain text with a note,
a diff as a note. Results (fallbacks for slow texts too) are kept in a small
LRU keyed by a hash of the input, so a live page re-rendered on every event
does not redo the work.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import multiprocessing
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from orchestra.web.code_view import FileHtml, render_file
from orchestra.web.diff import Diff, line_diff
from orchestra.web.markdown import render_markdown

log = logging.getLogger(__name__)

#: Markdown longer than this is shown as plain text without trying.
MAX_MARKDOWN_CHARS = 200_000
#: Diffs with more lines on a side, or more characters in all, are not computed.
MAX_DIFF_LINES = 5_000
MAX_DIFF_CHARS = 1_000_000
#: A file under review larger than this (patch and findings) is not shown line by line
#: (the domain cuts a patch at 200 KB).
MAX_FILE_CHARS = 1_000_000
#: One page's rendering may take this long; then the stuck worker is killed.
RENDER_TIMEOUT_S = 2.0
#: A worker pool that does not answer a ping within this long is given up on.
START_TIMEOUT_S = 30.0
WORKERS = 2
#: A job still queued at the deadline counts as too slow when its input is this large.
SLOW_QUEUED_CHARS = 10_000
CACHE_ENTRIES = 256

TOO_LARGE = "too large to render"
TOO_SLOW = "took too long to render"
UNAVAILABLE = "the renderer is not available"
BUSY = "the renderer was busy"


#: Cached in place of a result: this input took too long before, do not try it again soon.
_SLOW = object()


@dataclass(frozen=True)
class Rendered:
    """One batch's results: markdown text → HTML, the diffs in the order asked, and
    each file under review's table (or why it is not there)."""

    html: dict[str, Markup]
    diffs: list[Diff]
    files: dict[str, FileHtml | str] = field(default_factory=dict)


def plain_text(text: str, reason: str) -> Markup:
    """The fallback: ``text`` escaped in a ``<pre>``, with the reason."""
    return Markup(
        '<p class="render-note muted">Shown as plain text: {}.</p><pre class="plain">{}</pre>'
    ).format(reason, escape(text))


def diff_note(reason: str) -> Diff:
    """A diff that was not computed, saying why (the template shows the note)."""
    return Diff([], 0, 0, note=reason.replace("render", "compare"))


def _ping() -> bool:
    return True


def _context() -> Any:
    """``forkserver`` where there is one (workers fork from a warm server), else ``spawn``;
    never ``fork`` (the server has threads and open database connections)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["orchestra.web.render_pool"])
        return ctx
    return multiprocessing.get_context("spawn")


class RenderPool:
    """The worker processes of one app, started on first use."""

    def __init__(
        self,
        *,
        workers: int = WORKERS,
        timeout_s: float = RENDER_TIMEOUT_S,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.cache_entries = cache_entries
        self._executor: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[tuple[Any, str]]] = {}

    # -- public -------------------------------------------------------------------

    async def render(
        self,
        texts: Iterable[str] = (),
        pairs: Sequence[tuple[str, str]] = (),
        files: Iterable[str] = (),
    ) -> Rendered:
        """HTML for each markdown text, the line diff of each ``(old, new)`` and the
        table of each file under review (its :func:`~orchestra.web.code_view.file_spec`),
        as one batch under one deadline (fallbacks for what is too large or too slow)."""
        jobs: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {}
        file_keys = {spec: _key("file", spec) for spec in files}
        for spec, key in file_keys.items():
            if key not in self._cache and len(spec) <= MAX_FILE_CHARS:
                jobs[key] = (render_file, (spec,))
        md_keys = {text: _key("md", text) for text in texts if text}
        for text, key in md_keys.items():
            if key not in self._cache and len(text) <= MAX_MARKDOWN_CHARS:
                jobs[key] = (render_markdown, (text,))
        diff_keys = [_key("diff", old, new) for old, new in pairs]
        for key, (old, new) in zip(diff_keys, pairs, strict=True):
            if key not in self._cache and not _too_large_to_diff(old, new):
                jobs[key] = (line_diff, (old, new))
        outcomes = await self._outcomes(jobs)

        def outcome(key: str) -> tuple[Any, str]:
            if key in outcomes:
                return outcomes[key]
            cached = self._get(key)
            if cached is None:
                return None, TOO_LARGE
            return (None, TOO_SLOW) if cached is _SLOW else (cached, "")

        html = {"": Markup("")}
        for text, key in md_keys.items():
            result, reason = outcome(key)
            html[text] = Markup(result) if result is not None else plain_text(text, reason)
        diffs = []
        for key in diff_keys:
            result, reason = outcome(key)
            diffs.append(result if result is not None else diff_note(reason))
        tables: dict[str, FileHtml | str] = {}
        for spec, key in file_keys.items():
            result, reason = outcome(key)
            tables[spec] = result if result is not None else reason
        return Rendered(html, diffs, tables)

    async def _outcomes(
        self, jobs: dict[str, tuple[Callable[..., Any], tuple[str, ...]]]
    ) -> dict[str, tuple[Any, str]]:
        """Each job's outcome; a job another page already started is waited for, not
        started again (every viewer of a live page asks for the same texts at once)."""
        fresh = {key: job for key, job in jobs.items() if key not in self._inflight}
        if fresh:
            loop = asyncio.get_running_loop()
            for key in fresh:
                self._inflight[key] = loop.create_future()
            # A task, so the outcome lands (and is cached) even if this request goes away.
            task = asyncio.ensure_future(self._run(list(fresh.values())))
            task.add_done_callback(lambda t: self._settle(list(fresh), t))
        waiting = {key: self._inflight[key] for key in jobs}
        return {key: await asyncio.shield(future) for key, future in waiting.items()}

    def _settle(self, keys: list[str], task: asyncio.Task[list[tuple[Any, str]]]) -> None:
        failed = task.cancelled() or task.exception() is not None
        outcomes = [(None, UNAVAILABLE)] * len(keys) if failed else task.result()
        for key, (result, reason) in zip(keys, outcomes, strict=True):
            if result is not None or reason == TOO_SLOW:  # not worth trying again soon
                self._put(key, result if result is not None else _SLOW)
            future = self._inflight.pop(key, None)
            if future is not None and not future.done():
                future.set_result((result, reason))

    def close(self) -> None:
        """Stop the workers (the app's shutdown)."""
        if self._executor is not None:
            _kill(self._executor)
            self._executor = None

    # -- the pool -------------------------------------------------------------------

    async def _ready(self) -> ProcessPoolExecutor | None:
        """The pool, started and answering (the start is not charged to a page's deadline)."""
        async with self._starting:
            if self._executor is not None:
                return self._executor
            executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=_context())
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    await asyncio.wrap_future(executor.submit(_ping))
            except Exception:
                log.exception("the render workers did not start; rendering as plain text")
                _kill(executor)
                return None
            self._executor = executor
            return executor

    async def _run(
        self, calls: list[tuple[Callable[..., Any], tuple[str, ...]]]
    ) -> list[tuple[Any, str]]:
        """``fn(*args)`` for each call, in the pool under one deadline: ``(result, "")``
        or ``(None, reason)``. A worker still busy at the deadline is killed."""
        if not calls:
            return []
        executor = await self._ready()
        if executor is None:
            return [(None, UNAVAILABLE)] * len(calls)
        # Small inputs first, so ordinary text is not queued behind a hostile one.
        order = sorted(range(len(calls)), key=lambda n: sum(map(len, calls[n][1])))
        calls = [calls[n] for n in order]
        try:
            futures: list[Future[Any]] = [executor.submit(fn, *args) for fn, args in calls]
        except RuntimeError:  # broken or shut down meanwhile
            self._drop(executor)
            return [(None, UNAVAILABLE)] * len(calls)
        waiting = [asyncio.wrap_future(f) for f in futures]
        _, late = await asyncio.wait(waiting, timeout=self.timeout_s)
        # Running at the deadline, or large and still queued behind those: too slow (and
        # remembered as such); small queued ones were only unlucky.
        stuck = [
            f
            for f, w, (_, args) in zip(futures, waiting, calls, strict=True)
            if w in late and (f.running() or sum(map(len, args)) > SLOW_QUEUED_CHARS)
        ]
        for f in futures:
            f.cancel()  # the queued ones; running ones end with the workers below
        for w in late:
            w.add_done_callback(_quiet)
        if any(f.running() for f in futures):
            log.warning("rendering took over %.1f s; restarting the render workers", self.timeout_s)
            self._drop(executor)
        results: list[tuple[Any, str]] = []
        for f, w in zip(futures, waiting, strict=True):
            if w in late or w.cancelled():
                results.append((None, TOO_SLOW if f in stuck else BUSY))
            elif (exc := w.exception()) is not None:
                log.warning("rendering failed: %r", exc)
                results.append((None, UNAVAILABLE))
            else:
                results.append((w.result(), ""))
        unordered: list[tuple[Any, str]] = [(None, "")] * len(results)
        for n, result in zip(order, results, strict=True):
            unordered[n] = result
        return unordered

    def _drop(self, executor: ProcessPoolExecutor) -> None:
        if self._executor is executor:
            self._executor = None
        _kill(executor)

    # -- the cache --------------------------------------------------------------------

    def _get(self, key: str) -> Any:
        value = self._cache.get(key)
        if value is not None:
            self._cache.move_to_end(key)
        return value

    def _put(self, key: str, value: Any) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)


def _key(kind: str, *texts: str) -> str:
    digest = hashlib.sha256(kind.encode())
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def _too_large_to_diff(old: str, new: str) -> bool:
    if len(old) + len(new) > MAX_DIFF_CHARS:
        return True
    return old.count("\n") > MAX_DIFF_LINES or new.count("\n") > MAX_DIFF_LINES


def _quiet(future: asyncio.Future[Any]) -> None:
    """Read a late future's outcome, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _kill(executor: ProcessPoolExecutor) -> None:
    """End the workers now, busy or not (``shutdown`` alone would wait for a stuck job)."""
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()
    executor.shutdown(wait=False, cancel_futures=True)
