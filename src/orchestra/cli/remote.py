"""The remote backend: the REST API of a running ``orchestra serve``.

Responses parse into the domain models (the API's response models are those
models), and error responses (``{"error": {"code", "message", "details"}}``)
become the domain's exceptions, so exit codes and rendering are the same as
in local mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, ServerSentEvent
from pydantic import BaseModel, RootModel, ValidationError

from orchestra.cli.backend import is_short_id
from orchestra.cli.errors import AccessDenied, CliError
from orchestra.domain.code import WorktreeInfo
from orchestra.domain.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    LimitReached,
    NotFound,
    OrchestraError,
)
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
from orchestra.domain.statuses import CheckpointStatus, NotificationStatus, WorkflowStatus


class _LastEvent(BaseModel):
    """The answer of ``GET /api/events/last``."""

    id: int


class _FullId(BaseModel):
    """The answer of ``GET /api/ids/{kind}/{prefix}``."""

    id: str


log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_ERRORS: dict[int, type[OrchestraError]] = {
    400: InvalidInput,
    401: AccessDenied,
    403: AccessDenied,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    422: InvalidInput,
    429: LimitReached,
    503: DatabaseUnavailable,
}
#: Reconnect attempts of an event stream before giving up (the cursor survives them).
STREAM_RETRIES = 5
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def error_from_response(response: httpx.Response) -> OrchestraError:
    """The domain exception an error response stands for: its class from the HTTP
    status (so exit codes match local mode), its ``code``, message and details from
    the body (so ``already_resolved`` stays ``already_resolved``, as locally)."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    cls = _ERRORS.get(status, OrchestraError)
    code = cls.code if cls is not OrchestraError else f"http_{status}"
    message = f"the server answered {status} {response.reason_phrase}"
    details: dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        message = str(error.get("message") or message)
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
        if isinstance(error.get("code"), str) and error["code"]:
            code = error["code"]
    elif isinstance(body, dict) and "detail" in body:
        message = f"{message}: {body['detail']}"
    if status == 401:
        message += " (pass --token or set ORCHESTRA_TOKEN; `orchestra token create` makes one)"
    exc = cls(message, details=details)
    exc.code = code  # the server's word, not the class default
    return exc


class RemoteBackend:
    def __init__(self, server: str, token: str | None) -> None:
        self.where = server.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.AsyncClient(base_url=self.where, headers=headers, timeout=TIMEOUT)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise error_from_response(response)
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(
                f"{self.where}{path} did not answer with JSON; is it an Orchestra server?"
            ) from exc

    async def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        body = await self._call(method, path, **kwargs)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise CliError(
                f"the server at {self.where} answered {path} with an unexpected body: {exc}"
            ) from exc

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
        body: dict[str, Any] = {
            "name": name,
            "type": type,
            "prompt": prompt,
            "max_iterations": max_iterations,
        }
        optional = {
            "workspace_path": workspace_path,
            "agents": agents,
            "options": options,
            "from_workflow": from_workflow,
            "deadline": deadline,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return await self._model(Workflow, "POST", "/api/workflows", json=body)

    async def get_workflow(self, workflow_id: str) -> Workflow:
        return await self._model(Workflow, "GET", f"/api/workflows/{workflow_id}")

    async def expand_id(self, kind: Literal["workflow", "checkpoint"], given: str) -> str:
        if not is_short_id(given):
            return given
        found = await self._model(_FullId, "GET", f"/api/ids/{kind}/{quote(given, safe='')}")
        return found.id

    async def list_workflows(
        self, *, status: WorkflowStatus | None, limit: int, cursor: str | None
    ) -> Page[Workflow]:
        params = _params(status=status, limit=limit, cursor=cursor)
        return await self._model(Page[Workflow], "GET", "/api/workflows", params=params)

    async def list_pending_checkpoints(
        self, *, limit: int, cursor: str | None, filter: InboxFilter | None = None
    ) -> Page[Checkpoint]:
        given = (filter or InboxFilter()).model_dump(mode="json")
        params = _params(status=CheckpointStatus.PENDING, limit=limit, cursor=cursor, **given)
        return await self._model(Page[Checkpoint], "GET", "/api/checkpoints", params=params)

    async def snooze(self, checkpoint_id: str, until: str) -> Checkpoint:
        path = f"/api/checkpoints/{quote(checkpoint_id, safe='')}/snooze"
        return await self._model(Checkpoint, "POST", path, json={"until": until})

    async def unsnooze(self, checkpoint_id: str) -> Checkpoint:
        path = f"/api/checkpoints/{quote(checkpoint_id, safe='')}/snooze"
        return await self._model(Checkpoint, "DELETE", path)

    async def get_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        return await self._model(Checkpoint, "GET", f"/api/checkpoints/{checkpoint_id}")

    async def resolve(self, checkpoint_id: str, decision: Decision) -> Checkpoint:
        body = decision.model_dump(mode="json")
        # One key per decision: a retried request gets the original answer.
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        return await self._model(
            Checkpoint,
            "POST",
            f"/api/checkpoints/{checkpoint_id}/resolve",
            json=body,
            headers=headers,
        )

    async def resolve_batch(self, checkpoint_ids: list[str], decision: Decision) -> BatchResult:
        body = {**decision.model_dump(mode="json"), "checkpoint_ids": checkpoint_ids}
        headers = {"Idempotency-Key": uuid.uuid4().hex}  # a retried request: the same answers
        return await self._model(
            BatchResult, "POST", "/api/checkpoints/resolve", json=body, headers=headers
        )

    async def cancel(self, workflow_id: str) -> Workflow:
        return await self._model(Workflow, "POST", f"/api/workflows/{workflow_id}/cancel")

    async def retry(self, workflow_id: str) -> Workflow:
        return await self._model(Workflow, "POST", f"/api/workflows/{workflow_id}/retry")

    async def history(self, workflow_id: str) -> History:
        return await self._model(History, "GET", f"/api/workflows/{workflow_id}/history")

    async def worktrees(self, workspace_path: str, *, prune: bool) -> list[WorktreeInfo]:
        if prune:
            body = {"workspace_path": workspace_path}
            left = await self._model(_Worktrees, "POST", "/api/worktrees/prune", json=body)
        else:
            params = {"workspace_path": workspace_path}
            left = await self._model(_Worktrees, "GET", "/api/worktrees", params=params)
        return left.root

    async def list_notifications(
        self, *, status: NotificationStatus | None, limit: int
    ) -> list[Notification]:
        params = _params(status=status, limit=limit)
        found = await self._model(_Notifications, "GET", "/api/notifications", params=params)
        return found.root

    async def get_notification(self, notification_id: str) -> NotificationDetail:
        path = f"/api/notifications/{quote(notification_id, safe='')}"
        return await self._model(NotificationDetail, "GET", path)

    async def requeue_notification(self, notification_id: str) -> Notification:
        path = f"/api/notifications/{quote(notification_id, safe='')}/requeue"
        return await self._model(Notification, "POST", path)

    async def prune_notifications(self, older_than: str) -> NotificationsPruned:
        body = {"older_than": older_than}
        return await self._model(NotificationsPruned, "POST", "/api/notifications/prune", json=body)

    async def last_event_id(self) -> int:
        found = await self._model(_LastEvent, "GET", "/api/events/last")
        return found.id

    async def events(self, workflow_id: str | None, *, after: int) -> AsyncGenerator[Event]:
        """The workflow's (or every workflow's) SSE stream, reconnecting with
        ``Last-Event-ID`` when it drops."""
        cursor, failures = after, 0
        path = (
            "/api/events/stream"
            if workflow_id is None
            else f"/api/workflows/{workflow_id}/events/stream"
        )
        while True:
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(cursor)}
            try:
                async with self.client.stream(
                    "GET",
                    path,
                    params={"after": cursor},
                    headers=headers,
                    timeout=httpx.Timeout(TIMEOUT.connect, read=None),
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from_response(response)
                    async for sse in EventSource(response).aiter_sse():
                        event = _event_of(sse)
                        if event is not None and event.id > cursor:
                            cursor, failures = event.id, 0
                            yield event
            except httpx.TransportError as exc:
                failures += 1
                if failures > STREAM_RETRIES:
                    raise
                log.warning("event stream interrupted (%s); reconnecting after #%d", exc, cursor)
            await asyncio.sleep(min(0.2 * 2**failures, 5.0))

    @contextlib.asynccontextmanager
    async def working(self, workflow_id: str) -> AsyncIterator[None]:
        """The server's workers drive the workflow; nothing to start here."""
        yield

    async def aclose(self) -> None:
        await self.client.aclose()


class _Worktrees(RootModel[list[WorktreeInfo]]):
    """The body of the worktree routes: a list."""


class _Notifications(RootModel[list[Notification]]):
    """The body of ``GET /api/notifications``: a list."""


def _event_of(sse: ServerSentEvent) -> Event | None:
    """The event an SSE message carries (its data is the event's JSON), or None."""
    try:
        return Event.model_validate_json(sse.data)
    except ValidationError:
        log.warning("ignoring a stream message that is not an event: %.200r", sse.data)
        return None


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset ones (status enums are strings already)."""
    return {k: v for k, v in values.items() if v is not None}
