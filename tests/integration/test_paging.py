"""Paging at volume: the inbox, the workflow list and their API endpoints walk every
row once, in a stable order, forward (``cursor``) and back (``before``), with rows
that share a timestamp. Seeded as the volume benchmark seeds (tests/support/volume.py),
on both databases."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.runtime import Runtime
from orchestra.web import pages
from tests.support.engine import snapshot
from tests.support.volume import seeded_app

N = 120
#: Copies share their timestamp in threes: the cursor's tie-break on id is exercised.
TIES = 3


@pytest.fixture
async def seeded(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with seeded_app(db_url, tmp_path, N, tie_every=TIES) as seeded:
        yield seeded


async def _api_walk(
    client: httpx.AsyncClient, path: str, limit: int
) -> tuple[list[list[str]], list[list[str]]]:
    """The pages going forward by next_cursor, then back from the last by prev_cursor."""
    forward: list[list[str]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        r = await client.get(path, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        forward.append([item["id"] for item in body["items"]])
        if len(forward) == 1:
            assert body["prev_cursor"] is None  # the first page has none before it
        if body["next_cursor"] is None:
            break
        params = {"limit": limit, "cursor": body["next_cursor"]}
    back = [forward[-1]]
    while body["prev_cursor"] is not None:
        r = await client.get(path, params={"limit": limit, "before": body["prev_cursor"]})
        assert r.status_code == 200, r.text
        body = r.json()
        back.append([item["id"] for item in body["items"]])
    return forward, back[::-1]


async def test_the_api_pages_both_ways(seeded: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = seeded
    everything = await runtime.service.list_checkpoints(limit=500)
    oldest_first = [cp.id for cp in everything.items]
    assert len(oldest_first) == N and everything.next_cursor is None

    forward, back = await _api_walk(client, "/api/checkpoints", 50)
    assert [len(p) for p in forward] == [50, 50, 20]
    assert [i for p in forward for i in p] == oldest_first  # each once, in order
    assert back == forward  # going back lands on the same pages

    workflows = await runtime.service.list_workflows(limit=500)
    newest_first = [wf.id for wf in workflows.items]
    forward, back = await _api_walk(client, "/api/workflows", 7)  # no page boundary at a tie
    assert [i for p in forward for i in p] == newest_first and len(newest_first) == N
    assert back == forward
    assert len(set(newest_first)) == N


async def test_paging_with_a_limit_that_splits_ties(
    seeded: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = seeded
    for limit in (1, 2, 4, 119, 120, 500):
        forward, back = await _api_walk(client, "/api/checkpoints", limit)
        ids = [i for p in forward for i in p]
        assert len(ids) == len(set(ids)) == N, limit
        assert back == forward, limit


def _links(html: str) -> dict[str, str]:
    return {
        rel: href.replace("&amp;", "&")
        for href, rel in re.findall(r'<a href="([^"]+)" rel="(next|prev)"', html)
    }


async def _web_walk(
    client: httpx.AsyncClient, start: str, row: str
) -> tuple[list[list[str]], list[list[str]]]:
    forward: list[list[str]] = []
    url: str | None = start
    html = ""
    while url is not None:
        r = await client.get(url)
        assert r.status_code == 200, r.text
        html = r.text
        forward.append(re.findall(row, html))
        if len(forward) == 1:
            assert "prev" not in _links(html)
        url = _links(html).get("next")
    back = [forward[-1]]
    while (url := _links(html).get("prev")) is not None:
        r = await client.get(url)
        assert r.status_code == 200, r.text
        html = r.text
        back.append(re.findall(row, html))
    return forward, back[::-1]


async def test_the_inbox_pages_both_ways(seeded: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = seeded
    everything = await runtime.service.list_checkpoints(limit=500)
    forward, back = await _web_walk(
        client, "/inbox", r'<li class="inbox-item"[^>]*data-checkpoint-id="(\w+)"'
    )
    assert [len(p) for p in forward] == [
        pages.INBOX_PAGE,
        pages.INBOX_PAGE,
        N - 2 * pages.INBOX_PAGE,
    ]
    assert [i for p in forward for i in p] == [cp.id for cp in everything.items]
    assert back == forward
    first = await client.get("/inbox")
    assert f'aria-label="{N} waiting"' in first.text  # the badge: an exact count below the cap
    assert "volume 1" in first.text  # each item names its workflow


async def test_the_workflow_list_pages_both_ways(
    seeded: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = seeded
    everything = await runtime.service.list_workflows(limit=500)
    row = r'<tr data-workflow-id="(\w+)"'
    forward, back = await _web_walk(client, "/", row)
    assert [len(p) for p in forward] == [pages.LIST_PAGE] * (N // pages.LIST_PAGE) + [
        N % pages.LIST_PAGE
    ]
    assert [i for p in forward for i in p] == [wf.id for wf in everything.items]
    assert back == forward
    # Filtered by status, the links keep the filter.
    waiting, _ = await _web_walk(client, "/?status=awaiting_checkpoint", row)
    assert [i for p in waiting for i in p] == [wf.id for wf in everything.items]
    listing = await client.get("/")
    assert listing.text.count("1 decision</a>") == pages.LIST_PAGE  # each is waiting


async def test_the_badge_is_capped(
    seeded: tuple[Runtime, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, client = seeded
    monkeypatch.setattr(runtime.service, "inbox_count_cap", N - 1)
    page = await client.get("/")
    assert f'aria-label="{N - 1}+ waiting"' in page.text
    monkeypatch.setattr(runtime.service, "inbox_count_cap", N)
    page = await client.get("/inbox")
    assert f'aria-label="{N} waiting"' in page.text
    monkeypatch.setattr(runtime.service, "inbox_count_cap", 5)
    counts = await runtime.service.count_inbox()
    assert counts.pending == 6 and counts.shown(counts.pending) == "5+"  # no further than cap + 1


async def test_bad_paging_changes_nothing(seeded: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = seeded
    first = (await client.get("/api/checkpoints", params={"limit": 10})).json()
    before = await snapshot(runtime.db)
    for path in ("/api/checkpoints", "/api/workflows"):
        both = {"cursor": first["next_cursor"], "before": first["next_cursor"]}
        r = await client.get(path, params=both)
        assert r.status_code == 422 and "not both" in r.json()["error"]["message"]
        r = await client.get(path, params={"before": "nonsense"})
        assert r.status_code == 422 and "cursor" in r.json()["error"]["message"]
    page = await client.get("/inbox", params={"before": "nonsense"})
    assert page.status_code == 422 and "cursor" in page.text
    assert await snapshot(runtime.db) == before
