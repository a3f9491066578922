"""The trust boundary in front of every route: which Host, and which Origin.

Two checks, in one ASGI middleware so that WebSocket handshakes get them too:

* **Host.** A DNS-rebinding page reaches a loopback server under its own name
  (``Host: evil.example``), so only known names are served: with ``no_auth`` the
  loopback names (``localhost``, ``127.0.0.1``, ``[::1]``, any port); otherwise
  ``settings.allowed_hosts`` (default: those plus the bind host). Else 400.
  ``GET /health`` alone answers any Host: load balancers probe it by address,
  and it tells nothing but "up" and the version.
* **Origin.** On an unsafe method (POST, PUT, PATCH, DELETE) and on a WebSocket
  handshake, an ``Origin`` header (or, without one, a ``Referer``) must be the
  server's own origin (the request's scheme with the Host header) or a host
  listed in ``allowed_hosts``; otherwise 403. Browsers send ``Origin`` on every
  POST and every WebSocket handshake, so a foreign page is always caught;
  a request with neither header (curl, the CLI) is not a browser's and passes on
  to the ordinary authentication (with ``no_auth``: none).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from orchestra.api.errors import CODE_BY_STATUS, error_response
from orchestra.config import Settings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Answered under any Host (see the module's docstring).
PROBE_PATH = "/health"
ANY_HOST = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class HostName:
    """A host name as the Host header spells it, parsed: lower-case, no brackets."""

    name: str
    port: int | None

    @staticmethod
    def parse(raw: str) -> HostName | None:
        """``name[:port]`` (IPv6 in brackets); None when it is not one."""
        raw = raw.strip().lower()
        if not raw or any(c in raw for c in "/\\@?#% \t"):
            return None
        try:
            parts = urlsplit("//" + raw)
            port = parts.port
        except ValueError:
            return None
        if not parts.hostname:
            return None
        return HostName(parts.hostname, port)

    def matches(self, entry: HostName) -> bool:
        """An ``allowed_hosts`` entry without a port allows every port."""
        return self.name == entry.name and entry.port in (None, self.port)


def _entries(names: list[str] | tuple[str, ...]) -> tuple[HostName, ...]:
    return tuple(h for h in (HostName.parse(n) for n in names if n != ANY_HOST) if h)


def is_wildcard(bind_host: str) -> bool:
    """Whether binding to ``bind_host`` listens on every address (it names none)."""
    return bind_host in _WILDCARDS


def default_allowed_hosts(bind_host: str) -> list[str]:
    """The loopback names, plus the bind host when it names one address."""
    hosts = list(LOOPBACK_NAMES)
    if not is_wildcard(bind_host) and bind_host not in hosts:
        try:
            is_v6 = ipaddress.ip_address(bind_host).version == 6
        except ValueError:
            is_v6 = False
        hosts.append(f"[{bind_host}]" if is_v6 else bind_host)
    return hosts


class Boundary:
    """Which hosts and origins one server accepts, from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.no_auth = settings.no_auth
        if settings.no_auth:
            configured: list[str] = list(LOOPBACK_NAMES)
            self.fix = (
                "without authentication (--no-auth) only localhost, 127.0.0.1 and [::1] "
                "are served; open it under one of those, or serve with tokens and list "
                "the name in allowed_hosts (ORCHESTRA_ALLOWED_HOSTS)"
            )
        else:
            configured = (
                settings.allowed_hosts
                if settings.allowed_hosts is not None
                else default_allowed_hosts(settings.host)
            )
            self.fix = (
                "to serve it under that name, add it to allowed_hosts (ORCHESTRA_ALLOWED_HOSTS)"
            )
        self.any_host = ANY_HOST in configured
        self.hosts = _entries(configured)
        #: Origins beyond the server's own: only names the operator listed.
        self.origins = _entries(settings.allowed_hosts or []) if not settings.no_auth else ()

    def host_problem(self, headers: Headers) -> str | None:
        raw = headers.get("host")
        host = HostName.parse(raw) if raw is not None else None
        if host is None:
            return "the request has no valid Host header"
        if self.any_host or any(host.matches(e) for e in self.hosts):
            return None
        return (
            f"this server does not answer to the host {raw!r} (a DNS-rebinding page looks "
            f"like this); {self.fix}"
        )

    def origin_problem(self, scope: Scope, headers: Headers) -> str | None:
        claimed = headers.get("origin")
        field = "Origin"
        if claimed is None:
            claimed, field = headers.get("referer"), "Referer"
        if claimed is None:
            return None  # not sent by a browser: authentication decides
        scheme = _SCHEMES.get(scope.get("scheme", "http"), "http")
        own = _origin(f"{scheme}://{headers.get('host', '')}")
        theirs = _origin(claimed)
        if theirs is not None and own is not None and theirs == own:
            return None
        if theirs is not None:
            host = HostName(theirs[1], theirs[2])
            if any(host.matches(e) for e in self.origins):
                return None
        return (
            f"cross-site request refused: its {field} {claimed[:100]!r} is not this server's "
            f"own address; use Orchestra from its own pages (if a proxy serves it under "
            f"another name, list that name in allowed_hosts, ORCHESTRA_ALLOWED_HOSTS)"
        )


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL or origin; None for anything else ("null")."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


class BoundaryMiddleware:
    """Refuse a foreign Host (400) or a foreign Origin (403) before any route runs."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.boundary = Boundary(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if kind == "http" and scope["path"] == PROBE_PATH and scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        status, problem = 400, self.boundary.host_problem(headers)
        if problem is None and (kind == "websocket" or scope.get("method") in UNSAFE_METHODS):
            status, problem = 403, self.boundary.origin_problem(scope, headers)
        if problem is None:
            await self.app(scope, receive, send)
        elif kind == "http":
            await error_response(status, CODE_BY_STATUS[status], problem)(scope, receive, send)
        else:
            websocket = WebSocket(scope, receive, send)
            await deny_websocket(websocket, status, CODE_BY_STATUS[status], problem)


async def deny_websocket(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse a handshake with an HTTP answer in the error shape (or a close code)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(status, code, message))
    else:
        await websocket.close(code=4000 + status, reason=message[:120])
