"""Authentication and roles against a real server on both databases: tokens, the
session cookie with its CSRF check, the streams, and the refusal to serve
without authentication beyond loopback. (Attacks on the sessions, Host and
Origin: tests/security/test_origin_and_sessions.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.api.auth import CSRF_HEADER
from orchestra.config import Settings
from orchestra.domain.errors import InvalidInput
from orchestra.domain.statuses import CheckpointStatus
from orchestra.server import check_binding, is_loopback
from orchestra.store.db import Database
from orchestra.store.tokens import authenticate_token, list_tokens
from tests.acceptance.server import Api, ServerProcess, module_server_fixture, revoke, web_login

pytestmark = pytest.mark.slow

PLAN_READY = "plan_ready_for_review"


server = module_server_fixture()


def _code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


async def test_requests_without_a_valid_token_are_refused(server: ServerProcess) -> None:
    async with Api(server.base_url) as anonymous:
        for method, path in (
            ("GET", "/api/workflows"),
            ("POST", "/api/workflows"),
            ("GET", "/api/checkpoints"),
            ("GET", "/api/events/stream"),
            ("GET", "/metrics"),
        ):
            r = await anonymous.client.request(method, path, json={"name": "n", "prompt": "p"})
            assert _code(r) == (401, "unauthorized"), (path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
        assert (await anonymous.client.get("/health")).status_code == 200
        assert _code(await anonymous.client.get("/openapi.json")) == (401, "unauthorized")
    for token in ("orc_not-a-real-token", "Basic-looking"):
        async with Api(server.base_url, token) as forged:
            assert _code(await forged.client.get("/api/workflows")) == (401, "unauthorized")
    # A token in the URL is no credential anywhere (URLs end up in logs).
    r = httpx.get(f"{server.base_url}/api/workflows?token={server.tokens['vic']}")
    assert r.status_code == 401


async def test_roles(server: ServerProcess) -> None:
    async with (
        Api(server.base_url, server.tokens["ana"]) as reviewer,
        Api(server.base_url, server.tokens["vic"]) as viewer,
    ):
        wid = (await reviewer.create_workflow())["id"]
        cp = await viewer.wait_for_checkpoint(wid, PLAN_READY)
        assert (await viewer.client.get(f"/api/workflows/{wid}/history")).status_code == 200
        assert (await viewer.client.get("/metrics")).status_code == 200

        denied = await viewer.client.post(
            f"/api/checkpoints/{cp['id']}/resolve", json={"action": "approve"}
        )
        assert _code(denied) == (403, "forbidden")
        for path in ("/api/workflows", f"/api/workflows/{wid}/cancel"):
            assert (
                _code(await viewer.client.post(path, json={"name": "n", "prompt": "p"}))[0] == 403
            )
        still = await viewer.get(f"/api/checkpoints/{cp['id']}")
        assert still["status"] == CheckpointStatus.PENDING and still["resolution"] is None

        assert _code(await reviewer.client.get("/api/tokens")) == (403, "forbidden")
        resolved = await reviewer.post(
            f"/api/checkpoints/{cp['id']}/resolve", {"action": "approve"}
        )
        assert resolved["resolution"]["resolved_by"] == "ana"


async def test_revoked_tokens_are_refused_at_once(server: ServerProcess) -> None:
    async with Api(server.base_url, server.tokens["root"]) as admin:
        created = await admin.post("/api/tokens", {"name": "temp", "role": "viewer"}, status=201)
        assert created["info"]["role"] == "viewer" and created["token"].startswith("orc_")
        dup = await admin.client.post("/api/tokens", json={"name": "temp", "role": "viewer"})
        assert _code(dup) == (422, "invalid_input")
        async with Api(server.base_url, created["token"]) as temp:
            assert (await temp.client.get("/api/workflows")).status_code == 200
            assert (await admin.client.delete("/api/tokens/temp")).status_code == 204
            assert _code(await temp.client.get("/api/workflows")) == (401, "unauthorized")
        assert _code(await admin.client.delete("/api/tokens/nobody")) == (404, "not_found")
        listed = {t["name"]: t for t in await admin.get("/api/tokens")}
        assert listed["temp"]["revoked_at"] is not None
        assert listed["root"]["last_used_at"] is not None
        assert "token_hash" not in listed["root"] and "token" not in listed["root"]

        # Revoked by another process (the CLI writes the database directly).
        made = await admin.post("/api/tokens", {"name": "other", "role": "admin"}, status=201)
        async with Api(server.base_url, made["token"]) as other:
            assert (await other.client.get("/api/tokens")).status_code == 200
            await revoke(server.database_url, "other")
            assert _code(await other.client.get("/api/tokens")) == (401, "unauthorized")


async def test_tokens_are_stored_hashed(server: ServerProcess) -> None:
    db = Database(server.database_url)
    try:
        infos = await list_tokens(db)
        assert {"ana", "vic", "root"} <= {t.name for t in infos}
        dump = repr([t.model_dump() for t in infos])
        assert all(token not in dump for token in server.tokens.values())
        assert (await authenticate_token(db, server.tokens["vic"])) is not None
        assert (await authenticate_token(db, server.tokens["vic"] + "x")) is None
    finally:
        db.close()


async def test_session_cookie_needs_the_csrf_header_on_writes(server: ServerProcess) -> None:
    async with web_login(server.base_url, server.tokens["ana"]) as (browser, csrf):
        assert (await browser.get("/api/workflows")).status_code == 200
        body: dict[str, Any] = {"name": "from the browser", "prompt": "p"}
        assert _code(await browser.post("/api/workflows", json=body)) == (403, "forbidden")
        wrong = await browser.post("/api/workflows", json=body, headers={CSRF_HEADER: "other"})
        assert wrong.status_code == 403
        ok = await browser.post("/api/workflows", json=body, headers={CSRF_HEADER: csrf})
        assert ok.status_code == 201 and ok.json()["created_by"] == "ana"


async def test_streams_take_the_header_or_the_session_never_a_query_token(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        url = f"/api/events/stream?token={server.tokens['vic']}"
        async with client.stream("GET", url) as r:
            assert r.status_code == 401
        bearer = {"Authorization": f"Bearer {server.tokens['vic']}"}
        async with client.stream("GET", "/api/events/stream", headers=bearer) as r:
            assert r.status_code == 200
    async with (
        web_login(server.base_url, server.tokens["vic"]) as (browser, _),
        browser.stream("GET", "/api/events/stream") as r,
    ):
        assert r.status_code == 200  # what the page's EventSource does


def test_no_auth_is_refused_beyond_loopback(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    check_binding(Settings(data_dir=tmp_path, host="127.0.0.1", no_auth=True))
    with pytest.raises(InvalidInput, match="orchestra token create --name NAME --role admin"):
        check_binding(Settings(data_dir=tmp_path, host="0.0.0.0", no_auth=True))

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestra.server",
            "--host",
            "0.0.0.0",
            "--no-auth",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"ORCHESTRA_CONFIG": str(tmp_path / "none.toml"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "orchestra token create --name NAME --role admin" in done.stderr
    assert not (tmp_path / "orchestra.db").exists()  # refused before opening anything
