"""How a workflow is defined: a graph of agent steps and checkpoint steps in Python.

A definition is data plus pure functions of the workflow's JSON state. The
engine owns persistence, leases and the checkpoint contract; a definition only
says which agents to run with which prompts, what each checkpoint shows, and
where each outcome leads (:class:`Next`). Plan & Review
(:mod:`orchestra.workflows.plan_review`) is one such definition; definitions are
found through the ``orchestra.workflows`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from orchestra.domain.errors import InvalidInput
from orchestra.domain.models import (
    AgentOutput,
    AgentRun,
    CheckpointAction,
    Consolidation,
    Resolution,
)
from orchestra.domain.statuses import ActionStyle, WorkflowStatus

JSON = dict[str, Any]


@dataclass(frozen=True)
class StepContext:
    """What a definition's functions see of the workflow (read-only)."""

    workflow_id: str
    name: str
    prompt: str
    iteration: int
    max_iterations: int
    workspace: Path | None
    agents: JSON
    state: JSON


@dataclass(frozen=True)
class AgentTask:
    """One agent to run in an agent step."""

    key: str  # unique within the step, e.g. "planner", "reviewer-2"
    role: str
    adapter: str
    options: JSON
    prompt: str
    timeout_s: float
    output_schema: JSON | None = None
    #: The agent's previous session to continue, when it was configured to resume.
    resume_session: str | None = None


@dataclass(frozen=True)
class Next:
    """Where the workflow goes after a step or a resolution.

    ``step=None`` with ``cancel=False`` completes the workflow with ``result``.
    ``state`` is merged into the workflow's state (keys set to ``None`` are
    removed). ``skip_failed`` marks the failed agent runs of the current
    iteration's step ``skip_failed`` as skipped. ``retry``: agents of the next
    step to run again although their last attempt failed, each with a timeout
    override or ``None`` (the engine keeps it, out of the state, until that
    step ends).
    """

    step: str | None
    state: JSON = field(default_factory=dict)
    iteration: int | None = None
    result: JSON | None = None
    cancel: bool = False
    skip_failed: str | None = None
    retry: Mapping[str, float | None] | None = None


@dataclass(frozen=True)
class CheckpointView:
    """The workflow-specific part of a checkpoint, computed from the state."""

    instructions: str
    agent_outputs: list[AgentOutput] = field(default_factory=list)
    editable_content: str | None = None
    consolidation: Consolidation | None = None
    context: JSON = field(default_factory=dict)
    #: Names of actions to leave out this time (e.g. skip_agent with no reviews).
    hide_actions: frozenset[str] = frozenset()
    #: Lower upper bounds for action inputs this time, by input name (e.g. a retry's
    #: ``timeout_s`` capped by the workflow's maximum agent timeout). The stored
    #: contract shows them, and a resolution is checked against them.
    input_maximum: Mapping[str, float] = field(default_factory=dict)


#: The action every checkpoint may offer, handled by the engine itself: the workflow
#: is cancelled, its pending checkpoint superseded (``on_resolve`` is not called).
CANCEL = CheckpointAction(
    name="cancel",
    label="Cancel workflow",
    style=ActionStyle.DANGER,
    destructive=True,
    description="Stop the workflow for good.",
)


@dataclass(frozen=True)
class AgentStep:
    name: str
    tasks: Callable[[StepContext], list[AgentTask]]
    #: Called once every task has finished, with the latest run of each task.
    on_done: Callable[[StepContext, dict[str, AgentRun]], Next]


@dataclass(frozen=True)
class CheckpointStep:
    """A declarative checkpoint: title, actions and label are fixed; the view and
    the routing are functions. The engine builds the contract from this."""

    name: str
    title: str
    actions: list[CheckpointAction]
    view: Callable[[StepContext], CheckpointView]
    on_resolve: Callable[[StepContext, Resolution], Next]
    editable_label: str = "Content"


Step = AgentStep | CheckpointStep


@dataclass(frozen=True)
class Committed:
    """A workflow as a commit left it: what an ``after_commit`` hook sees."""

    ctx: StepContext
    status: WorkflowStatus
    #: The step it is at now; ``None`` once it ended.
    step: str | None
    result: JSON | None = None


@dataclass(frozen=True)
class WorkflowDefinition:
    type: str
    title: str
    first_step: str
    steps: Mapping[str, Step]
    #: Builds the initial state and validates the agents entry (raise InvalidInput).
    initial_state: Callable[[JSON], JSON] = lambda agents: {}
    #: Side effects outside the database (files in the workspace), run by the engine
    #: after an agent step's commit and after a resolution's commit, never inside a
    #: transaction, in a thread, and only for workflows with a workspace. It may run
    #: more than once for one state, so it must be idempotent; an ``OSError`` or
    #: ``OrchestraError`` it raises is logged with the workflow id (the commit stands).
    after_commit: Callable[[Committed], None] | None = None

    def step(self, name: str) -> Step:
        return self.steps[name]


@cache
def definitions() -> dict[str, WorkflowDefinition]:
    """Every installed workflow definition, by type."""
    found: dict[str, WorkflowDefinition] = {}
    for ep in entry_points(group="orchestra.workflows"):
        definition = ep.load()
        found[definition.type] = definition
    return found


def get_definition(workflow_type: str) -> WorkflowDefinition:
    found = definitions().get(workflow_type)
    if found is None:
        known = ", ".join(sorted(definitions())) or "none"
        raise InvalidInput(
            f"unknown workflow type {workflow_type!r}; known types: {known}",
            details={"type": workflow_type},
        )
    return found
