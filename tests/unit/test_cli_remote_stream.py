"""The remote CLI's side of the event log: the server's SSE stream read with httpx-sse,
resumed after a dropped connection from the last event it got (``Last-Event-ID``),
and error answers turned into errors that keep the API's code."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from orchestra.cli.errors import ExitCode, exit_code_for
from orchestra.cli.remote import RemoteBackend
from orchestra.domain.errors import Conflict, LimitReached, NotFound, OrchestraError
from orchestra.domain.events import EventType
from orchestra.domain.models import Event

SSE = {"content-type": "text/event-stream"}


def _frame(event_id: int) -> bytes:
    event = Event(
        id=event_id,
        workflow_id="w1",
        type=EventType.WORKFLOW_STATUS_CHANGED,
        data={"n": event_id},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return (
        f"id: {event_id}\nevent: {event.type.value}\ndata: {event.model_dump_json()}\n\n".encode()
    )


class _Drops(httpx.AsyncByteStream):
    """A stream body that sends ``chunks`` and then loses the connection."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        raise httpx.ReadError("connection lost")


def _backend(handler: httpx.MockTransport) -> RemoteBackend:
    backend = RemoteBackend("http://orchestra.test", "t0ken")
    backend.client = httpx.AsyncClient(
        base_url=backend.where, headers=backend.client.headers, transport=handler
    )
    return backend


async def test_a_dropped_stream_resumes_after_the_last_event_it_got() -> None:
    asked: list[tuple[str | None, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append((request.headers.get("last-event-id"), request.url.params.get("after")))
        if len(asked) == 1:  # two events, a keep-alive, half a frame, then the line drops
            body = _frame(5) + b": keep-alive\n\n" + _frame(6) + _frame(7)[:20]
            return httpx.Response(200, headers=SSE, stream=_Drops(body))
        return httpx.Response(200, headers=SSE, content=_frame(6) + _frame(7) + _frame(8))

    backend = _backend(httpx.MockTransport(answer))
    got: list[Event] = []
    async with contextlib.aclosing(backend.events("w1", after=4)) as events:
        async for event in events:
            got.append(event)
            if len(got) == 4:
                break
    await backend.aclose()
    assert [e.id for e in got] == [5, 6, 7, 8]  # 6 again on the wire: not yielded twice
    assert got[0].data == {"n": 5} and got[0].type is EventType.WORKFLOW_STATUS_CHANGED
    assert asked == [("4", "4"), ("6", "6")]


@pytest.mark.parametrize(
    ("status", "code", "kind", "exit_code"),
    [
        (404, "not_found", NotFound, ExitCode.NOT_FOUND),
        (409, "already_resolved", Conflict, ExitCode.CONFLICT),
        (409, "idempotency_key_reused", Conflict, ExitCode.CONFLICT),
        (429, "too_many_streams", LimitReached, ExitCode.ERROR),
    ],
)
async def test_an_error_answer_keeps_the_apis_code(
    status: int, code: str, kind: type[OrchestraError], exit_code: ExitCode
) -> None:
    body = {"error": {"code": code, "message": f"it is {code}", "details": {"limit": 3}}}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    backend = _backend(httpx.MockTransport(answer))
    with pytest.raises(kind) as raised:
        await backend.get_workflow("w1")
    await backend.aclose()
    exc = raised.value
    assert (exc.code, exc.message, exc.details) == (code, f"it is {code}", {"limit": 3})
    assert exit_code_for(exc) is exit_code


async def test_an_error_answer_without_the_apis_shape_still_has_a_code() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    backend = _backend(httpx.MockTransport(answer))
    with pytest.raises(OrchestraError) as raised:
        await backend.get_workflow("w1")
    await backend.aclose()
    assert raised.value.code == "http_502" and "502" in raised.value.message
