"""Attack: reading the notification outbox (targets, payloads, receivers' errors) or
steering it. Only admins read it; nobody adds to it or changes where it sends
through the API (targets, URLs and secrets are the operator's, in
``orchestra.toml``; admins may only requeue and prune rows, see
test_decision_links.py); the secret appears in no answer and no payload. Real
server, both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.server import (
    TEST_AGENTS_TOML,
    Api,
    ServerProcess,
    make_tokens,
    module_database,
    running_server,
)
from tests.conftest import BACKENDS
from tests.support.receiver import Receiver, receiving
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

SECRET = "never-shown-7f3a"
ROLES_TOML = """
[[notify]]
name = "ops"
url = "{url}"
secret = "{secret}"
"""


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Receiver]]:
    from orchestra.domain.roles import Role

    with receiving() as receiver:
        for url in module_database(request, tmp_path_factory.mktemp("db")):
            tokens = make_tokens(
                url, {"ana": Role.REVIEWER, "vic": Role.VIEWER, "root": Role.ADMIN}
            )
            data_dir = tmp_path_factory.mktemp("srv")
            (data_dir / "orchestra.toml").write_text(
                TEST_AGENTS_TOML + ROLES_TOML.format(url=receiver.url, secret=SECRET)
            )
            env = {"ORCHESTRA_NOTIFY_POLL_S": "0.1"}
            with running_server(url, Path(data_dir), env=env) as server:
                server.tokens = tokens
                yield server, receiver


async def test_only_admins_read_the_outbox_and_no_answer_shows_the_secret(
    served: tuple[ServerProcess, Receiver],
) -> None:
    server, receiver = served
    async with (
        Api(server.base_url, server.tokens["ana"]) as ana,
        Api(server.base_url, server.tokens["vic"]) as vic,
        Api(server.base_url, server.tokens["root"]) as root,
        Api(server.base_url) as nobody,
    ):
        wid = (await ana.create_workflow())["id"]

        async def queued() -> list[dict[str, object]] | None:
            return await root.get("/api/notifications") or None

        rows = await eventually(queued, what="a notification row")
        assert rows[0]["payload"]["workflow"]["id"] == wid  # type: ignore[index]
        for who, code in ((ana, 403), (vic, 403), (nobody, 401)):
            r = await who.client.get("/api/notifications")
            assert r.status_code == code, (r.status_code, r.text)
            assert wid not in r.text
        answer = (await root.client.get("/api/notifications")).text
        assert SECRET not in answer
        await eventually(lambda: receiver.received, what="the request")
        assert all(SECRET.encode() not in r.body for r in receiver.received)
        assert all(SECRET not in v for r in receiver.received for v in r.headers.values())


async def test_bad_queries_say_what_to_fix_and_nobody_writes_the_outbox(
    served: tuple[ServerProcess, Receiver],
) -> None:
    server, _ = served
    async with Api(server.base_url, server.tokens["root"]) as root:
        before = {r["id"] for r in await root.get("/api/notifications")}
        for params, field in (
            ({"status": "sent"}, "status"),
            ({"limit": "0"}, "limit"),
            ({"limit": "100000"}, "limit"),
        ):
            r = await root.client.get("/api/notifications", params=params)
            assert r.status_code == 422 and field in r.text, (params, r.text)
        target = {"name": "mine", "url": "http://attacker.example/", "secret": "x"}
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r = await root.client.request(method, "/api/notifications", json=target)
            assert r.status_code == 405, (method, r.status_code)
        r = await root.client.post("/api/notifications/anything/retry", json={})
        assert r.status_code == 404
        assert {r["id"] for r in await root.get("/api/notifications")} == before
