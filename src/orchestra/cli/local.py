"""The local backend: the service layer on the database, opened in this process.

Resolutions are recorded under the login name of the person at the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

from orchestra.cli.backend import EVENT_POLL_S, is_short_id
from orchestra.config import Settings
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
from orchestra.notifications import admin as notification_admin
from orchestra.runtime import Runtime, _redact, open_runtime
from orchestra.store import outbox
from orchestra.store.follow import LogFollower

log = logging.getLogger(__name__)

#: A terminal run hands in-flight agent steps back quickly when it stops; the
#: cut-short run is repeated as the next attempt when the workflow resumes.
SHUTDOWN_GRACE_S = 1.0
EVENT_BATCH = 500


class LocalBackend:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.service = runtime.service
        self.actor = getpass.getuser()
        self.where = _redact(runtime.settings.db_url)

    @classmethod
    def open(cls, settings: Settings) -> LocalBackend:
        return cls(open_runtime(settings))

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
    ) -> Workflow:
        return await self.service.create_workflow(
            name=name,
            prompt=prompt,
            type=type,
            workspace_path=workspace_path,
            agents=agents,
            max_iterations=max_iterations,
            created_by=self.actor,
            options=options,
            from_workflow=from_workflow,
            deadline=deadline,
        )

    async def get_workflow(self, workflow_id: str) -> Workflow:
        return await self.service.get_workflow(workflow_id)

    async def expand_id(self, kind: Literal["workflow", "checkpoint"], given: str) -> str:
        return await self.service.expand_id(kind, given) if is_short_id(given) else given

    async def list_workflows(
        self, *, status: WorkflowStatus | None, limit: int, cursor: str | None
    ) -> Page[Workflow]:
        statuses = [status] if status is not None else None
        return await self.service.list_workflows(statuses=statuses, limit=limit, cursor=cursor)

    async def list_pending_checkpoints(
        self, *, limit: int, cursor: str | None, filter: InboxFilter | None = None
    ) -> Page[Checkpoint]:
        return await self.service.list_checkpoints(limit=limit, cursor=cursor, filter=filter)

    async def snooze(self, checkpoint_id: str, until: str) -> Checkpoint:
        return await self.service.snooze(checkpoint_id, until, actor=self.actor)

    async def unsnooze(self, checkpoint_id: str) -> Checkpoint:
        return await self.service.unsnooze(checkpoint_id, actor=self.actor)

    async def get_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        return await self.service.get_checkpoint(checkpoint_id)

    async def resolve(self, checkpoint_id: str, decision: Decision) -> Checkpoint:
        return await self.service.resolve(checkpoint_id, decision, actor=self.actor)

    async def resolve_batch(self, checkpoint_ids: list[str], decision: Decision) -> BatchResult:
        return await self.service.resolve_batch(checkpoint_ids, decision, actor=self.actor)

    async def cancel(self, workflow_id: str) -> Workflow:
        return await self.service.cancel(workflow_id, actor=self.actor)

    async def retry(self, workflow_id: str) -> Workflow:
        return await self.service.retry(workflow_id, actor=self.actor)

    async def history(self, workflow_id: str) -> History:
        return await self.service.history(workflow_id)

    async def worktrees(self, workspace_path: str, *, prune: bool) -> list[WorktreeInfo]:
        # The person at the terminal has the database and the repository: pruning
        # needs no role here (the server asks an admin for it).
        return await self.service.worktrees(workspace_path, prune=prune)

    # The person at the terminal has the database: the outbox needs no role here
    # (the server asks an admin for it).

    async def list_notifications(
        self, *, status: NotificationStatus | None, limit: int
    ) -> list[Notification]:
        wanted = status.value if status else None
        return await self.runtime.db.read(
            lambda c: outbox.list_notifications(c, status=wanted, limit=limit)
        )

    async def get_notification(self, notification_id: str) -> NotificationDetail:
        return await notification_admin.notification(self.runtime.db, notification_id)

    async def requeue_notification(self, notification_id: str) -> Notification:
        return await notification_admin.requeue(self.runtime.db, notification_id, actor=self.actor)

    async def prune_notifications(self, older_than: str) -> NotificationsPruned:
        return await notification_admin.prune(self.runtime.db, older_than, actor=self.actor)

    async def last_event_id(self) -> int:
        return await self.service.last_event_id()

    async def events(self, workflow_id: str | None, *, after: int) -> AsyncGenerator[Event]:
        """The workflow's events through the log's one follower (the server's hub
        uses it too): this process's commits come with the doorbell, others are read."""
        db = self.runtime.db
        db.start_listening(asyncio.get_running_loop())
        follower = LogFollower(
            db, after, workflow_id=workflow_id, poll_s=EVENT_POLL_S, page=EVENT_BATCH
        )
        async with contextlib.aclosing(follower.batches()) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    @contextlib.asynccontextmanager
    async def working(self, workflow_id: str) -> AsyncIterator[None]:
        """Run a worker in this process for this workflow only (others' workflows
        are left to their own workers) while the caller waits for agents."""
        worker = self.runtime.service.engine.worker
        worker.settings.only = frozenset({workflow_id})
        worker.settings.shutdown_grace_s = SHUTDOWN_GRACE_S
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop), name="orchestra-cli-worker")
        caller = asyncio.current_task()

        def ended(_: asyncio.Task[None]) -> None:
            # A worker that stops on its own has failed; wake the caller so the
            # failure surfaces instead of waiting forever for progress.
            if not stop.is_set() and caller is not None:
                caller.cancel()

        task.add_done_callback(ended)
        try:
            yield
        finally:
            stop.set()
            await task

    async def aclose(self) -> None:
        self.runtime.close()
