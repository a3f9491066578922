"""Who is asking, and may they: bearer tokens, the web session cookie, and roles.

Credentials, in order: ``Authorization: Bearer <token>``; the ``orchestra_session``
cookie (set by the web login page: HttpOnly, SameSite=Strict), whose secret names
a server-side session row (:mod:`orchestra.store.sessions`). The API token is never
in a cookie nor in a URL (URLs end up in logs): the browser's EventSource and
WebSocket send the session cookie, other clients the header. When the cookie is
the credential on an unsafe method, the request must also carry ``X-CSRF-Token``
equal to the session's own CSRF token. Without a session (``no_auth``), pages use
the ``orchestra_csrf`` cookie instead (double submit); in both cases
:mod:`orchestra.api.boundary` has already refused a foreign Origin.

Missing, unknown or revoked token → 401; a role without the permission → 403.
With ``settings.no_auth`` (loopback only, asked for explicitly) everyone is
``local`` with the admin role. The principal's name is what Orchestra records
as ``created_by`` / ``resolved_by``.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from orchestra.domain.roles import Permission, Role
from orchestra.store.sessions import WebSession, find_session
from orchestra.store.tokens import authenticate_token

if TYPE_CHECKING:
    from orchestra.runtime import Runtime

SESSION_COOKIE = "orchestra_session"
CSRF_COOKIE = "orchestra_csrf"
CSRF_HEADER = "X-CSRF-Token"
#: Where :func:`identify` leaves the session it found, for the pages' CSRF checks.
SESSION_SCOPE = "orchestra.session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL = "local"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    def may(self, permission: Permission) -> bool:
        return self.role.may(permission)


def new_csrf_token() -> str:
    """A fresh value for the ``orchestra_csrf`` cookie (pages without a session)."""
    return secrets.token_urlsafe(32)


def session_of(conn: HTTPConnection) -> WebSession | None:
    """The web session :func:`identify` found for this connection, if any."""
    found = conn.scope.get(SESSION_SCOPE)
    return found if isinstance(found, WebSession) else None


def expected_csrf(conn: HTTPConnection) -> str | None:
    """The CSRF token this connection must send: its session's, else the cookie's."""
    found = session_of(conn)
    return found.csrf_token if found is not None else conn.cookies.get(CSRF_COOKIE)


def csrf_ok(conn: HTTPConnection, submitted: str | None) -> bool:
    """Whether ``submitted`` (header or form field) is this connection's CSRF token."""
    expected = expected_csrf(conn)
    return bool(
        expected and submitted and secrets.compare_digest(expected.encode(), submitted.encode())
    )


def bearer_of(conn: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer`` header (WebSocket routes parse it here)."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def runtime_of(conn: HTTPConnection) -> Runtime:
    runtime: Runtime = conn.app.state.runtime
    return runtime


_bearer = HTTPBearer(auto_error=False, description="an API token: `orchestra token create`")


class AuthError(Exception):
    """Why a connection was refused: 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def http(self) -> HTTPException:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return HTTPException(self.status, self.message, headers=headers)


async def identify(
    conn: HTTPConnection,
    permission: Permission,
    *,
    bearer: str | None = None,
    method: str = "GET",
) -> Principal:
    """Authenticate ``conn`` and check ``permission``; raises :class:`AuthError`.

    ``bearer`` defaults to the request's ``Authorization: Bearer`` header.
    """
    runtime = runtime_of(conn)
    if runtime.settings.no_auth:
        return Principal(LOCAL, Role.ADMIN)
    token = bearer if bearer is not None else bearer_of(conn)
    secret = conn.cookies.get(SESSION_COOKIE) if token is None else None
    if token:
        info = await authenticate_token(runtime.db, token)
        if info is None:
            raise AuthError(401, "unknown or revoked token")
    elif secret:
        found = await find_session(runtime.db, secret)
        if found is None:
            raise AuthError(401, "your session has ended or expired (or its token was revoked)")
        conn.scope[SESSION_SCOPE] = found
        if method not in SAFE_METHODS and not csrf_ok(conn, conn.headers.get(CSRF_HEADER)):
            raise AuthError(403, f"missing or wrong {CSRF_HEADER} header (CSRF check)")
        info = found.token
    elif "token" in conn.query_params:
        raise AuthError(
            401,
            "a token in the URL is not accepted (URLs end up in logs); "
            "send it as Authorization: Bearer <token>",
        )
    else:
        raise AuthError(
            401,
            "authentication required: send Authorization: Bearer <token> "
            "(create one with: orchestra token create --name NAME --role ROLE)",
        )
    principal = Principal(info.name, info.role)
    if not principal.may(permission):
        raise AuthError(403, f"the {info.role.value} role may not {permission.value}; ask an admin")
    return principal


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency yielding the :class:`Principal` allowed ``permission``."""

    async def dependency(
        conn: HTTPConnection,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> Principal:
        bearer = credentials.credentials if credentials is not None else None
        try:
            return await identify(
                conn,
                permission,
                bearer=bearer,
                method=conn.scope.get("method", "GET"),
            )
        except AuthError as exc:
            raise exc.http() from None

    return dependency
