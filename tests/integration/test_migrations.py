"""A migrated database equals the schema definition, on both databases.

Alembic's autogenerate comparison finds tables, columns, types, nullability,
server defaults, indexes, unique constraints and foreign keys that differ;
CHECK constraints and the partial index condition it does not compare, so
those are checked by what the database does.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    create_engine,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from orchestra.domain.statuses import CheckpointStatus, WorkflowStatus
from orchestra.store.db import normalise_url
from orchestra.store.migrate import alembic_config, upgrade
from orchestra.store.schema import checkpoints, metadata, workflows

VERSIONS = Path(__file__).resolve().parents[2] / "src/orchestra/store/migrations/versions"

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = create_engine(normalise_url(db_url))
    yield eng
    eng.dispose()


def _diff(conn: Connection, target: MetaData) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, target))


def _table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_migrated_database_equals_the_schema_definition(engine: Engine) -> None:
    with engine.connect() as conn:
        assert _diff(conn, metadata) == []
    assert _table_names(engine) == set(metadata.tables)


def test_downgrade_to_empty_and_upgrade_again_equals_the_definition(engine: Engine) -> None:
    """Upgrading from an empty database (not only the fixture's) gives the same schema."""
    from alembic import command

    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert _table_names(engine) == set()
    upgrade(engine)
    with engine.connect() as conn:
        assert _diff(conn, metadata) == []


def test_the_comparison_would_notice_a_difference(engine: Engine) -> None:
    """Guard against a comparison that always answers 'equal'."""
    changed = MetaData()
    for table in metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["workflows"].append_column(Column("extra", Integer))
    with engine.connect() as conn:
        diff = _diff(conn, changed)
    assert [d[0] for d in diff] == ["add_column"]


def _declared_checks(target: MetaData) -> dict[str, dict[str, set[str]]]:
    """Each table's CHECK constraints in the schema definition: name → allowed values."""
    return {
        table: {
            str(c.name): set(re.findall(r"'([^']*)'", str(c.sqltext)))
            for c in target.tables[table].constraints
            if isinstance(c, CheckConstraint)
        }
        for table in CHECKED_TABLES
    }


def _database_checks(engine: Engine) -> dict[str, dict[str, set[str]]]:
    """Each table's CHECK constraints as the migrated database has them."""
    inspector = inspect(engine)
    return {
        table: {
            c["name"]: set(re.findall(r"'([^']*)'", c["sqltext"]))
            for c in inspector.get_check_constraints(table)
        }
        for table in CHECKED_TABLES
    }


CHECKED_TABLES = ("workflows", "checkpoints", "agent_runs", "events", "notifications")


def test_status_check_constraints_exist_with_every_status(engine: Engine) -> None:
    """Migrations are frozen (literal values), so a status or event type added to the
    domain without a migration makes the database and the definition differ here."""
    assert _database_checks(engine) == _declared_checks(metadata)


def test_the_check_comparison_would_notice_a_status_without_a_migration(engine: Engine) -> None:
    """A definition with one more workflow status (as if the enum grew) no longer matches."""
    grown = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(grown)
    wf = grown.tables["workflows"]
    check = next(c for c in wf.constraints if isinstance(c, CheckConstraint))
    wf.constraints.discard(check)
    wf.append_constraint(
        CheckConstraint(f"{check.sqltext}".replace(")", ", 'paused')"), name=check.name)
    )
    assert _database_checks(engine) != _declared_checks(grown)


def test_migrations_are_frozen() -> None:
    """No revision imports Orchestra's code: what a migration did must not change when
    today's enums or schema module do."""
    for path in sorted(VERSIONS.glob("[0-9]*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            assert not any(n.split(".")[0] == "orchestra" for n in names), (path.name, names)


def test_upgrade_from_the_frozen_baseline_keeps_rows_and_equals_the_definition(
    engine: Engine,
) -> None:
    """A database made by revision 0001 alone, holding a row written with that day's
    values, upgrades to head without loss and then equals the definition."""
    from alembic import command

    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO workflows (id, name, type, status, max_iterations, prompt, agents,"
                " state, created_at, updated_at) VALUES ('wf1', 'n', 'plan_review',"
                " 'awaiting_checkpoint', 3, 'p', '{}', '{}', :now, :now)"
            ),
            {"now": NOW},
        )
    upgrade(engine)
    with engine.connect() as conn:
        assert _diff(conn, metadata) == []
        assert conn.execute(text("SELECT status FROM workflows")).scalar_one() == (
            "awaiting_checkpoint"
        )
    assert _database_checks(engine) == _declared_checks(metadata)


def _migrate(engine: Engine, how: str, revision: str) -> None:
    from alembic import command

    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, how)(config, revision)


def test_0005_moves_leases_to_timestamps_and_retries_out_of_the_state(engine: Engine) -> None:
    """A lease in force keeps its expiry (to the second) as a timestamp, and a retry
    recorded in the definition's state moves to its own column; down and up again
    gives the same rows."""
    _migrate(engine, "downgrade", "0004")
    expires = datetime(2026, 1, 1, 12, 30, 5, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO workflows (id, name, type, status, max_iterations, prompt, agents,"
                " state, lease_token, lease_expires_at, created_at, updated_at) VALUES"
                " ('wf1', 'n', 'plan_review', 'running', 3, 'p', '{}',"
                " :state, 't', :expires, :now, :now)"
            ),
            {
                "state": '{"plan": "x", "_retry": {"reviewer-2": 30.0}}',
                "expires": expires.timestamp(),
                "now": NOW,
            },
        )
    for _ in range(2):
        upgrade(engine)
        with engine.connect() as conn:
            row = conn.execute(select(workflows).where(workflows.c.id == "wf1")).one()._mapping
            assert row["lease_expires_at"] == expires
            assert row["retry"] == {"reviewer-2": 30.0}
            assert row["state"] == {"plan": "x"}
        _migrate(engine, "downgrade", "0004")
        with engine.connect() as conn:
            lease, state = conn.execute(text("SELECT lease_expires_at, state FROM workflows")).one()
            assert float(lease) == expires.timestamp()
            decoded = json.loads(state) if isinstance(state, str) else state
            assert decoded == {"plan": "x", "_retry": {"reviewer-2": 30.0}}
    upgrade(engine)


def test_0010_moves_the_deadline_policy_out_of_agents(engine: Engine) -> None:
    """A policy recorded inside ``agents`` moves to its own column and the key leaves
    ``agents``; a workflow without one keeps its agents and gets none; down and up
    again gives the same rows."""
    _migrate(engine, "downgrade", "0009")
    policy = {"after_s": 3600.0, "default_action": "approve", "steps": {}}
    agents = {"planner": {"name": "demo"}, "reviewers": [{"name": "demo"}]}
    with engine.begin() as conn:
        for wid, recorded in (("wf1", {**agents, "deadline": policy}), ("wf2", agents)):
            conn.execute(
                text(
                    "INSERT INTO workflows (id, name, type, status, max_iterations, prompt,"
                    " agents, state, created_at, updated_at) VALUES (:id, 'n', 'plan_review',"
                    " 'running', 3, 'p', :agents, '{}', :now, :now)"
                ),
                {"id": wid, "agents": json.dumps(recorded), "now": NOW},
            )
    for _ in range(2):
        upgrade(engine)
        with engine.connect() as conn:
            rows = conn.execute(select(workflows).order_by(workflows.c.id)).all()
            got = [(r._mapping["agents"], r._mapping["deadline"]) for r in rows]
            assert got == [(agents, policy), (agents, None)]
        _migrate(engine, "downgrade", "0009")
        with engine.connect() as conn:
            raw = conn.execute(text("SELECT agents FROM workflows ORDER BY id")).scalars().all()
            decoded = [json.loads(a) if isinstance(a, str) else a for a in raw]
            assert decoded == [{**agents, "deadline": policy}, agents]
    upgrade(engine)


def _workflow(**overrides: Any) -> dict[str, Any]:
    row = {
        "id": uuid.uuid4().hex,
        "name": "t",
        "type": "plan_review",
        "status": WorkflowStatus.AWAITING_CHECKPOINT.value,
        "max_iterations": 3,
        "prompt": "p",
        "agents": {},
        "state": {},
        "created_at": NOW,
        "updated_at": NOW,
    }
    return {**row, **overrides}


def _checkpoint(workflow_id: str, step_index: int, number: int, status: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "workflow_id": workflow_id,
        "number": number,
        "step_index": step_index,
        "iteration": 1,
        "step_name": "plan_ready_for_review",
        "body": {},
        "status": status,
        "created_at": NOW,
    }


def _insert_fails(engine: Engine, table: Any, row: dict[str, Any]) -> bool:
    try:
        with engine.begin() as conn:
            conn.execute(insert(table).values(row))
    except IntegrityError:
        return True
    return False


def test_database_refuses_what_the_schema_forbids(engine: Engine) -> None:
    wf = _workflow()
    with engine.begin() as conn:
        conn.execute(insert(workflows).values(wf))
        conn.execute(
            insert(checkpoints).values(_checkpoint(wf["id"], 1, 1, CheckpointStatus.APPROVED))
        )
        conn.execute(
            insert(checkpoints).values(_checkpoint(wf["id"], 2, 2, CheckpointStatus.PENDING))
        )
        # resolved checkpoints do not count towards the one pending
        conn.execute(
            insert(checkpoints).values(_checkpoint(wf["id"], 3, 3, CheckpointStatus.SUPERSEDED))
        )
    # a second pending checkpoint for the workflow
    assert _insert_fails(engine, checkpoints, _checkpoint(wf["id"], 4, 4, CheckpointStatus.PENDING))
    # a second checkpoint for the same step visit, whatever its status
    assert _insert_fails(engine, checkpoints, _checkpoint(wf["id"], 1, 5, CheckpointStatus.EDITED))
    # a status the domain does not know
    assert _insert_fails(engine, workflows, _workflow(status="paused"))
    assert _insert_fails(engine, checkpoints, _checkpoint(wf["id"], 6, 6, "maybe"))
    # another workflow may have its own pending checkpoint
    other = _workflow()
    with engine.begin() as conn:
        conn.execute(insert(workflows).values(other))
        conn.execute(
            insert(checkpoints).values(_checkpoint(other["id"], 1, 1, CheckpointStatus.PENDING))
        )
