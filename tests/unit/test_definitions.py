"""Workflow definitions: the in-process registry and the typed state."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from orchestra.domain.errors import InvalidInput
from orchestra.domain.models import CheckpointAction
from orchestra.engine.definition import (
    CheckpointStep,
    CheckpointView,
    Next,
    WorkflowDefinition,
    WorkflowState,
    definitions,
    get_definition,
    register_definition,
    registered,
    unregister_definition,
)
from orchestra.workflows import plan_review
from orchestra.workflows.plan_review import PlanReviewState


class Counter(WorkflowState):
    count: int = 0
    note: str | None = None


def _definition(workflow_type: str = "counter") -> WorkflowDefinition[Counter]:
    ask = CheckpointStep[Counter](
        name="ask",
        title="Go on?",
        actions=[CheckpointAction(name="go", label="Go")],
        view=lambda ctx: CheckpointView(instructions="Decide."),
        on_resolve=lambda ctx, decision: Next(step=None),
    )
    return WorkflowDefinition(
        type=workflow_type, title="Counter", state=Counter, first_step="ask", steps={"ask": ask}
    )


def test_a_registered_definition_is_found_and_forgotten_after_the_block() -> None:
    counter = _definition()
    with registered(counter):
        assert get_definition("counter") is counter
        assert definitions()["counter"] is counter
        assert definitions()["plan_review"] is plan_review.definition  # installed ones stay
    with pytest.raises(InvalidInput, match="unknown workflow type 'counter'"):
        get_definition("counter")


def test_registering_the_same_definition_twice_is_a_no_op() -> None:
    counter = _definition()
    with registered(counter):
        register_definition(counter)
        assert get_definition("counter") is counter
    assert "counter" not in definitions()


def test_another_definition_for_a_known_type_is_refused() -> None:
    with (
        registered(_definition()),
        pytest.raises(ValueError, match="'counter' is already defined"),
    ):
        register_definition(_definition())
    with pytest.raises(ValueError, match="'plan_review' is already defined"):
        register_definition(_definition("plan_review"))
    assert get_definition("plan_review") is plan_review.definition


def test_unregistering_leaves_installed_definitions() -> None:
    unregister_definition("plan_review")
    assert get_definition("plan_review") is plan_review.definition


def test_the_state_is_read_only_and_replace_checks_names_and_types() -> None:
    state = Counter(count=1)
    with pytest.raises(ValidationError):
        state.count = 2  # type: ignore[misc]
    assert state.replace(count=2) == Counter(count=2)
    assert state == Counter(count=1)
    with pytest.raises(ValidationError, match="cuont"):
        state.replace(cuont=2)
    with pytest.raises(ValidationError, match="count"):
        state.replace(count="many")


def test_the_stored_state_leaves_out_none_and_a_foreign_state_is_refused() -> None:
    counter = _definition()
    assert counter.dump_state(Counter(count=3)) == {"count": 3}
    assert counter.load_state({}) == Counter()
    with pytest.raises(TypeError, match="keeps a Counter state, a step returned a Other"):
        counter.dump_state(Other())


class Other(WorkflowState):
    pass


def test_plan_review_state_loads_a_row_written_before_it_was_typed() -> None:
    """The JSON Plan & Review rows hold (keys set to None were removed) loads as is,
    and is stored again with the same values (under the same keys, but ``job``)."""
    output = {
        "agent": "reviewer-1 (demo)",
        "role": "reviewer",
        "content": "ok",
        "structured": None,
        "agent_run_id": "r1",
        "status": "completed",
        "error": None,
    }
    failure = {
        "agent": "reviewer-2",
        "label": "reviewer-2 (demo)",
        "error": "timeout after 30s",
        "stderr_tail": "",
        "agent_run_id": "r2",
        "timeout_s": 30.0,
    }
    stored = {
        "plan": "1. do it",
        "plans": {"1": "1. do it"},
        "plan_output": {**output, "agent": "planner (demo)", "role": "planner"},
        "planner_session": "s-1",
        "extra_iterations": 1,
        "reviews": [output],
        "feedback": "more tests",
        "notes_by": "ana",
        "pending_planner_prompt": "revise",
        "problem": {"step": "review", "failures": [failure], "succeeded": [output]},
    }
    state = plan_review.definition.load_state(stored)
    assert isinstance(state, PlanReviewState)
    assert state.problem is not None and state.problem.failures[0].timeout_s == 30.0
    # Stored again with the same values; an agent output's ``role`` is now its ``job``.
    renamed = json.loads(json.dumps(stored).replace('"role":', '"job":'))
    assert plan_review.definition.dump_state(state) == renamed
