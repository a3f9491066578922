"""Pooled PostgreSQL connections the server dropped: replaced before use once idle.

A connection idle in the pool for over ``PING_IDLE_S`` is pinged when taken; one
the server closed meanwhile (a restart, ``pg_terminate_backend``, an idle timeout)
is replaced, and the transaction runs on a fresh one. One handed back a moment
ago is trusted (no round trip per transaction): dropped in that moment, its
transaction fails as unavailable, and the pool is renewed for the next.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import text

from orchestra.domain.errors import DatabaseUnavailable
from orchestra.store import db as db_module
from orchestra.store.db import Database

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _drop_connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def _one(tx: object) -> int:
    return int(tx.conn.execute(text("SELECT 1")).scalar_one())  # type: ignore[attr-defined]


def test_an_idle_connection_the_server_dropped_is_replaced(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_IDLE_S", 0.05)
    db = Database(db_url, pool_size=1)
    try:
        assert db.write_sync(_one) == 1
        assert _drop_connections(db_url) >= 1
        time.sleep(0.2)
        assert db.write_sync(_one) == 1  # pinged, found dropped, replaced
    finally:
        db.close()


def test_a_connection_dropped_right_after_use_fails_once_then_the_pool_is_renewed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_IDLE_S", 3600.0)
    db = Database(db_url, pool_size=1)
    try:
        assert db.write_sync(_one) == 1
        assert _drop_connections(db_url) >= 1
        time.sleep(0.2)
        with pytest.raises(DatabaseUnavailable):
            db.write_sync(_one)
        assert db.write_sync(_one) == 1
    finally:
        db.close()
