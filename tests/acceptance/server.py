"""A real Orchestra server in a subprocess, for acceptance tests and benchmarks.

:func:`running_server` starts ``python -m orchestra.server`` on a free
loopback port with its own data directory, waits for ``/health``, yields a
:class:`ServerProcess`, and always stops it (SIGTERM, then SIGKILL). Helpers
below read Server-Sent Events (with httpx-sse, as the CLI does) and wait for
checkpoints and statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from orchestra.domain.roles import Role
from orchestra.store.db import Database
from orchestra.store.tokens import create_token, revoke_token
from tests.conftest import BACKENDS, fresh_database
from tests.support.waiting import eventually, eventually_sync

#: Fast engine settings for tests: short leases, so a killed server's work is
#: taken over quickly by the next one.
TEST_ENV = {"ORCHESTRA_LEASE_TTL_S": "3", "ORCHESTRA_LOG_LEVEL": "WARNING"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    database_url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL if it does not end in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


#: Named agents every test server offers (clients choose agents by name); a test that
#: writes its own ``orchestra.toml`` before starting the server keeps it.
TEST_AGENTS_TOML = """
[agents.demo]
adapter = "demo"

[agents.demo-slow]
adapter = "demo"
[agents.demo-slow.options]
delay_s = 1.5

[agents.demo-failing]
adapter = "demo"
[agents.demo-failing.options]
fail = "error"
"""


def _clean_env(extra: dict[str, str], data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    env.update(TEST_ENV)
    # Workspaces of tests live under the system's temporary directory.
    env["ORCHESTRA_ALLOWED_ROOTS"] = tempfile.gettempdir()
    env["ORCHESTRA_CONFIG"] = str(data_dir / "orchestra.toml")
    config = data_dir / "orchestra.toml"
    if not config.exists():
        config.write_text(TEST_AGENTS_TOML)
    env.update(extra)
    return env


def start_server(
    database_url: str,
    data_dir: Path,
    *,
    no_auth: bool = False,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout_s: float = 30.0,
) -> ServerProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "orchestra.server",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--database-url",
        database_url,
        "--data-dir",
        str(data_dir),
        "--sse-keepalive",
        "0.5",
        "--sse-poll",
        "0.5",
        *(["--no-auth"] if no_auth else []),
        *args,
    ]
    log_path = data_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=_clean_env(env or {}, data_dir)
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path, database_url)
    try:
        wait_healthy(server.base_url, proc, server.output, timeout_s)
    except RuntimeError:
        server.kill()
        raise
    return server


def wait_healthy(
    base_url: str, proc: subprocess.Popen[Any], output: Callable[[], object], timeout_s: float
) -> dict[str, Any]:
    """The ``/health`` answer of the server ``proc`` runs, once it is 200; fails at
    once if the process exits first, either way (RuntimeError) with its ``output``."""

    def answer() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(base_url + "/health", timeout=1)
            if r.status_code == 200:
                return dict(r.json())
        return None

    try:
        return eventually_sync(answer, what=f"{base_url}/health", timeout_s=timeout_s)
    except AssertionError as exc:
        raise RuntimeError(f"{exc}; its output:\n{output()}") from None


@contextlib.contextmanager
def running_server(database_url: str, data_dir: Path, **kwargs: Any) -> Iterator[ServerProcess]:
    server = start_server(database_url, data_dir, **kwargs)
    try:
        yield server
    finally:
        server.stop()


# -- databases and tokens ------------------------------------------------------


def module_database(request: pytest.FixtureRequest, tmp_dir: Path) -> Iterator[str]:
    """A fresh migrated database for a module-scoped server, on the backend in
    ``request.param`` (tests/conftest.py's ``db_url`` is per test)."""
    yield from fresh_database(request, tmp_dir, "orchestra_m_")


def make_tokens(database_url: str, roles: dict[str, Role]) -> dict[str, str]:
    """Create tokens directly in the database: name → plaintext."""

    async def create() -> dict[str, str]:
        db = Database(database_url)
        try:
            return {n: await create_token(db, name=n, role=r) for n, r in roles.items()}
        finally:
            db.close()

    return asyncio.run(create())


async def revoke(database_url: str, name: str) -> None:
    db = Database(database_url)
    try:
        await revoke_token(db, name)
    finally:
        db.close()


# -- HTTP helpers --------------------------------------------------------------


@dataclass
class Api:
    """A small client: JSON in, JSON out, with a bearer token."""

    base_url: str
    token: str | None = None
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.aclose()

    async def get(self, path: str, **kw: Any) -> Any:
        r = await self.client.get(path, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    async def post(self, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
        r = await self.client.post(path, json=body, **kw)
        assert r.status_code == status, (path, r.status_code, r.text)
        return r.json()

    async def create_workflow(self, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "test")
        body.setdefault("prompt", "Add a --json flag to the list command")
        result: dict[str, Any] = await self.post("/api/workflows", body, status=201)
        return result

    async def wait_for_checkpoint(
        self, workflow_id: str, step: str, timeout_s: float = 30
    ) -> dict[str, Any]:
        async def pending() -> dict[str, Any] | None:
            wf = await self.get(f"/api/workflows/{workflow_id}")
            cp = wf["pending_checkpoint"]
            return cp if cp is not None and cp["step_name"] == step else None

        return await eventually(
            pending, what=f"checkpoint {step} of {workflow_id}", timeout_s=timeout_s
        )

    async def wait_for_status(
        self, workflow_id: str, status: str, timeout_s: float = 30
    ) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            wf: dict[str, Any] = await self.get(f"/api/workflows/{workflow_id}")
            return wf if wf["status"] == status else None

        return await eventually(reached, what=f"{workflow_id} to be {status}", timeout_s=timeout_s)


#: The CSRF field every page's forms carry (the logout form on every signed-in page).
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


async def page_csrf(client: httpx.AsyncClient, path: str = "/") -> str:
    """The CSRF token a page hands its forms and script."""
    page = await client.get(path)
    match = CSRF_FIELD.search(page.text)
    assert match, (path, page.status_code, page.text[:300])
    return match.group(1)


@contextlib.asynccontextmanager
async def web_login(base_url: str, token: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A cookie client signed in through the login page, as a browser is, and its
    session's CSRF token."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        login_csrf = await page_csrf(client, "/login")
        r = await client.post("/login", data={"csrf": login_csrf, "token": token})
        assert r.status_code == 303, (r.status_code, r.text[:300])
        yield client, await page_csrf(client, "/")


@dataclass(frozen=True)
class SseEvent:
    """One message of an event stream (decoded by httpx-sse), its data the event's JSON."""

    id: int
    event: str
    data: dict[str, Any]


async def collect_sse(
    response: httpx.Response,
    until: Callable[[list[SseEvent]], bool],
    timeout_s: float = 30,
) -> list[SseEvent]:
    """The stream's events until ``until(events)`` holds (bounded). Keep-alive comments
    are not messages (an SSE client drops them); see :func:`read_text` to see them."""
    found: list[SseEvent] = []
    async with (
        asyncio.timeout(timeout_s),
        contextlib.aclosing(EventSource(response).aiter_sse()) as messages,
    ):
        async for sse in messages:
            found.append(SseEvent(int(sse.id), sse.event, sse.json()))
            if until(found):
                break
    return found


async def read_text(
    response: httpx.Response, until: Callable[[str], bool], timeout_s: float = 30
) -> str:
    """A stream's raw text until ``until(text)`` holds (bounded): the bytes on the wire."""
    text = ""
    async with asyncio.timeout(timeout_s):
        async for chunk in response.aiter_text():
            text += chunk
            if until(text):
                break
    return text


# -- module servers ------------------------------------------------------------

#: Token holders of the module servers: name → role.
ROLES = {"ana": Role.REVIEWER, "vic": Role.VIEWER, "root": Role.ADMIN}


def module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, **kwargs: Any
) -> Iterator[ServerProcess]:
    """For a module-scoped fixture parametrized over ``BACKENDS``: a fresh database,
    tokens for :data:`ROLES` (``server.tokens``) and a server with auth on."""
    for url in module_database(request, tmp_path_factory.mktemp("db")):
        tokens = make_tokens(url, ROLES)
        with running_server(url, tmp_path_factory.mktemp("srv"), **kwargs) as proc:
            proc.tokens = tokens
            yield proc


def module_server_fixture(**kwargs: Any) -> Any:
    """``server = module_server_fixture()`` in a test module: its module server."""

    @pytest.fixture(scope="module", params=BACKENDS)
    def server(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[ServerProcess]:
        yield from module_server(request, tmp_path_factory, **kwargs)

    return server
