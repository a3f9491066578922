"""What the CLI needs from Orchestra, whether it runs locally or on a server.

Commands talk to a :class:`Backend`; :mod:`orchestra.cli.local` opens the
database in this process and :mod:`orchestra.cli.remote` calls the REST API.
Both return the same domain models, so there is one rendering path.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

from orchestra.domain.code import WorktreeInfo
from orchestra.domain.models import (
    BatchResult,
    Checkpoint,
    Decision,
    Event,
    History,
    InboxFilter,
    Notification,
    NotificationDetail,
    NotificationsPruned,
    Page,
    Workflow,
)
from orchestra.domain.statuses import NotificationStatus, WorkflowStatus

_SHORT_ID = re.compile(r"[0-9a-fA-F]{4,31}")


def is_short_id(given: str) -> bool:
    """Whether ``given`` looks like an abbreviated id (4–31 hex digits); anything else
    is passed on as it is, so an unknown id is still "not found" (exit 3)."""
    return _SHORT_ID.fullmatch(given) is not None


#: How long a local event reader waits for the doorbell before reading again
#: (another process's commits on SQLite are only seen by reading).
EVENT_POLL_S = 0.5


class Backend(Protocol):
    #: Where the data lives, for messages: a redacted database URL or the server URL.
    where: str

    async def create_workflow(
        self,
        *,
        name: str,
        prompt: str,
        workspace_path: str | None,
        agents: dict[str, Any] | None,
        max_iterations: int,
        type: str = "plan_review",
        options: dict[str, Any] | None = None,
        from_workflow: str | None = None,
        deadline: dict[str, Any] | None = None,
    ) -> Workflow: ...

    async def get_workflow(self, workflow_id: str) -> Workflow: ...

    async def expand_id(self, kind: Literal["workflow", "checkpoint"], given: str) -> str:
        """The full id a unique prefix (4+ hex digits) names; a full id as it is."""
        ...

    async def list_workflows(
        self, *, status: WorkflowStatus | None, limit: int, cursor: str | None
    ) -> Page[Workflow]: ...

    async def list_pending_checkpoints(
        self, *, limit: int, cursor: str | None, filter: InboxFilter | None = None
    ) -> Page[Checkpoint]:
        """The inbox, oldest first; ``filter`` as the API's (snoozed ones hidden by default)."""
        ...

    async def snooze(self, checkpoint_id: str, until: str) -> Checkpoint:
        """Not now: leave it out of the inbox until ``until`` (``2h``, an ISO time)."""
        ...

    async def unsnooze(self, checkpoint_id: str) -> Checkpoint:
        """Bring a snoozed checkpoint back into the inbox now."""
        ...

    async def get_checkpoint(self, checkpoint_id: str) -> Checkpoint: ...

    async def resolve(self, checkpoint_id: str, decision: Decision) -> Checkpoint: ...

    async def resolve_batch(self, checkpoint_ids: list[str], decision: Decision) -> BatchResult:
        """The same decision for each checkpoint, each its own resolution."""
        ...

    async def cancel(self, workflow_id: str) -> Workflow: ...

    async def retry(self, workflow_id: str) -> Workflow: ...

    async def history(self, workflow_id: str) -> History: ...

    async def worktrees(self, workspace_path: str, *, prune: bool) -> list[WorktreeInfo]:
        """Orchestra's worktrees in a repository; with ``prune``, the ones left after
        removing those whose workflow ended or is unknown."""
        ...

    async def list_notifications(
        self, *, status: NotificationStatus | None, limit: int
    ) -> list[Notification]:
        """The outbox, newest first (on a server: an admin's token)."""
        ...

    async def get_notification(self, notification_id: str) -> NotificationDetail:
        """One notification (id or a unique start of it) with its delivery attempts."""
        ...

    async def requeue_notification(self, notification_id: str) -> Notification: ...

    async def prune_notifications(self, older_than: str) -> NotificationsPruned: ...

    def events(self, workflow_id: str | None, *, after: int) -> AsyncGenerator[Event]:
        """Every event of the workflow (``None``: of all workflows) after ``after``,
        then live ones; never ends."""
        ...

    async def last_event_id(self) -> int:
        """The newest event's id: a cursor to follow only what happens next."""
        ...

    def working(self, workflow_id: str) -> AbstractAsyncContextManager[None]:
        """While entered, the workflow makes progress (a local worker runs it, or the server)."""
        ...

    async def aclose(self) -> None: ...


def is_settled(workflow: Workflow) -> bool:
    """The workflow waits for a person or has ended: nothing moves until someone acts."""
    if workflow.status.is_terminal:
        return True
    return (
        workflow.status is WorkflowStatus.AWAITING_CHECKPOINT
        and workflow.pending_checkpoint is not None
    )
