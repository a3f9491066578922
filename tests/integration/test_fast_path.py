"""The fast path (``store._fast``) gives exactly what SQLAlchemy gives, on both databases.

Every statement the engine sends through the fast path during whole Plan & Review
runs (approved, cancelled, failed and retried) is recorded with its parameters,
then replayed on two fresh databases of the same kind: once through the fast
path, once through SQLAlchemy's own execution. Each statement's rows (or row
count) and the final contents of every table must be identical.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from orchestra.domain.models import Decision
from orchestra.domain.statuses import WorkflowStatus
from orchestra.engine.api import WorkerSettings
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.store import _fast, queries
from orchestra.store.db import Database
from tests.conftest import BACKENDS, fresh_database
from tests.support.engine import _dump, agents, demo, pending, use_agents

Recorded = tuple[str, Any, Any]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Recorded]:
    """Every (kind, statement, parameters) the fast path runs during the test."""
    found: list[Recorded] = []
    real_dml, real_fetch, real_returned = _fast.execute_dml, _fast.fetch_all, _fast.returned

    def dml(conn: Connection, stmt: Any, params: Mapping[str, Any] | Sequence[Any]) -> int:
        found.append(("dml", stmt, copy.deepcopy(params)))
        return real_dml(conn, stmt, params)

    def returned(
        conn: Connection, stmt: Any, params: Mapping[str, Any], *, binary: bool = False
    ) -> list[Any]:
        found.append(("returned", stmt, copy.deepcopy(dict(params))))
        return real_returned(conn, stmt, params, binary=binary)

    def fetch(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        found.append(("fetch", stmt, copy.deepcopy(dict(params))))
        return real_fetch(conn, stmt, params)

    monkeypatch.setattr(_fast, "execute_dml", dml)
    monkeypatch.setattr(_fast, "fetch_all", fetch)
    monkeypatch.setattr(_fast, "returned", returned)
    monkeypatch.setattr(queries, "fetch_all", fetch)
    return found


@pytest.fixture(params=BACKENDS)
def three_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Three fresh, migrated databases of one kind: to record on, and to replay on twice."""
    with ExitStack() as stack:
        urls = []
        for name in ("recorded", "fast", "slow"):
            directory = tmp_path / name
            directory.mkdir()
            found = fresh_database(request, directory, "orchestra_fp_")
            urls.append(next(found))
            stack.callback(lambda found=found: next(found, None))
        yield urls


async def _runs(url: str, tmp_path: Path) -> None:
    """Plan & Review runs that visit every statement the engine has: approve to the
    end, cancel at a checkpoint, a failing agent retried."""
    db = Database(url)
    service = Orchestra(db, allowed_roots=[tmp_path])
    worker = Worker(db, WorkerSettings(poll_s=0.05))
    try:
        done = await service.create_workflow(name="approved", prompt="Add a flag")
        await worker.run_until_idle()
        for step in ("plan_ready_for_review", "reviews_ready_for_consolidation"):
            cp = await pending(service, done.id, step)
            await service.resolve(cp.id, Decision(action="approve", notes="ok"), actor="ana")
            await worker.run_until_idle()
        assert (await service.get_workflow(done.id)).status is WorkflowStatus.COMPLETED

        cancelled = await service.create_workflow(name="cancelled", prompt="Add a flag")
        await worker.run_until_idle()
        cp = await pending(service, cancelled.id)
        await service.resolve(cp.id, Decision(action="cancel"), actor="ana")

        failing = agents(reviewers=[demo(), demo(fail="error")])
        retried = await service.create_workflow(
            name="retried", prompt="Add a flag", agents=use_agents(service, failing)
        )
        await worker.run_until_idle()
        cp = await pending(service, retried.id)
        await service.resolve(cp.id, Decision(action="approve"), actor="ana")
        await worker.run_until_idle()
        problem = await pending(service, retried.id, "agent_problem")
        await service.resolve(problem.id, Decision(action="retry"), actor="ana")
        await worker.run_until_idle()
    finally:
        db.close()


def _replay(url: str, recorded: list[Recorded], *, fast: bool) -> tuple[list[Any], Any]:
    """Run the recorded statements in order on a fresh database; each one's result
    and every table's rows at the end."""
    db = Database(url)
    results: list[Any] = []
    try:
        with db.write_engine.connect() as conn, conn.begin():
            for kind, stmt, params in recorded:
                if kind == "dml":
                    if fast:
                        count = _fast.execute_dml(conn, stmt, params)
                    else:
                        many = not isinstance(params, Mapping)
                        count = conn.execute(
                            stmt,
                            list(params) if many else params,
                            execution_options={"preserve_rowcount": True},
                        ).rowcount
                    results.append(count)
                elif kind == "returned":
                    if fast:
                        binary = "datas" in params  # as the events are written
                        results.append(sorted(_fast.returned(conn, stmt, params, binary=binary)))
                    else:
                        results.append(sorted(conn.execute(stmt, params).scalars()))
                elif fast:
                    results.append(_fast.fetch_all(conn, stmt, params))
                else:
                    results.append([dict(r._mapping) for r in conn.execute(stmt, params)])
            return results, _dump(conn)
    finally:
        db.close()


async def test_the_fast_path_and_sqlalchemy_give_identical_rows(
    tmp_path: Path, recorded: list[Recorded], three_databases: list[str]
) -> None:
    recorded_on, fast_on, slow_on = three_databases
    await _runs(recorded_on, tmp_path)
    replayed = list(recorded)
    # The runs went through the fast path: inserts, updates and selects of its own.
    kinds = {(kind, type(stmt).__name__) for kind, stmt, _ in replayed}
    assert {("dml", "Insert"), ("dml", "Update"), ("fetch", "Select")} <= kinds
    if recorded_on.startswith("postgresql"):
        assert ("returned", "Insert") in kinds  # the events, all of a transaction's at once
    assert len({id(stmt) for _, stmt, _ in replayed}) >= 10

    fast_results, fast_tables = _replay(fast_on, replayed, fast=True)
    slow_results, slow_tables = _replay(slow_on, replayed, fast=False)
    for i, (fast, slow) in enumerate(zip(fast_results, slow_results, strict=True)):
        assert fast == slow, f"statement {i}: {replayed[i][1]}"
    assert fast_tables == slow_tables
    assert sum(len(rows) for rows in fast_tables.values()) > 0


async def test_a_database_error_on_the_fast_path_is_sqlalchemys_and_changes_nothing(
    db: Database,
) -> None:
    """The API maps SQLAlchemy's exceptions to answers (a refused value → 422, an
    unreachable database → 503): the fast path must raise those, not the driver's."""
    from sqlalchemy import insert
    from sqlalchemy.exc import DBAPIError, IntegrityError

    from orchestra.store.schema import api_tokens

    stmt = insert(api_tokens)
    row = {
        "id": "t1",
        "name": "ana",
        "role": "admin",
        "token_hash": "h" * 64,
        "created_at": datetime.now(UTC),
    }
    await db.write(lambda tx: tx.execute(stmt, row))
    before = await db.read(_dump)
    with pytest.raises(IntegrityError):
        # The first row is new, the second a duplicate: the whole write is refused.
        other = {**row, "id": "t2", "name": "bo", "token_hash": "g" * 64}
        await db.write(lambda tx: tx.execute(stmt, [other, row]))
    if db.kind == "postgresql":  # SQLite stores a NUL byte; PostgreSQL refuses it
        with pytest.raises(DBAPIError) as refused:
            await db.write(lambda tx: tx.execute(stmt, {**row, "id": "t3", "name": "a\x00b"}))
        assert type(refused.value).__name__ == "DataError"
    assert await db.read(_dump) == before
