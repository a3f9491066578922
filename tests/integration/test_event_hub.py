"""The API's event hub keeps following the log through failures of any kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from orchestra.api.hub import EventHub
from orchestra.domain.events import EventType
from orchestra.store.db import Database, Tx
from tests.support.waiting import eventually

T = TypeVar("T")


def _emit(note: str) -> Callable[[Tx], None]:
    def txn(tx: Tx) -> None:
        tx.emit(None, EventType.WORKFLOW_CREATED, {"note": note})

    return txn


async def test_the_hub_outlives_an_unexpected_read_error(
    db: Database, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = EventHub(db, poll_s=0.05)
    await hub.start()
    real_read, failed = db.read, []

    async def read_failing_once(fn: Callable[[Any], T]) -> T:
        if not failed:
            failed.append(fn)
            raise RuntimeError("a driver error nobody mapped")
        return await real_read(fn)

    monkeypatch.setattr(db, "read", read_failing_once)
    try:
        before = hub.cursor
        # Another process's rows: no ring carries them, so the hub must read the log.
        other = Database(db.url)
        try:
            await other.write(_emit("theirs"))
        finally:
            other.close()

        async def caught_up() -> bool:
            return hub.cursor > before

        await eventually(caught_up, what="the hub to read past the failure")
    finally:
        await hub.stop()
    assert failed
    assert any("following the log failed" in r.getMessage() for r in caplog.records)
