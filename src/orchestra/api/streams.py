"""Live events: Server-Sent Events and a WebSocket, both read from the log.

A client holds a cursor (an event id): ``Last-Event-ID`` (sent by browsers on
reconnect, so it wins) or ``?after=``. It gets every event after it, then live
ones as they commit; a keep-alive comment when idle; nothing else. Each SSE
frame carries the event id, so a reconnect loses nothing and repeats nothing.
The WebSocket sends the same event JSON as text messages.

Both authenticate as the rest of the API: the ``Authorization`` header, or the
web session's cookie (which a browser's EventSource and WebSocket send). There
is no token in the URL, where access logs and browser history would keep it.

Each open stream holds a slot of the hub's :class:`~orchestra.api.hub.StreamSlots`
(per principal and overall): over a cap the request gets a 429 before any
streaming starts, and a stream's end, however it ends, frees its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket
from fastapi.responses import StreamingResponse
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from orchestra.api.auth import AuthError, Principal, identify, require, runtime_of
from orchestra.api.boundary import deny_websocket
from orchestra.api.errors import error_responses
from orchestra.api.hub import EventHub, StreamSlot, TooManyStreams
from orchestra.domain.errors import InvalidInput, NotFound, OrchestraError
from orchestra.domain.roles import Permission

log = logging.getLogger(__name__)

router = APIRouter(tags=["events"], responses=error_responses(401, 422, 503))

StreamReader = Annotated[Principal, Depends(require(Permission.READ))]
#: Event ids are 64-bit integers in both databases.
MAX_EVENT_ID = 2**63 - 1
After = Annotated[
    int, Query(ge=0, le=MAX_EVENT_ID, description="send the events after this event id")
]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE_FRAME = b": keep-alive\n\n"


@dataclass(frozen=True)
class StreamSettings:
    #: A comment line is sent after this long without events (proxies drop idle streams).
    keepalive_s: float = 15.0
    #: The hub's slow poll of the log (another process may write the SQLite file).
    poll_s: float = 1.0


def _hub(conn: HTTPConnection) -> EventHub:
    hub: EventHub = conn.app.state.hub
    return hub


def _stream_settings(conn: HTTPConnection) -> StreamSettings:
    settings: StreamSettings = conn.app.state.stream_settings
    return settings


def _cursor(after: int, raw: str | None, field: str = "Last-Event-ID") -> int:
    """The client's cursor: ``raw`` (a header or query value) when given, else ``after``."""
    if raw is None or not raw.strip():
        return after
    try:
        cursor = int(raw)
    except ValueError:
        raise InvalidInput(
            f"{field} must be an event id (an integer)", details={"field": field}
        ) from None
    if not 0 <= cursor <= MAX_EVENT_ID:
        raise InvalidInput(
            f"{field} must be between 0 and {MAX_EVENT_ID}", details={"field": field}
        )
    return cursor


class _SlottedStream(StreamingResponse):
    """A streaming answer that frees its stream slot when it ends, however it ends
    (even when the client left before the first byte, so the body never started)."""

    def __init__(self, body: AsyncIterator[bytes], slot: StreamSlot) -> None:
        super().__init__(body, media_type="text/event-stream", headers=SSE_HEADERS)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


def _event_stream(
    conn: HTTPConnection, who: Principal, workflow_id: str | None, cursor: int
) -> StreamingResponse:
    slot = _hub(conn).slots.acquire(who.name)  # last: a refused request holds nothing
    return _SlottedStream(_sse(conn, workflow_id, cursor), slot)


async def _sse(conn: HTTPConnection, workflow_id: str | None, cursor: int) -> AsyncIterator[bytes]:
    runtime = runtime_of(conn)
    events = _hub(conn).follow(
        runtime.service,
        workflow_id=workflow_id,
        after=cursor,
        keepalive_s=_stream_settings(conn).keepalive_s,
    )
    async for batch in events:
        yield b"".join(e.frame for e in batch) if batch else KEEPALIVE_FRAME


_SSE_DOC = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "id: <event id>, event: <type>, data: <event JSON>; "
        "': keep-alive' comments when idle",
    },
    **error_responses(403, 404, 429),
}


@router.get("/api/events/stream", response_class=StreamingResponse, responses=_SSE_DOC)
async def stream_all_events(
    request: Request,
    who: StreamReader,
    after: After = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Every workflow's events (dashboards, the inbox)."""
    return _event_stream(request, who, None, _cursor(after, last_event_id))


@router.get(
    "/api/workflows/{workflow_id}/events/stream",
    response_class=StreamingResponse,
    responses=_SSE_DOC,
)
async def stream_workflow_events(
    request: Request,
    workflow_id: str,
    who: StreamReader,
    after: After = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """One workflow's events, after the cursor, then live."""
    cursor = _cursor(after, last_event_id)
    await runtime_of(request).service.get_workflow(workflow_id)  # 404 before streaming
    return _event_stream(request, who, workflow_id, cursor)


@router.websocket("/ws/workflows/{workflow_id}")
async def workflow_socket(websocket: WebSocket, workflow_id: str) -> None:
    """The same events as JSON text messages; ``?after=`` as for SSE (the handshake's
    Origin was checked by :mod:`orchestra.api.boundary`)."""
    try:
        who = await identify(websocket, Permission.READ)
        cursor = _cursor(0, websocket.query_params.get("after"), "after")
        await runtime_of(websocket).service.get_workflow(workflow_id)
        slot = _hub(websocket).slots.acquire(who.name)
    except AuthError as exc:
        await deny_websocket(
            websocket, exc.status, "unauthorized" if exc.status == 401 else "forbidden", exc.message
        )
        return
    except TooManyStreams as exc:
        await deny_websocket(websocket, 429, exc.code, exc.message)
        return
    except (InvalidInput, NotFound) as exc:
        await deny_websocket(
            websocket, 422 if isinstance(exc, InvalidInput) else 404, exc.code, exc.message
        )
        return
    try:
        await websocket.accept()
        sender = asyncio.create_task(_send_events(websocket, workflow_id, cursor))
        try:
            while True:  # the client says nothing; this notices when it leaves
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError):
                await sender
    finally:
        slot.release()


async def _send_events(websocket: WebSocket, workflow_id: str, cursor: int) -> None:
    events = _hub(websocket).follow(
        runtime_of(websocket).service,
        workflow_id=workflow_id,
        after=cursor,
        keepalive_s=_stream_settings(websocket).keepalive_s,
    )
    try:
        async for batch in events:  # empty ones: the server's pings keep the line alive
            for entry in batch:
                await websocket.send_text(entry.json)
        await websocket.close(code=1001)  # the server is shutting down
    except OrchestraError as exc:
        log.warning("websocket stream for %s failed: %s", workflow_id, exc.message)
        await websocket.close(code=1011)
