"""Attacks on the paging parameters (``cursor`` and ``before``) of the list endpoints
and the pages, on both databases.

A cursor is opaque to clients but comes back from them: forged ones (not base64,
the wrong number of parts, a timestamp that is not one or has no zone, text made
to look like SQL, oversized) are a 422 that says to pass a cursor the server gave,
or — when well formed — only a position to compare against: a page never holds a
row its filter excludes, and nothing is written.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from orchestra.domain.models import Decision
from orchestra.runtime import Runtime
from orchestra.store.queries import MAX_CURSOR
from tests.support.engine import snapshot
from tests.support.volume import seeded_app

N = 12
PATHS = ("/api/checkpoints", "/api/workflows", "/inbox", "/")


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


MALFORMED = [
    "%%%",  # not base64
    _b64("only-one-part"),
    _b64("2026-01-01T00:00:00+00:00|id|extra"),
    _b64("yesterday|abc"),
    _b64("2026-01-01T00:00:00|abc"),  # no time zone: which instant?
    base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),  # not UTF-8
    _b64("2026-01-01T00:00:00+00:00|" + "a" * MAX_CURSOR),  # longer than any we make
]
#: Well formed, so only positions: the id part is a value, never SQL.
POSITIONS = [
    _b64("2026-01-01T00:00:00+00:00|' OR '1'='1"),
    _b64("9999-12-31T23:59:59+00:00|%"),
    _b64('0001-01-01T00:00:00+00:00|"; DROP TABLE checkpoints; --'),
]


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with seeded_app(db_url, tmp_path, N) as seeded:
        yield seeded


@pytest.mark.parametrize("param", ["cursor", "before"])
async def test_forged_cursors_are_refused(
    app: tuple[Runtime, httpx.AsyncClient], param: str
) -> None:
    runtime, client = app
    written = await snapshot(runtime.db)
    for path in PATHS:
        for forged in MALFORMED:
            r = await client.get(path, params={param: forged})
            assert r.status_code == 422, (path, forged, r.status_code)
            assert "pass the next_cursor of a previous page" in r.text
    assert await snapshot(runtime.db) == written


@pytest.mark.parametrize("param", ["cursor", "before"])
async def test_a_forged_position_only_moves_within_the_filter(
    app: tuple[Runtime, httpx.AsyncClient], param: str
) -> None:
    runtime, client = app
    decided = (await runtime.service.list_checkpoints(limit=1)).items[0]
    await runtime.service.resolve(decided.id, Decision(action="cancel"), actor="a")
    written = await snapshot(runtime.db)
    for forged in POSITIONS:
        r = await client.get("/api/checkpoints", params={param: forged, "limit": 500})
        assert r.status_code == 200, r.text
        found = r.json()["items"]
        assert all(cp["status"] == "pending" for cp in found)
        assert decided.id not in {cp["id"] for cp in found}
        for path in PATHS[1:]:
            assert (await client.get(path, params={param: forged})).status_code == 200
    assert await snapshot(runtime.db) == written
