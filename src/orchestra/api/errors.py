"""Errors to HTTP, in one place: one shape, ``{"error": {"code", "message", "details"}}``.

Domain errors carry a stable ``code``; this module picks the HTTP status for
each class. FastAPI's own errors (validation, unknown route, wrong method) and
driver errors get the same shape. Anything unexpected becomes a 500 with a
generic message and is logged once here with its traceback: a response never
carries a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestra.domain.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    LeaseLost,
    LimitReached,
    NotFound,
    OrchestraError,
)
from orchestra.domain.untrusted import printable

log = logging.getLogger(__name__)

#: Domain error class → HTTP status; the first matching class (in order) wins.
STATUS_BY_ERROR: list[tuple[type[OrchestraError], int]] = [
    (NotFound, 404),
    (InvalidInput, 422),
    (Conflict, 409),  # also TransitionNotAllowed and ResolutionConflict
    (LeaseLost, 409),
    (LimitReached, 429),
    (DatabaseUnavailable, 503),
]

#: Codes for errors raised by the framework as plain HTTP statuses.
CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    503: "database_unavailable",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer (documented in the OpenAPI schema)."""

    error: ErrorDetail


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def status_of(exc: OrchestraError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


#: Documented error answers, for the routes' ``responses=``.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        s: {"model": ErrorBody, "description": CODE_BY_STATUS.get(s, "error")} for s in statuses
    }


async def _domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OrchestraError)
    status = status_of(exc)
    if status >= 500:
        log.warning("%s: %s", exc.code, exc.message)
    return error_response(status, exc.code, exc.message, exc.details)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            # Quoted back safely: a client's key or message may hold a lone surrogate.
            "loc": [printable(str(p)) for p in e.get("loc", ())],
            "msg": printable(str(e.get("msg", ""))),
            "type": e["type"],
        }
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
    return error_response(422, "invalid_input", summary or "invalid request", {"errors": errors})


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = CODE_BY_STATUS.get(status, f"http_{status}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(status, code, message, headers=exc.headers)


async def _db_unreachable(_: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable: %s", exc)
    return error_response(
        503, DatabaseUnavailable.code, "the database is unavailable; nothing was changed"
    )


async def _db_refused_value(_: Request, exc: Exception) -> JSONResponse:
    log.info("the database refused a value: %s", exc)
    return error_response(
        422, InvalidInput.code, "the database refused a value in the request (nothing was changed)"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OrchestraError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(OperationalError, _db_unreachable)
    app.add_exception_handler(InterfaceError, _db_unreachable)
    app.add_exception_handler(DataError, _db_refused_value)
    app.add_middleware(CatchAllMiddleware)


def log_task_failure(message: str) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback for a background task: log its exception (not swallowed)."""

    def report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(message, exc_info=task.exception())

    return report


class CatchAllMiddleware:
    """Turn an unexpected exception into a logged, generic 500 in the error shape.

    (Starlette's own last-resort handler would log and then re-raise it, so the
    server logs it a second time.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept"):
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method", "WS"), scope["path"])
            if scope["type"] != "http" or started:
                return  # the server closes the connection
            response = error_response(500, "internal_error", "internal server error (logged)")
            await response(scope, receive, send)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes``: by Content-Length before reading,
    and by the bytes actually streamed (chunked uploads, lying headers)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            exc = BodyTooLarge(self.max_bytes)
            response = error_response(413, "payload_too_large", str(exc.detail))
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
