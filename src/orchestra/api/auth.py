"""Who is asking, and may they: bearer tokens, the web session cookie, and roles.

Credentials, in order: ``Authorization: Bearer <token>``; the ``orchestra_token``
cookie (set by the web login page: HttpOnly, SameSite=Strict); and, for the
event streams only (EventSource and WebSocket cannot set headers), ``?token=``.
When the cookie is the credential on an unsafe method, the request must also
carry ``X-CSRF-Token`` equal to the ``orchestra_csrf`` cookie (double submit).

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
from orchestra.store.tokens import authenticate_token

if TYPE_CHECKING:
    from orchestra.runtime import Runtime

TOKEN_COOKIE = "orchestra_token"
CSRF_COOKIE = "orchestra_csrf"
CSRF_HEADER = "X-CSRF-Token"
QUERY_TOKEN = "token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL = "local"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    def may(self, permission: Permission) -> bool:
        return self.role.may(permission)


def new_csrf_token() -> str:
    """A fresh value for the ``orchestra_csrf`` cookie (the web login sets it)."""
    return secrets.token_urlsafe(32)


def csrf_ok(conn: HTTPConnection, submitted: str | None) -> bool:
    """Whether ``submitted`` (header or form field) matches the CSRF cookie."""
    expected = conn.cookies.get(CSRF_COOKIE)
    return bool(expected and submitted and secrets.compare_digest(expected, submitted))


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
    allow_query: bool = False,
    method: str = "GET",
) -> Principal:
    """Authenticate ``conn`` and check ``permission``; raises :class:`AuthError`.

    ``bearer`` defaults to the request's ``Authorization: Bearer`` header.
    """
    runtime = runtime_of(conn)
    if runtime.settings.no_auth:
        return Principal(LOCAL, Role.ADMIN)
    token = bearer if bearer is not None else bearer_of(conn)
    from_cookie = False
    if token is None:
        token = conn.cookies.get(TOKEN_COOKIE)
        from_cookie = token is not None
    if token is None and allow_query:
        token = conn.query_params.get(QUERY_TOKEN)
    if not token:
        raise AuthError(
            401,
            "authentication required: send Authorization: Bearer <token> "
            "(create one with: orchestra token create --name NAME --role ROLE)",
        )
    info = await authenticate_token(runtime.db, token)
    if info is None:
        raise AuthError(401, "unknown or revoked token")
    if (
        from_cookie
        and method not in SAFE_METHODS
        and not csrf_ok(conn, conn.headers.get(CSRF_HEADER))
    ):
        raise AuthError(403, f"missing or wrong {CSRF_HEADER} header (CSRF check)")
    principal = Principal(info.name, info.role)
    if not principal.may(permission):
        raise AuthError(403, f"the {info.role.value} role may not {permission.value}; ask an admin")
    return principal


def require(
    permission: Permission, *, allow_query: bool = False
) -> Callable[..., Awaitable[Principal]]:
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
                allow_query=allow_query,
                method=conn.scope.get("method", "GET"),
            )
        except AuthError as exc:
            raise exc.http() from None

    return dependency
