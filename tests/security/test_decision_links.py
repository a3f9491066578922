"""Attack: the signed decision links in notifications, and the outbox's admin
surface. A link is single-use and expiring, opens a page only after a normal
login, decides nothing, carries no credential, cannot send anyone to another
site, and is stored only as a hash; only admins read, requeue or prune the
outbox. Real server, both databases, a real local receiver."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select, update

from orchestra.api.auth import SESSION_COOKIE
from orchestra.domain.roles import Role
from orchestra.domain.statuses import CheckpointStatus
from orchestra.store import links
from orchestra.store.db import Database, Tx, utcnow
from orchestra.store.schema import decision_links, notifications
from tests.acceptance.server import (
    TEST_AGENTS_TOML,
    Api,
    ServerProcess,
    make_tokens,
    module_database,
    page_csrf,
    running_server,
    web_login,
)
from tests.conftest import BACKENDS
from tests.support.engine import snapshot
from tests.support.receiver import Receiver, receiving
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

PUBLIC = "https://orchestra.example.com"
SETTINGS = """
public_url = "{public}"
decision_links = true
decision_link_ttl = "2h"
"""
TARGET = """
[[notify]]
name = "ops"
url = "{url}"
secret = "links-secret"
"""
EVIL = "https://evil.example"


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Receiver]]:
    with receiving() as receiver:
        for url in module_database(request, tmp_path_factory.mktemp("db")):
            tokens = make_tokens(
                url, {"ana": Role.REVIEWER, "vic": Role.VIEWER, "root": Role.ADMIN}
            )
            data_dir = tmp_path_factory.mktemp("srv")
            (data_dir / "orchestra.toml").write_text(
                SETTINGS.format(public=PUBLIC) + TEST_AGENTS_TOML + TARGET.format(url=receiver.url)
            )
            env = {"ORCHESTRA_NOTIFY_POLL_S": "0.1"}
            with running_server(url, Path(data_dir), env=env) as server:
                server.tokens = tokens
                yield server, receiver


async def _link_of_new_workflow(
    server: ServerProcess, receiver: Receiver
) -> tuple[dict[str, Any], str]:
    """A new workflow (by ana) and the path of the link its checkpoint's notification got."""
    async with Api(server.base_url, server.tokens["ana"]) as ana:
        wf = await ana.create_workflow()

    def sent() -> str | None:
        for got in receiver.received:
            body = got.json
            if body["workflow"]["id"] == wf["id"] and body["checkpoint"]:
                link: str = body["link"]
                return link
        return None

    link = await eventually(sent, what="the checkpoint's notification")
    assert link.startswith(f"{PUBLIC}/d/")
    return wf, link.removeprefix(PUBLIC)


async def _login(client: httpx.AsyncClient, token: str, next_: str) -> httpx.Response:
    """The login form posted as a browser does, with the ``next`` it was sent with."""
    csrf = await page_csrf(client, f"/login?next={quote(next_, safe='')}")
    return await client.post("/login", data={"csrf": csrf, "token": token, "next": next_})


async def _db_rows(server: ServerProcess, table: Any) -> list[Any]:
    db = Database(server.database_url)
    try:
        return list(await db.read(lambda c: c.execute(select(table)).all()))
    finally:
        db.close()


async def _write(server: ServerProcess, fn: Any) -> Any:
    db = Database(server.database_url)
    try:
        return await db.write(fn)
    finally:
        db.close()


async def test_a_link_asks_for_a_login_opens_once_and_decides_nothing(
    served: tuple[ServerProcess, Receiver],
) -> None:
    server, receiver = served
    wf, path = await _link_of_new_workflow(server, receiver)
    token = path.removeprefix("/d/")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser:
        # Not signed in: the login page, coming back to the link; the link is not used.
        first = await browser.get(path)
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=" + quote(path, safe="")
        assert SESSION_COOKIE not in first.headers.get("set-cookie", "")
        digest = hashlib.sha256(token.encode()).hexdigest()
        [row] = [r for r in await _db_rows(server, decision_links) if r.id == digest]
        assert row.used_at is None
        # A link is a page to open, nothing to post to.
        for method in ("POST", "PUT", "DELETE"):
            assert (await browser.request(method, path)).status_code == 405
        # Signed in as a viewer, the login sends them back, and the link opens the page.
        back = await _login(browser, server.tokens["vic"], path)
        assert back.status_code == 303 and back.headers["location"] == path
        opened = await browser.get(path)
        assert opened.status_code == 303
        assert opened.headers["location"] == f"/workflows/{wf['id']}#decide"
        page = await browser.get(opened.headers["location"])
        assert page.status_code == 200
        # Used: a second opening says so plainly and points to the inbox.
        again = await browser.get(path)
        assert again.status_code == 410
        assert "already been used" in again.text and "/inbox" in again.text
        # The viewer could open the page, not decide: the page's own rules still hold.
        csrf = await page_csrf(browser, "/")
        cp_id = (await _pending(server, wf["id"]))["id"]
        refused = await browser.post(
            f"/checkpoints/{cp_id}/resolve", data={"csrf": csrf, "action": "approve"}
        )
        assert refused.status_code == 403
    [row] = [r for r in await _db_rows(server, decision_links) if r.id == digest]
    assert row.used_by == "vic" and row.used_at is not None
    assert (await _pending(server, wf["id"]))["status"] == CheckpointStatus.PENDING.value
    # Someone else with the same (used) link gets no further either.
    async with web_login(server.base_url, server.tokens["ana"]) as (other, _):
        assert (await other.get(path)).status_code == 410


async def _pending(server: ServerProcess, workflow_id: str) -> dict[str, Any]:
    async with Api(server.base_url, server.tokens["root"]) as root:
        wf = await root.get(f"/api/workflows/{workflow_id}")
    cp: dict[str, Any] = wf["pending_checkpoint"]
    assert cp is not None, wf
    return cp


async def test_expired_unknown_and_malformed_links_say_so_and_change_nothing(
    served: tuple[ServerProcess, Receiver],
) -> None:
    server, receiver = served
    wf, path = await _link_of_new_workflow(server, receiver)
    cp_id = (await _pending(server, wf["id"]))["id"]
    expired = await _write(
        server, lambda tx: links.create_link_txn(tx, cp_id, "ops", timedelta(hours=1))
    )

    def expire(tx: Tx) -> None:
        tx.conn.execute(
            update(decision_links)
            .where(decision_links.c.id == hashlib.sha256(expired.encode()).hexdigest())
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    await _write(server, expire)
    async with web_login(server.base_url, server.tokens["ana"]) as (browser, _):
        r = await browser.get(f"/d/{expired}")
        assert r.status_code == 410 and "expired" in r.text and "/inbox" in r.text
        db = Database(server.database_url)
        try:
            before = await snapshot(db)
            unknown = "A" * 43
            for bad in (unknown, "x" * 10_000, "..%2F..%2Fetc", "%00" * 40, path[3:] + "x"):
                r = await browser.get(f"/d/{bad}")
                assert r.status_code in (404, 414), (bad[:50], r.status_code)
                if r.status_code == 404:
                    assert "not known" in r.text or "Not Found" in r.text
            assert await snapshot(db) == before
        finally:
            db.close()
        # The real link still works after all that.
        assert (await browser.get(path)).status_code == 303


async def test_the_token_is_stored_only_as_its_hash(
    served: tuple[ServerProcess, Receiver],
) -> None:
    server, receiver = served
    wf, path = await _link_of_new_workflow(server, receiver)
    token = path.removeprefix("/d/")
    db = Database(server.database_url)
    try:
        dump = repr(await snapshot(db))
    finally:
        db.close()
    assert token not in dump
    assert hashlib.sha256(token.encode()).hexdigest() in dump
    # The outbox row (which admins read) keeps the plain workflow link.
    [row] = [
        r for r in await _db_rows(server, notifications) if r.payload["workflow"]["id"] == wf["id"]
    ]
    assert row.payload["link"] == f"{PUBLIC}/workflows/{wf['id']}#decide"
    async with Api(server.base_url, server.tokens["root"]) as root:
        assert token not in (await root.client.get("/api/notifications")).text
        assert token not in (await root.client.get(f"/api/notifications/{row.id}")).text


@pytest.mark.parametrize(
    "target",
    [
        f"{EVIL}/",
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:evil.example",
        " //evil.example",
    ],
)
async def test_next_never_sends_anyone_to_another_site(
    served: tuple[ServerProcess, Receiver], target: str
) -> None:
    server, _ = served
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser:
        r = await _login(browser, server.tokens["vic"], target)
        assert r.status_code == 303 and r.headers["location"] == "/", r.headers["location"]
        form = await browser.get("/login", params={"next": target})
        assert "evil" not in form.text


async def test_a_next_on_the_link_is_ignored(served: tuple[ServerProcess, Receiver]) -> None:
    server, receiver = served
    wf, path = await _link_of_new_workflow(server, receiver)
    async with web_login(server.base_url, server.tokens["vic"]) as (browser, _):
        r = await browser.get(path, params={"next": f"{EVIL}/"})
        assert r.status_code == 303 and r.headers["location"] == f"/workflows/{wf['id']}#decide"


async def test_only_admins_read_requeue_or_prune_the_outbox(
    served: tuple[ServerProcess, Receiver],
) -> None:
    server, receiver = served
    await _link_of_new_workflow(server, receiver)
    async with (
        Api(server.base_url, server.tokens["ana"]) as ana,
        Api(server.base_url, server.tokens["vic"]) as vic,
        Api(server.base_url, server.tokens["root"]) as root,
        Api(server.base_url) as nobody,
    ):
        [row, *_] = await root.get("/api/notifications")
        db = Database(server.database_url)
        try:
            before = await db.read(lambda c: c.execute(select(notifications)).all())
            calls = [
                ("GET", f"/api/notifications/{row['id']}", None),
                ("POST", f"/api/notifications/{row['id']}/requeue", None),
                ("POST", "/api/notifications/prune", {"older_than": "1h"}),
            ]
            for who, code in ((ana, 403), (vic, 403), (nobody, 401)):
                for method, url, body in calls:
                    r = await who.client.request(method, url, json=body)
                    assert r.status_code == code, (method, url, r.status_code, r.text)
                    assert row["id"] not in r.text
            assert await db.read(lambda c: c.execute(select(notifications)).all()) == before
        finally:
            db.close()
        shown = await root.get(f"/api/notifications/{row['id'][:8]}")
        assert shown["id"] == row["id"] and shown["delivery_attempts"][0]["attempt"] == 1
        again = await root.client.post(f"/api/notifications/{row['id']}/requeue")
        assert again.status_code == 409 and "delivered" in again.text
        pruned = await root.post("/api/notifications/prune", {"older_than": "1h"})
        assert pruned == {"deleted": 0, "attempts_deleted": 0, "links_deleted": 0}


async def test_bad_admin_input_is_bounded_and_says_what_to_fix(
    served: tuple[ServerProcess, Receiver],
) -> None:
    server, _ = served
    async with Api(server.base_url, server.tokens["root"]) as root:
        db = Database(server.database_url)
        try:
            before = await snapshot(db)
            for body in (
                {"older_than": "x" * 100_000},
                {"older_than": "1s"},
                {"older_than": "30"},
                {"older_than": 30},
                {"older_than": "30d", "status": "pending"},
                {},
            ):
                r = await root.client.post("/api/notifications/prune", json=body)
                named = "older_than" in r.text or "status" in r.text
                assert r.status_code == 422 and named, (r.status_code, r.text[:200])
                assert len(r.text) < 2000
            for given in ("z" * 5000, "abc", "%25", "0" * 33):
                r = await root.client.get(f"/api/notifications/{given}")
                assert r.status_code == 422 and "hex digits" in r.text, (given[:40], r.text)
                assert len(r.text) < 2000
            r = await root.client.post(f"/api/notifications/{'0' * 32}/requeue")
            assert r.status_code == 404
            assert await snapshot(db) == before
        finally:
            db.close()
