"""Who is looking at a page, and the session cookie the login page sets.

The API's :func:`orchestra.api.auth.identify` decides who a request comes from
(bearer token, the ``orchestra_session`` cookie, or ``no_auth``); this module
adds what pages need on top: a redirect to the login page instead of a 401, the
CSRF token forms carry in a hidden field and the script sends as
``X-CSRF-Token`` (the session's own; without a session, the ``orchestra_csrf``
cookie every page ensures, double submit), and reading a form body without a
multipart library (pages post ``application/x-www-form-urlencoded``).
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import Response

from orchestra.api.auth import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    AuthError,
    Principal,
    csrf_ok,
    identify,
    new_csrf_token,
    session_of,
)
from orchestra.domain.roles import Permission
from orchestra.store.sessions import OpenedSession

CSRF_FIELD = "csrf"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 100


class PageDenied(Exception):
    """A page the principal may not see: 401 → the login page, 403 → a refusal page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BadForm(Exception):
    """A form post that cannot be read or failed its CSRF check (nothing is done)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def principal(request: Request, permission: Permission = Permission.READ) -> Principal:
    """The principal allowed ``permission``, else :class:`PageDenied`.

    Pages check CSRF themselves (a form field, or the header for the script's
    posts), so identification runs as for a safe method.
    """
    try:
        return await identify(request, permission, method="GET")
    except AuthError as exc:
        raise PageDenied(exc.status, exc.message) from None


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(target, safe="")


def safe_next(raw: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    return raw


def csrf_value(request: Request) -> str:
    """The CSRF token for this page's forms and script: the session's, else the
    cookie's, else a new one that :func:`finish` will set as the cookie."""
    found = session_of(request)
    if found is not None:
        return found.csrf_token
    existing = request.cookies.get(CSRF_COOKIE)
    if existing:
        return existing
    fresh: str = request.scope.setdefault("orchestra.csrf", new_csrf_token())
    return fresh


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_csrf_cookie(request: Request, response: Response, value: str) -> None:
    # Not HttpOnly: the page's script reads it to send the X-CSRF-Token header.
    response.set_cookie(
        CSRF_COOKIE, value, httponly=False, samesite="strict", secure=_secure(request), path="/"
    )


def finish(request: Request, response: Response) -> Response:
    """Set the CSRF cookie when this request had none; mark the page uncacheable."""
    if CSRF_COOKIE not in request.cookies and "orchestra.csrf" in request.scope:
        set_csrf_cookie(request, response, request.scope["orchestra.csrf"])
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def set_session_cookie(
    request: Request, response: Response, opened: OpenedSession, ttl_s: int
) -> None:
    """The session's secret (never the API token), for as long as the session lasts."""
    response.set_cookie(
        SESSION_COOKIE,
        opened.secret,
        max_age=ttl_s,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )
    # The no-session CSRF cookie is of no use while signed in; a new one comes after logout.
    response.delete_cookie(CSRF_COOKIE, path="/")


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


async def read_form(request: Request, max_fields: int = MAX_FORM_FIELDS) -> dict[str, list[str]]:
    """The posted fields, after checking the content type and the CSRF field."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise BadForm(415, f"forms must be posted as {FORM_TYPE}")
    body = await request.body()
    try:
        fields = parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=max_fields,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadForm(400, f"the form could not be read: {exc}") from None
    if not csrf_ok(request, first(fields, CSRF_FIELD)):
        raise BadForm(
            403,
            "the form's security token did not match (the page was open too long, or "
            "cookies are blocked); reload the page and try again",
        )
    return fields


def check_csrf_header(request: Request) -> None:
    if not csrf_ok(request, request.headers.get(CSRF_HEADER)):
        raise BadForm(403, f"missing or wrong {CSRF_HEADER} header; reload the page")


def first(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name)
    return values[0] if values else ""
