"""How a workflow is defined: a graph of agent steps and checkpoint steps in Python.

A definition is data plus pure functions of the workflow's typed state (a
:class:`WorkflowState` model it declares). The engine owns persistence, leases,
retries, ``cancel`` and the checkpoint contract; a definition only says which
agents to run with which prompts, what each checkpoint shows, and where each
outcome leads (:class:`Next`). Plan & Review (:mod:`orchestra.workflows.plan_review`)
is the worked example. Definitions are found through the ``orchestra.workflows``
entry-point group, or registered in-process with :func:`register_definition`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestra.agents.base import Adapter
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


class WorkflowState(BaseModel):
    """Base of a definition's state: read-only, and only the declared fields (a
    misspelt key is an error, not a silently lost value). Stored as the workflow
    row's JSON, fields that are ``None`` left out; on its own it is the empty state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied and validated (unlike ``model_copy``, a
        wrong name or type fails here, in the step that made it). Values are shared,
        not copied: the state is read-only."""
        return self.model_validate({**self.__dict__, **changes})


S = TypeVar("S", bound=WorkflowState)


@dataclass(frozen=True)
class StepContext(Generic[S]):
    """What a definition's functions see of the workflow (read-only)."""

    workflow_id: str
    name: str
    prompt: str
    iteration: int
    max_iterations: int
    workspace: Path | None
    agents: JSON
    state: S


@dataclass(frozen=True)
class Workdir:
    """Where a task runs when not in the workspace (e.g. a git worktree), and the
    work around each attempt, run by the engine in a thread:

    ``prepare`` before the agent starts, on every attempt (make the directory, or
    reset it to the last recorded snapshot after an attempt was cut short);
    ``capture`` after the agent answered and before its run is recorded, whose
    facts (e.g. the snapshot's commit) are stored in the run's ``meta`` in the
    same transaction. Either may raise :class:`~orchestra.domain.errors.OrchestraError`:
    the run then fails with that message, for a person to retry.
    """

    path: Path
    prepare: Callable[[], None] | None = None
    capture: Callable[[], JSON] | None = None


@dataclass(frozen=True)
class AgentTask:
    """One agent to run in an agent step."""

    key: str  # unique within the step, e.g. "planner", "reviewer-2"
    #: The agent's job in the workflow (``planner``, ``reviewer``).
    job: str
    adapter: str
    options: JSON
    prompt: str
    timeout_s: float
    output_schema: JSON | None = None
    #: The agent's previous session to continue, when it was configured to resume.
    resume_session: str | None = None
    #: Where it runs, when not in the workspace.
    workdir: Workdir | None = None
    #: Work the definition does itself (a check command, git), in place of an
    #: adapter from the registry; ``adapter`` is then only the name recorded.
    runner: Adapter | None = None


@dataclass(frozen=True)
class Next:
    """Where the workflow goes after a step or a resolution.

    ``step=None`` with ``cancel=False`` completes the workflow with ``result``.
    ``state``: the workflow's new state (an instance of the definition's state
    model, e.g. ``ctx.state.replace(plan=...)``); ``None`` keeps it as it is.
    ``skip_failed`` marks the failed agent runs of the current
    iteration's step ``skip_failed`` as skipped. ``retry``: agents of the next
    step to run again although their last attempt failed, each with a timeout
    override or ``None`` (the engine keeps it, out of the state, until that
    step ends).
    """

    step: str | None
    state: WorkflowState | None = None
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
    #: What the person is asked for, in one line (inbox rows, notifications, the
    #: CLI), e.g. "Plan v2 reviewed — 3 approve; recommended: approve". Empty: the title.
    summary: str = ""
    #: The action the definition recommends here, marked where the actions are shown
    #: (ignored when it is not offered this time).
    recommended: str | None = None
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
class AgentStep(Generic[S]):
    """Agents run in parallel; when the last one ends, ``on_done`` says where next."""

    name: str
    tasks: Callable[[StepContext[S]], list[AgentTask]]
    #: Called once every task has finished, with the latest run of each task.
    on_done: Callable[[StepContext[S], dict[str, AgentRun]], Next]


@dataclass(frozen=True)
class CheckpointStep(Generic[S]):
    """A declarative checkpoint: title, actions and label are fixed; the view and
    the routing are functions. The engine builds the contract from this."""

    name: str
    title: str
    actions: list[CheckpointAction]
    view: Callable[[StepContext[S]], CheckpointView]
    #: Routes every action but ``cancel`` (the engine's own).
    on_resolve: Callable[[StepContext[S], Resolution], Next]
    editable_label: str = "Content"


Step = AgentStep[Any] | CheckpointStep[Any]


@dataclass(frozen=True)
class Committed(Generic[S]):
    """A workflow as a commit left it: what an ``after_commit`` hook sees."""

    ctx: StepContext[S]
    status: WorkflowStatus
    #: The step it is at now; ``None`` once it ended.
    step: str | None
    result: JSON | None = None


@dataclass(frozen=True)
class Start:
    """A workflow about to be created, as its definition's ``start`` hook sees it."""

    agents: JSON
    #: The client's start options, validated by the definition's ``options`` model.
    options: BaseModel | None
    workspace: Path | None
    #: The result of the completed workflow this one continues, when it continues one.
    previous_result: JSON | None = None


@dataclass(frozen=True)
class WorkflowDefinition(Generic[S]):
    """A workflow type: its state model and its steps, by name."""

    type: str
    title: str
    #: The state model: what the steps read (``ctx.state``) and return (``Next.state``).
    state: builtins.type[S]
    first_step: str
    steps: Mapping[str, AgentStep[S] | CheckpointStep[S]]
    #: Builds the initial state and validates the agents entry (raise InvalidInput);
    #: ``None``: the state model's defaults.
    initial_state: Callable[[JSON], S] | None = None
    #: The first step for a given initial state, when it is not always ``first_step``
    #: (e.g. implementing a plan given at the start skips planning).
    entry: Callable[[S], str] | None = None
    #: The agent jobs a client may choose agents for (``agents`` of a start request).
    agent_jobs: tuple[str, ...] = ("planner", "reviewers")
    #: Start options a client may give (a pydantic model; ``None``: it takes none).
    options: builtins.type[BaseModel] | None = None
    #: Instead of ``initial_state``: checks a start beyond the agents (e.g. that the
    #: workspace is a git repository; raise InvalidInput) and builds the initial
    #: state. It may block (it runs in a thread), and runs before anything is written.
    start: Callable[[Start], S] | None = None
    #: Side effects outside the database (files in the workspace), run by the engine
    #: after an agent step's commit and after a resolution's commit, never inside a
    #: transaction, in a thread, and only for workflows with a workspace. It may run
    #: more than once for one state, so it must be idempotent; an ``OSError`` or
    #: ``OrchestraError`` it raises is logged with the workflow id (the commit stands).
    after_commit: Callable[[Committed[S]], None] | None = None

    def first_step_for(self, stored: JSON) -> str:
        """The first step of a workflow whose stored state is ``stored`` (loaded only
        when the definition chooses by it)."""
        if self.entry is None:
            return self.first_step
        return self.entry(self.load_state(stored))

    def step(self, name: str) -> Step:
        return self.steps[name]

    def new_state(self, agents: JSON) -> S:
        """The state a new workflow starts with."""
        if self.initial_state is None:
            return self.state()
        return self.initial_state(agents)

    def parse_options(self, raw: JSON | None) -> BaseModel | None:
        """The client's start options as the definition's model (bad ones: InvalidInput)."""
        if self.options is None:
            if raw:
                raise InvalidInput(
                    f"workflow type {self.type!r} takes no options", details={"field": "options"}
                )
            return None
        try:
            return self.options.model_validate(raw or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(
                f"invalid options for {self.type!r}: {problems}", details={"field": "options"}
            ) from None

    def load_state(self, stored: JSON) -> S:
        """The state model of a workflow row's stored JSON."""
        return self.state.model_validate(stored)

    def dump_state(self, state: WorkflowState) -> JSON:
        """The JSON to store for ``state``: its fields, those that are ``None`` left
        out (the shape rows have always had, so old rows load unchanged)."""
        if not isinstance(state, self.state):
            raise TypeError(
                f"workflow type {self.type!r} keeps a {self.state.__name__} state, "
                f"a step returned a {type(state).__name__}"
            )
        return {k: v for k, v in state.model_dump(mode="json").items() if v is not None}


# -- the registry -------------------------------------------------------------

#: Definitions registered in this process (tests, embedding apps), by type.
_registered: dict[str, WorkflowDefinition[Any]] = {}


@cache
def _installed() -> dict[str, WorkflowDefinition[Any]]:
    """The definitions of the ``orchestra.workflows`` entry points, by type (loaded once)."""
    found: dict[str, WorkflowDefinition[Any]] = {}
    for ep in entry_points(group="orchestra.workflows"):
        definition = ep.load()
        found[definition.type] = definition
    return found


def register_definition(definition: WorkflowDefinition[Any]) -> None:
    """Make ``definition`` known to this process, as an entry point would.

    Registering the same definition again is a no-op; another definition for a
    type already known (registered or installed) is an error, since workflows of
    that type would change behaviour under their feet."""
    known = _find(definition.type)
    if known is definition:
        return
    if known is not None:
        raise ValueError(
            f"workflow type {definition.type!r} is already defined ({known.title!r}); "
            "unregister it first or choose another type name"
        )
    _registered[definition.type] = definition


def unregister_definition(workflow_type: str) -> None:
    """Forget a definition :func:`register_definition` added (installed ones stay)."""
    _registered.pop(workflow_type, None)


@contextmanager
def registered(definition: WorkflowDefinition[Any]) -> Iterator[WorkflowDefinition[Any]]:
    """``definition`` registered for the ``with`` block (tests), and forgotten after
    unless it was known before."""
    added = _find(definition.type) is None
    register_definition(definition)
    try:
        yield definition
    finally:
        if added:
            unregister_definition(definition.type)


def definitions() -> dict[str, WorkflowDefinition[Any]]:
    """Every known workflow definition, by type: installed and registered."""
    return {**_installed(), **_registered}


def _find(workflow_type: str) -> WorkflowDefinition[Any] | None:
    return _registered.get(workflow_type) or _installed().get(workflow_type)


def get_definition(workflow_type: str) -> WorkflowDefinition[Any]:
    found = _find(workflow_type)
    if found is None:
        known = ", ".join(sorted(definitions())) or "none"
        raise InvalidInput(
            f"unknown workflow type {workflow_type!r}; known types: {known}",
            details={"type": workflow_type},
        )
    return found
