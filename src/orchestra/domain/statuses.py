"""Every status in Orchestra, with its allowed transitions beside it.

This module is the only place a status string is spelled out. SQL CHECK
constraints, the OpenAPI schema, the web pages and the CLI derive from these
enums; ``tests/unit/test_vocabulary.py`` fails when a status literal appears
anywhere else. The transition function (:mod:`orchestra.engine.transition`)
refuses any change that is not in these tables.
"""

from __future__ import annotations

from enum import StrEnum


class WorkflowStatus(StrEnum):
    PENDING = "pending"  # created, no worker has started it
    RUNNING = "running"  # a worker owns it (or may claim it) and runs steps
    AWAITING_CHECKPOINT = "awaiting_checkpoint"  # a person must decide
    COMPLETED = "completed"  # terminal: finished with a result
    FAILED = "failed"  # terminal unless retried: a step raised
    CANCELLED = "cancelled"  # terminal: a person cancelled it

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_WORKFLOW_STATUSES

    @property
    def is_runnable(self) -> bool:
        """A worker may claim a workflow in this status."""
        return self in RUNNABLE_WORKFLOW_STATUSES


W = WorkflowStatus
WORKFLOW_TRANSITIONS: dict[WorkflowStatus, frozenset[WorkflowStatus]] = {
    # pending → running: a worker claimed it; → cancelled: cancelled before start
    # pending → failed: starting it raised (a retry then starts it again)
    W.PENDING: frozenset({W.RUNNING, W.FAILED, W.CANCELLED}),
    # running → awaiting_checkpoint: a checkpoint step was reached
    # running → running: the next step (a recorded step change, same status)
    # running → completed | failed | cancelled
    W.RUNNING: frozenset({W.RUNNING, W.AWAITING_CHECKPOINT, W.COMPLETED, W.FAILED, W.CANCELLED}),
    # awaiting_checkpoint → running: resolved, more steps to run
    # awaiting_checkpoint → completed: resolved with a final action (approve)
    # awaiting_checkpoint → failed: the resolution could not be applied
    # awaiting_checkpoint → cancelled: resolved with cancel, or cancelled
    # awaiting_checkpoint → awaiting_checkpoint: resolved into another checkpoint
    #   (e.g. edit_reviewer_prompt; a recorded step change, same status)
    W.AWAITING_CHECKPOINT: frozenset(
        {W.RUNNING, W.AWAITING_CHECKPOINT, W.COMPLETED, W.FAILED, W.CANCELLED}
    ),
    W.COMPLETED: frozenset(),
    # failed → running: an explicit, recorded retry
    W.FAILED: frozenset({W.RUNNING}),
    W.CANCELLED: frozenset(),
}
TERMINAL_WORKFLOW_STATUSES = frozenset({W.COMPLETED, W.FAILED, W.CANCELLED})
RUNNABLE_WORKFLOW_STATUSES = frozenset({W.PENDING, W.RUNNING})
ACTIVE_WORKFLOW_STATUSES = frozenset(set(W) - TERMINAL_WORKFLOW_STATUSES)


class CheckpointStatus(StrEnum):
    PENDING = "pending"  # waiting for a person
    APPROVED = "approved"  # resolved with an action that accepts, content unchanged
    EDITED = "edited"  # resolved with edited content
    REJECTED = "rejected"  # resolved with an action that stops (cancel)
    SUPERSEDED = "superseded"  # its workflow was cancelled while it waited

    @property
    def is_resolved(self) -> bool:
        return self is not CheckpointStatus.PENDING


C = CheckpointStatus
CHECKPOINT_TRANSITIONS: dict[CheckpointStatus, frozenset[CheckpointStatus]] = {
    C.PENDING: frozenset({C.APPROVED, C.EDITED, C.REJECTED, C.SUPERSEDED}),
    C.APPROVED: frozenset(),
    C.EDITED: frozenset(),
    C.REJECTED: frozenset(),
    C.SUPERSEDED: frozenset(),
}


class AgentRunStatus(StrEnum):
    RUNNING = "running"  # started; owned by the worker holding the lease
    COMPLETED = "completed"  # produced content (kept across crashes and retries)
    FAILED = "failed"  # the agent reported a failure (timeout, error, …)
    INTERRUPTED = "interrupted"  # its worker died or lost the lease; rerun as attempt + 1
    CANCELLED = "cancelled"  # its workflow was cancelled
    SKIPPED = "skipped"  # a person chose to continue without it


A = AgentRunStatus
AGENT_RUN_TRANSITIONS: dict[AgentRunStatus, frozenset[AgentRunStatus]] = {
    A.RUNNING: frozenset({A.COMPLETED, A.FAILED, A.INTERRUPTED, A.CANCELLED}),
    A.COMPLETED: frozenset(),
    # failed → skipped: skip_agent at an agent_problem checkpoint
    A.FAILED: frozenset({A.SKIPPED}),
    A.INTERRUPTED: frozenset(),
    A.CANCELLED: frozenset(),
    A.SKIPPED: frozenset(),
}


class NotificationStatus(StrEnum):
    """A row of the notification outbox (not an entity of the transition table: its
    rows are written only by :mod:`orchestra.store.outbox`, each change guarded by
    the claim's attempt number)."""

    PENDING = "pending"  # to be sent (again) at its next_attempt_at
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # gave up after max_attempts


class ActionStyle(StrEnum):
    """How a checkpoint action is presented (the web UI maps these to buttons)."""

    PRIMARY = "primary"
    SECONDARY = "secondary"
    DANGER = "danger"


class Entity(StrEnum):
    """The things that have a status; each names its table and its transitions."""

    WORKFLOW = "workflow"
    CHECKPOINT = "checkpoint"
    AGENT_RUN = "agent_run"


TRANSITIONS: dict[Entity, dict[str, frozenset[str]]] = {
    Entity.WORKFLOW: {k.value: frozenset(v) for k, v in WORKFLOW_TRANSITIONS.items()},
    Entity.CHECKPOINT: {k.value: frozenset(v) for k, v in CHECKPOINT_TRANSITIONS.items()},
    Entity.AGENT_RUN: {k.value: frozenset(v) for k, v in AGENT_RUN_TRANSITIONS.items()},
}


def is_allowed(entity: Entity, old: str, new: str) -> bool:
    """Whether ``old → new`` is in the entity's transition table."""
    return new in TRANSITIONS[entity].get(old, frozenset())


class BatchOutcome(StrEnum):
    """What one checkpoint of a batch decision came to."""

    RESOLVED = "resolved"
    #: Someone else decided first: nothing changed.
    ALREADY_RESOLVED = "already_resolved"
    #: The decision does not fit it (e.g. the action is not offered there).
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    FAILED = "failed"


class SnoozedView(StrEnum):
    """Which pending checkpoints an inbox listing shows by their snooze ("not now
    until a time"): a snooze whose time has passed counts as none."""

    #: Only those not snoozed (the inbox): snoozed ones come back when their time passes.
    HIDE = "hide"
    #: Every one, snoozed or not.
    INCLUDE = "include"
    #: Only those snoozed until a time still to come (the "Snoozed" view).
    ONLY = "only"
