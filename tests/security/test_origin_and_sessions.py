"""Requests from elsewhere are refused; sessions are sessions; tokens stay out of logs.

Each test is an attack on a real server process, on both databases: a foreign
page posting to a ``--no-auth`` server, a DNS-rebinding page (``Host:
evil.example``), a cross-site WebSocket, a stolen or ended session, one
session's CSRF token in another, and a token looked for in the server's log.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from starlette.datastructures import Headers
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from orchestra.api.auth import CSRF_HEADER, SESSION_COOKIE
from orchestra.api.boundary import Boundary, default_allowed_hosts
from orchestra.config import Settings, load_settings
from orchestra.domain.roles import Role
from orchestra.domain.statuses import CheckpointStatus, WorkflowStatus
from orchestra.store.db import Database
from orchestra.store.schema import web_sessions
from tests.acceptance.server import (
    Api,
    ServerProcess,
    make_tokens,
    module_database,
    module_server_fixture,
    page_csrf,
    revoke,
    running_server,
    web_login,
)
from tests.conftest import BACKENDS
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

PLAN_READY = "plan_ready_for_review"
EVIL = "http://evil.example"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

#: With authentication; INFO, so the access log is written and can be searched.
server = module_server_fixture(env={"ORCHESTRA_LOG_LEVEL": "INFO"})


@pytest.fixture(scope="module", params=BACKENDS)
def local(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A ``--no-auth`` server on loopback, as ``make run`` starts it."""
    for url in module_database(request, tmp_path_factory.mktemp("db")):
        with running_server(url, tmp_path_factory.mktemp("srv"), no_auth=True) as proc:
            yield proc


def _error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()["error"]
    assert set(body) == {"code", "message", "details"}
    message: str = body["message"]
    return message


def _port(server: ServerProcess) -> str:
    return server.base_url.rsplit(":", 1)[1]


def _ws_url(server: ServerProcess, workflow_id: str) -> str:
    return server.base_url.replace("http://", "ws://") + f"/ws/workflows/{workflow_id}"


async def _at_checkpoint(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    wf = await api.create_workflow()
    cp = await api.wait_for_checkpoint(wf["id"], PLAN_READY)
    return await api.get(f"/api/workflows/{wf['id']}"), cp


# -- --no-auth: the Origin check is the only thing between a web page and the API ---------


async def test_no_auth_refuses_posts_from_a_foreign_page_and_changes_nothing(
    local: ServerProcess,
) -> None:
    async with Api(local.base_url) as curl:  # no Origin, no Referer: curl, the CLI
        before, cp = await _at_checkpoint(curl)
        wid = before["id"]
        attacks = [
            (f"/api/workflows/{wid}/cancel", {"Origin": EVIL, **FORM}),
            (f"/api/workflows/{wid}/retry", {"Origin": EVIL, **FORM}),
            (f"/api/checkpoints/{cp['id']}/resolve", {"Origin": EVIL}),
            (f"/api/workflows/{wid}/cancel", {"Origin": "null", **FORM}),  # sandboxed frame
            (f"/api/workflows/{wid}/cancel", {"Referer": f"{EVIL}/page", **FORM}),
            # Another server on the same machine is another origin too.
            (f"/api/workflows/{wid}/cancel", {"Origin": "http://127.0.0.1:1", **FORM}),
        ]
        for path, headers in attacks:
            body = '{"action": "cancel"}' if "resolve" in path else "action=cancel"
            r = await curl.client.post(path, content=body, headers=headers)
            assert "cross-site request refused" in _error(r, 403), path
        page_form = await curl.client.post(
            "/workflows/new",
            content="name=x&prompt=y&planner=demo",
            headers={"Origin": EVIL, **FORM},
        )
        assert page_form.status_code == 403
        assert await curl.get(f"/api/workflows/{wid}") == before
        assert [w["id"] for w in (await curl.get("/api/workflows"))["items"]] == [wid]
        assert (await curl.get(f"/api/checkpoints/{cp['id']}"))[
            "status"
        ] == CheckpointStatus.PENDING

        # The server's own pages (a same-origin Origin) still work.
        own = await curl.client.post(
            f"/api/workflows/{wid}/cancel", headers={"Origin": local.base_url}
        )
        assert own.status_code == 200 and own.json()["status"] == WorkflowStatus.CANCELLED


async def test_dns_rebinding_host_is_refused(local: ServerProcess) -> None:
    async with Api(local.base_url) as curl:
        count = len((await curl.get("/api/workflows"))["items"])
        for host in ("evil.example", f"evil.example:{_port(local)}", "127.0.0.1.evil.example"):
            r = await curl.client.get("/api/workflows", headers={"Host": host})
            assert "ORCHESTRA_ALLOWED_HOSTS" in _error(r, 400)
            r = await curl.client.post(
                "/api/workflows", json={"name": "n", "prompt": "p"}, headers={"Host": host}
            )
            _error(r, 400)
            assert (await curl.client.get("/", headers={"Host": host})).status_code == 400
        rebound = f"ws://evil.example:{_port(local)}/ws/workflows/x"  # the Host it sends
        with pytest.raises(InvalidStatus) as refused:
            async with connect(rebound, host="127.0.0.1", port=int(_port(local))):
                pass
        assert refused.value.response.status_code == 400
        assert len((await curl.get("/api/workflows"))["items"]) == count
        # A load balancer probes by address: /health answers any Host, and says only "up".
        probe = await curl.client.get("/health", headers={"Host": "10.1.2.3:3030"})
        assert probe.status_code == 200
        for host in (f"localhost:{_port(local)}", f"[::1]:{_port(local)}", "127.0.0.1"):
            assert (await curl.client.get("/api/workflows", headers={"Host": host})).is_success


# -- with authentication ---------------------------------------------------------------


async def test_a_bearer_needs_no_origin_and_a_foreign_origin_is_refused_anyway(
    server: ServerProcess,
) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as cli:
        wf = await cli.create_workflow()  # no Origin, no Referer
        r = await cli.client.post(f"/api/workflows/{wf['id']}/cancel", headers={"Origin": EVIL})
        _error(r, 403)
        r = await cli.client.get("/api/workflows", headers={"Host": "evil.example"})
        _error(r, 400)
        assert (await cli.get(f"/api/workflows/{wf['id']}"))["status"] != WorkflowStatus.CANCELLED


async def test_a_cookie_session_from_a_foreign_origin_is_refused(server: ServerProcess) -> None:
    async with web_login(server.base_url, server.tokens["ana"]) as (browser, csrf):
        body = {"name": "from elsewhere", "prompt": "p"}
        for headers in ({"Origin": EVIL}, {"Referer": f"{EVIL}/x"}, {"Origin": "null"}):
            r = await browser.post(
                "/api/workflows", json=body, headers={CSRF_HEADER: csrf, **headers}
            )
            _error(r, 403)
        async with Api(server.base_url, server.tokens["root"]) as admin:
            names = {w["name"] for w in (await admin.get("/api/workflows"))["items"]}
        assert "from elsewhere" not in names
        ok = await browser.post(
            "/api/workflows", json=body, headers={CSRF_HEADER: csrf, "Origin": server.base_url}
        )
        assert ok.status_code == 201 and ok.json()["created_by"] == "ana"


async def test_a_websocket_with_the_cookie_from_a_foreign_origin_is_refused(
    server: ServerProcess,
) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as cli:
        wid = (await cli.create_workflow())["id"]
    async with web_login(server.base_url, server.tokens["vic"]) as (browser, _):
        cookie = {"Cookie": f"{SESSION_COOKIE}={browser.cookies[SESSION_COOKIE]}"}
        with pytest.raises(InvalidStatus) as refused:
            async with connect(_ws_url(server, wid), origin=EVIL, additional_headers=cookie):
                pass
        assert refused.value.response.status_code == 403
        own = server.base_url
        async with connect(_ws_url(server, wid), origin=own, additional_headers=cookie) as ws:
            async with asyncio.timeout(30):
                assert "workflow_created" in str(await ws.recv())


async def test_the_cookie_is_a_session_not_the_token(server: ServerProcess) -> None:
    token = server.tokens["vic"]
    async with web_login(server.base_url, token) as (browser, _):
        secret = browser.cookies[SESSION_COOKIE]
        assert token not in secret and token not in str(browser.cookies)
    db = Database(server.database_url)
    try:
        rows = await db.read(lambda c: c.execute(select(web_sessions)).mappings().all())
    finally:
        db.close()
    assert hashlib.sha256(secret.encode()).hexdigest() in {r["id"] for r in rows}
    assert all(secret not in repr(dict(r)) for r in rows)


async def test_after_logout_the_old_cookie_is_refused(server: ServerProcess) -> None:
    async with web_login(server.base_url, server.tokens["ana"]) as (browser, csrf):
        stolen = {SESSION_COOKIE: browser.cookies[SESSION_COOKIE]}
        out = await browser.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/login"
    async with httpx.AsyncClient(base_url=server.base_url, cookies=stolen) as thief:
        _error(await thief.get("/api/workflows"), 401)
        page = await thief.get("/inbox")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        again = await thief.post("/logout", data={"csrf": csrf})  # a second tab's button
        assert again.status_code == 303 and again.headers["location"] == "/login"


async def test_revoking_the_token_ends_its_sessions(server: ServerProcess) -> None:
    made = await asyncio.to_thread(make_tokens, server.database_url, {"temp-web": Role.VIEWER})
    token = made["temp-web"]
    async with web_login(server.base_url, token) as (browser, _):
        assert (await browser.get("/api/workflows")).status_code == 200
        await revoke(server.database_url, "temp-web")  # `orchestra token revoke temp-web`
        _error(await browser.get("/api/workflows"), 401)
        assert (await browser.get("/")).status_code == 303


async def test_an_expired_session_is_refused(server: ServerProcess) -> None:
    async with web_login(server.base_url, server.tokens["vic"]) as (browser, _):
        digest = hashlib.sha256(browser.cookies[SESSION_COOKIE].encode()).hexdigest()
        db = Database(server.database_url)
        try:
            await db.write(
                lambda tx: tx.conn.execute(
                    update(web_sessions)
                    .where(web_sessions.c.id == digest)
                    .values(expires_at=tx.now.replace(year=2000))
                )
            )
        finally:
            db.close()
        _error(await browser.get("/api/workflows"), 401)


async def test_one_sessions_csrf_token_is_refused_in_another(server: ServerProcess) -> None:
    async with (
        web_login(server.base_url, server.tokens["ana"]) as (_a, csrf_a),
        web_login(server.base_url, server.tokens["ana"]) as (b, csrf_b),
    ):
        assert csrf_a != csrf_b
        body = {"name": "csrf swap", "prompt": "p"}
        _error(await b.post("/api/workflows", json=body, headers={CSRF_HEADER: csrf_a}), 403)
        # A page form too (it carries the field), and the no-session cookie does not help.
        cookies = f"{SESSION_COOKIE}={b.cookies[SESSION_COOKIE]}; orchestra_csrf={csrf_a}"
        form = await b.post(
            "/workflows/new",
            data={"csrf": csrf_a, "name": "x", "prompt": "y"},
            headers={"Cookie": cookies},
        )
        assert form.status_code == 403
        assert await page_csrf(b) == csrf_b
        ok = await b.post("/api/workflows", json=body, headers={CSRF_HEADER: csrf_b})
        assert ok.status_code == 201


async def test_tokens_never_reach_the_server_log(server: ServerProcess) -> None:
    token = server.tokens["vic"]
    bearer = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        assert (await client.get("/api/workflows", headers=bearer)).status_code == 200
        in_url = await client.get(f"/api/workflows?after=0&token={token}")
        assert "Authorization: Bearer" in _error(in_url, 401)
        async with client.stream("GET", f"/api/events/stream?token={token}") as r:
            assert r.status_code == 401
    with pytest.raises(InvalidStatus):
        async with connect(_ws_url(server, "x") + f"?token={token}"):
            pass
    async with web_login(server.base_url, token):  # the token in a form body
        pass

    def logged() -> str | None:  # the access log is written after the response
        log = server.output()
        seen = all(f"{path}?token=" in log for path in ("/api/events/stream", "/ws/workflows/x"))
        return log if seen else None

    log = await eventually(logged, what="the requests in the access log", timeout_s=10)
    assert '"GET /api/workflows HTTP/1.1" 200' in log  # the access log is on
    assert "/api/events/stream?token=[redacted]" in log
    assert "WebSocket /ws/workflows/x?token=[redacted]" in log
    assert token not in log


# -- the rules themselves, in process ---------------------------------------------------


def _boundary(**settings: Any) -> Boundary:
    return Boundary(Settings(**settings))


def _headers(**values: str) -> Headers:
    return Headers({k.replace("_", "-"): v for k, v in values.items()})


def test_which_hosts_are_answered(tmp_path: Path) -> None:
    local = _boundary(data_dir=tmp_path, no_auth=True, allowed_hosts=["*"])  # ignored
    for host in ("localhost", "localhost:3030", "127.0.0.1:1", "[::1]:3030", "LOCALHOST"):
        assert local.host_problem(_headers(host=host)) is None, host
    for host in (
        "evil.example",
        "127.0.0.1.evil.example",
        "localhost.",
        "127.0.0.1@evil.example",
        "127.0.0.1:x",
        "",
    ):
        assert local.host_problem(_headers(host=host)) is not None, host
    assert local.host_problem(Headers({})) is not None

    assert default_allowed_hosts("0.0.0.0") == ["localhost", "127.0.0.1", "[::1]"]
    assert default_allowed_hosts("10.0.0.5")[-1] == "10.0.0.5"
    assert default_allowed_hosts("fd00::1")[-1] == "[fd00::1]"
    lan = _boundary(data_dir=tmp_path, host="10.0.0.5")
    assert lan.host_problem(_headers(host="10.0.0.5:3030")) is None
    assert lan.host_problem(_headers(host="orchestra.example")) is not None
    named = _boundary(data_dir=tmp_path, allowed_hosts=["orchestra.example", "ci.example:8443"])
    assert named.host_problem(_headers(host="orchestra.example:1")) is None
    assert named.host_problem(_headers(host="ci.example:8443")) is None
    assert named.host_problem(_headers(host="ci.example:8444")) is not None
    assert named.host_problem(_headers(host="localhost")) is not None  # the list replaces
    anything = _boundary(data_dir=tmp_path, allowed_hosts=["*"])
    assert anything.host_problem(_headers(host="whatever.example")) is None


def test_which_origins_are_the_servers_own(tmp_path: Path) -> None:
    http = {"scheme": "http"}
    local = _boundary(data_dir=tmp_path, no_auth=True)
    host = "127.0.0.1:3030"
    for origin in ("http://127.0.0.1:3030", "HTTP://127.0.0.1:3030"):
        assert local.origin_problem(http, _headers(host=host, origin=origin)) is None
    assert local.origin_problem(http, _headers(host=host, referer=f"http://{host}/x?y")) is None
    assert local.origin_problem(http, _headers(host=host)) is None  # curl
    for origin in (
        "http://127.0.0.1:3031",
        "https://127.0.0.1:3030",
        "null",
        "http://localhost:3030",
    ):
        assert local.origin_problem(http, _headers(host=host, origin=origin)) is not None, origin
    assert local.origin_problem(http, _headers(host=host, referer="android-app://x")) is not None
    # Origin wins over Referer, both ways.
    own_origin = _headers(host=host, origin=f"http://{host}", referer=f"{EVIL}/x")
    assert local.origin_problem(http, own_origin) is None
    foreign_origin = _headers(host=host, origin=EVIL, referer=f"http://{host}/")
    assert local.origin_problem(http, foreign_origin) is not None
    # A WebSocket's scheme is ws/wss; default ports are implied.
    ws = {"scheme": "ws"}
    assert (
        local.origin_problem(ws, _headers(host="localhost", origin="http://localhost:80")) is None
    )
    # Behind a TLS proxy: the listed public name counts as its own.
    proxied = _boundary(data_dir=tmp_path, allowed_hosts=["orchestra.example"])
    public = _headers(host="orchestra.example", origin="https://orchestra.example")
    assert proxied.origin_problem(http, public) is None
    assert proxied.origin_problem(http, _headers(host="orchestra.example", origin=EVIL)) is not None
    star = _boundary(data_dir=tmp_path, allowed_hosts=["*"])
    assert star.origin_problem(http, _headers(host="a.example", origin=EVIL)) is not None


def test_allowed_hosts_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRA_ALLOWED_HOSTS", " orchestra.example , ci.example:8443,")
    monkeypatch.setenv("ORCHESTRA_SESSION_TTL_S", "3600")
    settings = load_settings(data_dir=tmp_path, config_file=tmp_path / "none.toml")
    assert settings.allowed_hosts == ["orchestra.example", "ci.example:8443"]
    assert settings.session_ttl_s == 3600
