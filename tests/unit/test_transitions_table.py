"""The allowed-transitions tables: complete, consistent with every other view of the
statuses, and obeying the lifecycle's rules.

The tables are not copied here: what each allows is tested by driving workflows
(tests/integration/test_plan_review_paths.py refuses cancel and retry where they
are forbidden; test_resolution.py refuses a second resolution) and through the one
door for every pair (tests/integration/test_transitions.py).
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from typing import Any
from unittest.mock import MagicMock

import pytest
from sqlalchemy import CheckConstraint, Table

from orchestra.domain.errors import TransitionNotAllowed
from orchestra.domain.statuses import (
    ACTIVE_WORKFLOW_STATUSES,
    AGENT_RUN_TRANSITIONS,
    CHECKPOINT_TRANSITIONS,
    RUNNABLE_WORKFLOW_STATUSES,
    TERMINAL_WORKFLOW_STATUSES,
    TRANSITIONS,
    WORKFLOW_TRANSITIONS,
    AgentRunStatus,
    CheckpointStatus,
    Entity,
    WorkflowStatus,
    is_allowed,
)
from orchestra.engine.transition import transition_txn
from orchestra.store import schema

W, C, A = WorkflowStatus, CheckpointStatus, AgentRunStatus

TABLES = [
    (Entity.WORKFLOW, W, WORKFLOW_TRANSITIONS),
    (Entity.CHECKPOINT, C, CHECKPOINT_TRANSITIONS),
    (Entity.AGENT_RUN, A, AGENT_RUN_TRANSITIONS),
]


@pytest.mark.parametrize(("entity", "enum", "table"), TABLES)
def test_table_is_complete(entity: Entity, enum: type[StrEnum], table: dict[Any, Any]) -> None:
    assert set(table) == set(enum), "every status needs a row, even an empty one"
    for old, targets in table.items():
        assert set(targets) <= set(enum), (entity, old)
    assert set(TRANSITIONS[entity]) == {s.value for s in enum}


@pytest.mark.parametrize(("entity", "enum", "table"), TABLES)
def test_is_allowed_agrees_with_the_table_for_every_pair(
    entity: Entity, enum: type[StrEnum], table: dict[Any, Any]
) -> None:
    for old, new in itertools.product(enum, repeat=2):
        assert is_allowed(entity, old, new) is (new in table[old]), (entity, old, new)
        assert is_allowed(entity, old.value, new.value) is (new in table[old])
    assert not is_allowed(entity, "nonsense", next(iter(enum)).value)
    assert not is_allowed(entity, next(iter(enum)).value, "nonsense")


@pytest.mark.parametrize(("entity", "enum", "table"), TABLES)
def test_every_status_is_reachable_from_the_first(
    entity: Entity, enum: type[StrEnum], table: dict[Any, Any]
) -> None:
    """No dead row: each status can be reached from the one a row is created in."""
    first = next(iter(enum))
    reached, frontier = {first}, [first]
    while frontier:
        for new in table[frontier.pop()]:
            if new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(enum), (entity, set(enum) - reached)


def test_a_resolved_checkpoint_never_changes_and_a_pending_one_can_end_every_way() -> None:
    resolved = {c for c in C if c.is_resolved}
    assert CHECKPOINT_TRANSITIONS[C.PENDING] == resolved
    assert all(not CHECKPOINT_TRANSITIONS[c] for c in resolved)


def test_an_agent_run_never_runs_again() -> None:
    """A finished run is a record: a retry is a new run (a new attempt), not a move back."""
    assert all(A.RUNNING not in targets for targets in AGENT_RUN_TRANSITIONS.values())
    assert AGENT_RUN_TRANSITIONS[A.RUNNING], "a running agent can finish"


def test_every_entity_has_a_table() -> None:
    assert set(TRANSITIONS) == set(Entity)


def test_workflow_status_groups_agree_with_the_table() -> None:
    assert all(s.is_terminal == (s in TERMINAL_WORKFLOW_STATUSES) for s in W)
    assert all(s.is_runnable == (s in RUNNABLE_WORKFLOW_STATUSES) for s in W)
    assert set(W) - TERMINAL_WORKFLOW_STATUSES == ACTIVE_WORKFLOW_STATUSES
    # a workflow that waits for a person is not the workers' to run
    assert ACTIVE_WORKFLOW_STATUSES - {W.AWAITING_CHECKPOINT} >= RUNNABLE_WORKFLOW_STATUSES
    # a status with no way out is terminal; a terminal one has none but the recorded retry
    assert {s for s in W if not WORKFLOW_TRANSITIONS[s]} <= TERMINAL_WORKFLOW_STATUSES
    for status in TERMINAL_WORKFLOW_STATUSES:
        retry = {W.RUNNING} if status is W.FAILED else set()
        assert WORKFLOW_TRANSITIONS[status] == retry, status
    # every non-terminal workflow can be cancelled
    for status in ACTIVE_WORKFLOW_STATUSES:
        assert W.CANCELLED in WORKFLOW_TRANSITIONS[status]


@pytest.mark.parametrize(
    ("table", "enum"),
    [(schema.workflows, W), (schema.checkpoints, C), (schema.agent_runs, A)],
)
def test_status_check_constraints_derive_from_the_enums(table: Table, enum: type[StrEnum]) -> None:
    checks = [
        c
        for c in table.constraints
        if isinstance(c, CheckConstraint) and "status_valid" in str(c.name)
    ]
    assert len(checks) == 1
    quoted = set(re.findall(r"'([^']*)'", str(checks[0].sqltext)))
    assert quoted == {s.value for s in enum}


def test_transition_refuses_a_forbidden_change_before_touching_the_database() -> None:
    tx = MagicMock()
    with pytest.raises(TransitionNotAllowed) as caught:
        transition_txn(tx, Entity.WORKFLOW, "w1", workflow_id="w1", old=W.COMPLETED, new=W.RUNNING)
    assert caught.value.details == {
        "entity": "workflow",
        "id": "w1",
        "from": W.COMPLETED,
        "to": W.RUNNING,
    }
    assert tx.conn.execute.call_count == 0
    assert tx.emit.call_count == 0
