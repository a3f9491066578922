"""The allowed-transitions tables: complete, as designed, and the only rule used.

The expected tables are spelled out here on purpose (with the enums): changing
what may happen to a workflow, checkpoint or agent run must be a deliberate
edit in two places, not a drive-by.
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

EXPECTED_WORKFLOW = {
    W.PENDING: {W.RUNNING, W.FAILED, W.CANCELLED},
    W.RUNNING: {W.RUNNING, W.AWAITING_CHECKPOINT, W.COMPLETED, W.FAILED, W.CANCELLED},
    # resolved into another checkpoint (edit_reviewer_prompt, agent_problem → manual_input…)
    W.AWAITING_CHECKPOINT: {W.RUNNING, W.AWAITING_CHECKPOINT, W.COMPLETED, W.FAILED, W.CANCELLED},
    W.COMPLETED: set(),
    W.FAILED: {W.RUNNING},  # only an explicit, recorded retry
    W.CANCELLED: set(),
}
EXPECTED_CHECKPOINT = {
    C.PENDING: {C.APPROVED, C.EDITED, C.REJECTED, C.SUPERSEDED},
    C.APPROVED: set(),
    C.EDITED: set(),
    C.REJECTED: set(),
    C.SUPERSEDED: set(),
}
EXPECTED_AGENT_RUN = {
    A.RUNNING: {A.COMPLETED, A.FAILED, A.INTERRUPTED, A.CANCELLED},
    A.COMPLETED: set(),
    A.FAILED: {A.SKIPPED},
    A.INTERRUPTED: set(),
    A.CANCELLED: set(),
    A.SKIPPED: set(),
}
TABLES = [
    (Entity.WORKFLOW, W, WORKFLOW_TRANSITIONS, EXPECTED_WORKFLOW),
    (Entity.CHECKPOINT, C, CHECKPOINT_TRANSITIONS, EXPECTED_CHECKPOINT),
    (Entity.AGENT_RUN, A, AGENT_RUN_TRANSITIONS, EXPECTED_AGENT_RUN),
]


@pytest.mark.parametrize(("entity", "enum", "table", "expected"), TABLES)
def test_table_is_complete_and_as_designed(
    entity: Entity, enum: type[StrEnum], table: dict[Any, Any], expected: dict[Any, Any]
) -> None:
    assert set(table) == set(enum), "every status needs a row, even an empty one"
    for old, targets in table.items():
        assert set(targets) <= set(enum)
        assert set(targets) == expected[old], f"{entity.value}: {old} → {sorted(targets)}"
    assert set(TRANSITIONS[entity]) == {s.value for s in enum}


@pytest.mark.parametrize(("entity", "enum", "table", "expected"), TABLES)
def test_is_allowed_agrees_with_the_table_for_every_pair(
    entity: Entity, enum: type[StrEnum], table: dict[Any, Any], expected: dict[Any, Any]
) -> None:
    for old, new in itertools.product(enum, repeat=2):
        assert is_allowed(entity, old, new) is (new in expected[old]), (entity, old, new)
        assert is_allowed(entity, old.value, new.value) is (new in expected[old])
    assert not is_allowed(entity, "nonsense", next(iter(enum)).value)
    assert not is_allowed(entity, next(iter(enum)).value, "nonsense")


def test_every_entity_has_a_table() -> None:
    assert set(TRANSITIONS) == set(Entity)


def test_workflow_status_groups() -> None:
    assert {W.COMPLETED, W.FAILED, W.CANCELLED} == TERMINAL_WORKFLOW_STATUSES
    assert {W.PENDING, W.RUNNING} == RUNNABLE_WORKFLOW_STATUSES
    assert set(W) - TERMINAL_WORKFLOW_STATUSES == ACTIVE_WORKFLOW_STATUSES
    assert all(s.is_terminal == (s in TERMINAL_WORKFLOW_STATUSES) for s in W)
    assert all(s.is_runnable == (s in RUNNABLE_WORKFLOW_STATUSES) for s in W)
    # terminal means terminal, except the recorded retry of a failed workflow
    for status in TERMINAL_WORKFLOW_STATUSES - {W.FAILED}:
        assert not WORKFLOW_TRANSITIONS[status]
    # every non-terminal workflow can be cancelled
    for status in ACTIVE_WORKFLOW_STATUSES:
        assert W.CANCELLED in WORKFLOW_TRANSITIONS[status]
    assert all(c.is_resolved == (c is not C.PENDING) for c in C)


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
