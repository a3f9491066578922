"""The domain models: one contract shared by the engine, store, API, web and CLI.

These pydantic models are what the service layer returns and what the HTTP API
serialises (its response models *are* these). The checkpoint contract is
:class:`Checkpoint`; any workflow's checkpoint is fully described by it, so a
client can render and resolve it without knowing the workflow.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from orchestra.domain.deadlines import CheckpointDeadline, DeadlinePolicy
from orchestra.domain.events import EventType, NotificationKind
from orchestra.domain.statuses import (
    ActionStyle,
    AgentRunStatus,
    BatchOutcome,
    CheckpointStatus,
    NotificationStatus,
    SnoozedView,
    WorkflowStatus,
)
from orchestra.domain.untrusted import Text

JSON = dict[str, Any]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ActionInput(Model):
    """An optional number a person may give with an action (e.g. a retry's timeout)."""

    name: str
    label: str
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""

    def accepts(self, value: float) -> bool:
        """Whether ``value`` is a finite number within the bounds."""
        low, high = self.minimum, self.maximum
        return (
            math.isfinite(value)
            and (low is None or value >= low)
            and (high is None or value <= high)
        )

    def bounds(self) -> str:
        """The bounds in words, for messages: ``"between 1 and 86400"``, ``"any number"``."""
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"between {low:g} and {high:g}"
        if low is not None:
            return f"at least {low:g}"
        return f"at most {high:g}" if high is not None else "any number"


class CheckpointAction(Model):
    """One thing a person may do at a checkpoint."""

    name: str
    label: str
    style: ActionStyle = ActionStyle.SECONDARY
    requires_content: bool = False
    #: Whether the action ends the workflow (the UI asks for confirmation).
    destructive: bool = False
    description: str = ""
    #: Optional numbers the action takes (see :attr:`Resolution.inputs`).
    inputs: list[ActionInput] = Field(default_factory=list)
    #: Whether it takes line comments on the code under review (:class:`LineComment`).
    takes_comments: bool = False


class AgentOutput(Model):
    """What one agent produced, as shown at a checkpoint."""

    agent: str
    #: The agent's job in the workflow (``planner``, ``reviewer``): not a person's role.
    #: Stored states and checkpoints written before migration 0006 call it ``role``.
    job: str = Field(validation_alias=AliasChoices("job", "role"))
    content: str
    structured: JSON | None = None
    agent_run_id: str | None = None
    status: AgentRunStatus = AgentRunStatus.COMPLETED
    error: str | None = None


class ReviewVerdict(Model):
    agent: str
    verdict: str | None = None
    confidence: float | None = None
    summary: str = ""


class ReviewIssue(Model):
    agent: str
    severity: str
    title: str
    category: str | None = None
    detail: str = ""
    #: Where a code review's issue is (the file, and the line in the new file).
    file: str | None = None
    line: int | None = None


class Consolidation(Model):
    """A consolidated view over several agents' reviews, workflow-independent."""

    verdicts: list[ReviewVerdict] = Field(default_factory=list)
    #: Issues grouped by severity, most severe first.
    issues_by_severity: dict[str, list[ReviewIssue]] = Field(default_factory=dict)
    recommendations: list[str] = Field(default_factory=list)
    agreement: str = ""


#: The most line comments one decision may carry.
MAX_LINE_COMMENTS = 500


class LineComment(Model):
    """A person's comment on one line of a file under review (the new file's line
    number; a removed line's number in the old file)."""

    file: Text = Field(min_length=1, max_length=4096)
    line: int = Field(ge=1, le=10_000_000)
    body: Text = Field(min_length=1, max_length=20_000)


class Decision(Model):
    """A person's answer at a checkpoint, as every layer passes it: the API's and the
    web form's body, the CLI's choice, the service's and the engine's argument."""

    action: Text
    #: The checkpoint's editable content as the person left it (None: not edited).
    edited_content: Text | None = None
    notes: Text | None = None
    #: Numbers the action takes, by name (e.g. a retry's ``timeout_s``): checked by the
    #: engine against what the action declares, so a wrong one gets a clear message.
    inputs: dict[Text, Any] | None = None
    #: Line comments on the code under review, for actions that take them.
    comments: list[LineComment] | None = Field(default=None, max_length=MAX_LINE_COMMENTS)

    @property
    def text(self) -> str | None:
        """The edited content when given and not blank."""
        if self.edited_content is not None and self.edited_content.strip():
            return self.edited_content
        return None


class Resolution(Decision):
    """A decision as recorded: with who made it and when (what a definition's
    ``on_resolve`` and every reader of a checkpoint get)."""

    #: The inputs as checked and recorded.
    inputs: dict[str, float] | None = None
    resolved_by: str
    resolved_at: datetime


class Checkpoint(Model):
    """The checkpoint contract."""

    id: str
    workflow_id: str
    number: int
    iteration: int
    step_name: str
    title: str
    instructions: str
    agent_outputs: list[AgentOutput] = Field(default_factory=list)
    editable_content: str | None = None
    editable_label: str = "Content"
    actions: list[CheckpointAction]
    consolidation: Consolidation | None = None
    context: JSON = Field(default_factory=dict)
    #: What is needed, in one line, and the action recommended (an offered one, or none).
    #: Checkpoints made before these existed have an empty summary.
    summary: str = ""
    recommended: str | None = None
    status: CheckpointStatus
    resolution: Resolution | None = None
    created_at: datetime
    #: When the decision is due (None: no deadline) and what happens then.
    due_at: datetime | None = None
    deadline: CheckpointDeadline | None = None
    #: "Not now": hidden from the inbox until this time (a time passed means none),
    #: and who said so. Not a decision: the checkpoint stays pending.
    snoozed_until: datetime | None = None
    snoozed_by: str | None = None

    def snoozed_at(self, now: datetime) -> bool:
        """Whether it is pending and snoozed until a time after ``now``."""
        return (
            self.status is CheckpointStatus.PENDING
            and self.snoozed_until is not None
            and self.snoozed_until > now
        )

    def action(self, name: str) -> CheckpointAction | None:
        return next((a for a in self.actions if a.name == name), None)


#: The longest a checkpoint may be snoozed for.
MAX_SNOOZE_DAYS = 30


class InboxFilter(Model):
    """Which pending checkpoints an inbox listing shows, as people give it: the
    service checks each field (a bad one is a 422 saying what to write)."""

    #: A workflow's id, or its first 4+ hex digits.
    workflow: str | None = None
    #: A checkpoint step's name (e.g. ``plan_ready``).
    step: str | None = None
    #: Only those waiting longer than this duration (``30m``, ``2h``, ``1d``).
    older_than: str | None = None
    snoozed: SnoozedView = SnoozedView.HIDE


#: Where the inbox's counts stop (see :class:`InboxCount`).
INBOX_COUNT_CAP = 1000


class InboxCount(Model):
    """The inbox's counts (the navigation badge, the tab title, the Snoozed view).

    Counts stop at ``capped_at + 1``: a badge says "1000+" without counting 100,000
    rows on every page."""

    #: Pending and not snoozed: what waits for a person now.
    pending: int
    #: Pending and snoozed until a time still to come.
    snoozed: int
    #: When the next snoozed checkpoint comes back (none snoozed: null).
    next_wake_at: datetime | None = None
    #: A count above this means "more than this".
    capped_at: int = INBOX_COUNT_CAP

    def shown(self, count: int) -> str:
        """A count as people read it: ``"1000+"`` past the cap."""
        return f"{self.capped_at}+" if count > self.capped_at else str(count)


#: The most checkpoints one batch decision resolves.
MAX_BATCH = 100


class BatchItem(Model):
    """What one checkpoint of a batch decision came to (each is its own resolution)."""

    checkpoint_id: str
    outcome: BatchOutcome
    message: str = ""
    checkpoint: Checkpoint | None = None


class BatchResult(Model):
    items: list[BatchItem]

    @property
    def resolved(self) -> int:
        return sum(1 for item in self.items if item.outcome is BatchOutcome.RESOLVED)


class Workflow(Model):
    id: str
    name: str
    type: str
    status: WorkflowStatus
    current_step: str | None
    iteration: int
    max_iterations: int
    prompt: str
    workspace_path: str | None = None
    #: The operator's agents it runs (names, timeouts), as resolved at its start.
    agents: JSON
    #: Its deadlines, fixed at its start (None: none of its checkpoints is due).
    deadline: DeadlinePolicy | None = None
    result: JSON | None = None
    error: str | None = None
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    #: The pending checkpoint in full, when the workflow waits for a person.
    pending_checkpoint: Checkpoint | None = None


class AgentRun(Model):
    id: str
    workflow_id: str
    step_name: str
    step_index: int
    iteration: int
    agent: str
    #: The agent's job in the workflow (``planner``, ``reviewer``).
    job: str
    adapter: str
    status: AgentRunStatus
    attempt: int
    prompt: str
    output: str | None = None
    structured: JSON | None = None
    error: str | None = None
    stderr_tail: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: int | None = None
    #: What else the agent reported (session id, turns, model, stop reason…).
    meta: JSON | None = None


class Event(Model):
    id: int
    workflow_id: str | None
    type: EventType
    data: JSON
    created_at: datetime


#: The most notifications one listing returns.
MAX_NOTIFICATIONS_LISTED = 500


class Notification(Model):
    """One row of the notification outbox: an event queued for one target, with
    what its last delivery attempt got (what admins see)."""

    #: Stable across retries: sent as ``X-Orchestra-Delivery`` so receivers dedupe.
    id: str
    target: str
    event_id: int
    kind: NotificationKind
    payload: JSON
    status: NotificationStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    last_status_code: int | None = None
    created_at: datetime
    delivered_at: datetime | None = None


class NotificationAttempt(Model):
    """One delivery attempt of a notification: when, how long, what the receiver said."""

    attempt: int
    started_at: datetime
    duration_ms: int | None = None
    status_code: int | None = None
    #: What went wrong (bounded); None when the receiver answered 2xx.
    error: str | None = None


class NotificationDetail(Notification):
    """A notification with its delivery attempts, oldest first (what admins look at
    to see why one failed)."""

    delivery_attempts: list[NotificationAttempt]


class NotificationsPruned(Model):
    """What ``prune`` removed: finished notifications, their attempts, and decision
    links that expired before the cut-off."""

    deleted: int
    attempts_deleted: int
    links_deleted: int


class History(Model):
    workflow: Workflow
    checkpoints: list[Checkpoint]
    agent_runs: list[AgentRun]
    events: list[Event]


T = TypeVar("T")


class Page(Model, Generic[T]):
    """A page of a list endpoint: ``{"items": [...], "next_cursor": ..., "prev_cursor": ...}``.

    ``next_cursor`` is passed back as ``cursor`` for the page after this one,
    ``prev_cursor`` as ``before`` for the page before it (null: none)."""

    items: list[T]
    next_cursor: str | None = None
    prev_cursor: str | None = None
