"""Event types: the rows of the append-only log that live updates are read from."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    WORKFLOW_CREATED = "workflow_created"
    #: Any status change of a workflow, checkpoint or agent run (data: id, from, to, …).
    WORKFLOW_STATUS_CHANGED = "workflow_status_changed"
    CHECKPOINT_STATUS_CHANGED = "checkpoint_status_changed"
    AGENT_RUN_STATUS_CHANGED = "agent_run_status_changed"
    #: The workflow moved to another step (data: step, step_index, iteration).
    STEP_STARTED = "step_started"
    CHECKPOINT_CREATED = "checkpoint_created"
    AGENT_RUN_STARTED = "agent_run_started"
    #: Throttled progress of a running agent (data: agent_run_id, agent, lines).
    AGENT_PROGRESS = "agent_progress"
    #: A person said "not now" (data: checkpoint_id, until or null to wake it, by).
    CHECKPOINT_SNOOZED = "checkpoint_snoozed"
    #: A checkpoint's due time passed (data: checkpoint_id, due_at, action taken or
    #: null, escalated targets).
    CHECKPOINT_DEADLINE_PASSED = "checkpoint_deadline_passed"


class NotificationKind(StrEnum):
    """What a notification target may subscribe to (``[[notify]] events``)."""

    CHECKPOINT_PENDING = "checkpoint_pending"
    WORKFLOW_FAILED = "workflow_failed"
    WORKFLOW_COMPLETED = "workflow_completed"
    WORKFLOW_CANCELLED = "workflow_cancelled"
    #: A checkpoint's due time passed undecided (sent to its escalation targets).
    CHECKPOINT_OVERDUE = "checkpoint_overdue"
