"""Shared fixtures: the same suite runs on a real SQLite file and a real PostgreSQL.

``ORCHESTRA_TEST_DATABASES`` picks the backends (``sqlite,postgresql`` by
default). ``ORCHESTRA_TEST_PG_URL`` is the server (default
``postgresql://postgres@127.0.0.1:5432/test``); each test gets a fresh database
cloned from a migrated template, so tests never see each other's rows. When
``CI`` is set, an unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from orchestra.engine.runner import Worker, WorkerSettings
from orchestra.service import Orchestra
from orchestra.store.db import Database
from orchestra.store.migrate import upgrade
from tests.support.processes import spawn  # noqa: F401 - the worker-process fixture

PG_URL = os.environ.get("ORCHESTRA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = [
    b.strip()
    for b in os.environ.get("ORCHESTRA_TEST_DATABASES", "sqlite,postgresql").split(",")
    if b.strip()
]
TEMPLATE = f"orchestra_tpl_{os.getpid()}"


def _pg_admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(PG_URL, autocommit=True)


def _pg_url(dbname: str) -> str:
    base = PG_URL.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database, cloned per test."""
    try:
        admin = _pg_admin()
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
    db = Database(_pg_url(TEMPLATE))
    upgrade(db.write_engine)
    db.close()
    yield TEMPLATE
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')


def fresh_database(request: pytest.FixtureRequest, directory: Path, prefix: str) -> Iterator[str]:
    """A fresh, migrated database URL on the backend in ``request.param``, dropped
    afterwards (Postgres: cloned from the migrated template, named ``prefix…``)."""
    if request.param == "sqlite":
        path = directory / "orchestra.db"
        db = Database(f"sqlite:///{path}")
        upgrade(db.write_engine)
        db.close()
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _pg_url(name)
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database URL on each backend."""
    yield from fresh_database(request, tmp_path, "orchestra_t_")


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    database.close()


@pytest.fixture
def service(db: Database, tmp_path: Path) -> Orchestra:
    """The service, with the test's temporary directory allowed for workspaces."""
    return Orchestra(db, allowed_roots=[tmp_path])


@pytest.fixture
def worker(db: Database) -> Worker:
    return Worker(
        db, WorkerSettings(heartbeat_s=0.2, lease_ttl_s=5, poll_s=0.1, progress_interval_s=0.05)
    )
