"""``orchestra notifications`` as a real process: on the local database (both
backends) and against a real server with an admin's token — list, show with the
attempts table in 80 columns, requeue (and its refusals, exit 4), prune (bad ages:
exit 2); a non-admin token is refused by the server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.domain.roles import Role
from orchestra.domain.statuses import NotificationStatus
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.store.db import Database
from tests.acceptance.server import (
    TEST_AGENTS_TOML,
    Api,
    ServerProcess,
    make_tokens,
    module_database,
    running_server,
)
from tests.acceptance.test_cli_local import as_json, cli_env, error_of, ok, orchestra
from tests.conftest import BACKENDS
from tests.support.engine import start
from tests.support.notifier import delivered, given_up, make_notifier, running
from tests.support.receiver import Receiver, receiving
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


async def test_local_list_show_requeue_and_prune(
    service: Orchestra, worker: Worker, db: Database, db_url: str, tmp_path: Path
) -> None:
    with receiving([500]) as receiver:
        target = {"name": "ops", "url": receiver.url, "max_attempts": 1}
        async with running(make_notifier(db, target)):
            await start(service, worker)
            [failed] = await given_up(db)
    listed = as_json(orchestra(tmp_path, db_url, "notifications", "list", "--json"))
    assert [(n["id"], n["status"]) for n in listed] == [
        (failed.id, NotificationStatus.FAILED.value)
    ]
    only = as_json(
        orchestra(
            tmp_path,
            db_url,
            "notifications",
            "list",
            "--status",
            NotificationStatus.DELIVERED.value,
            "--json",
        )
    )
    assert only == []
    table = ok(orchestra(tmp_path, db_url, "notifications", "list")).stdout
    assert failed.id[:8] in table and "HTTP 500" in table

    narrow = cli_env(tmp_path, COLUMNS="80")
    shown = ok(orchestra(tmp_path, db_url, "notifications", "show", failed.id[:8], env=narrow))
    assert all(len(line) <= 80 for line in shown.stdout.splitlines()), shown.stdout
    assert "Delivery attempts" in shown.stdout and "HTTP 500: no" in shown.stdout
    assert f"orchestra notifications requeue {failed.id[:8]}" in shown.stdout

    ok(orchestra(tmp_path, db_url, "notifications", "requeue", failed.id[:8]))
    again = orchestra(tmp_path, db_url, "notifications", "requeue", failed.id, "--json")
    assert again.returncode == 4 and error_of(again)["code"] == "conflict"
    missing = orchestra(tmp_path, db_url, "notifications", "show", "0" * 32)
    assert missing.returncode == 3

    with receiving() as receiver:  # the receiver is back: the requeued row goes out
        async with running(make_notifier(db, {"name": "ops", "url": receiver.url})):
            [row] = await delivered(db, 1)
    assert row.id == failed.id and row.attempts == 2
    detail = as_json(orchestra(tmp_path, db_url, "notifications", "show", row.id, "--json"))
    assert [a["status_code"] for a in detail["delivery_attempts"]] == [500, 200]

    pruned = as_json(
        orchestra(tmp_path, db_url, "notifications", "prune", "--older-than", "30d", "--json")
    )
    assert pruned["deleted"] == 0  # delivered just now: kept
    bad = orchestra(tmp_path, db_url, "notifications", "prune", "--older-than", "1s")
    assert bad.returncode == 2 and "older_than" in bad.stderr


TARGET = """
[[notify]]
name = "ops"
url = "{url}"
secret = "cli-secret"
max_attempts = 1
"""


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Receiver]]:
    with receiving([500]) as receiver:
        for url in module_database(request, tmp_path_factory.mktemp("db")):
            tokens = make_tokens(url, {"ana": Role.REVIEWER, "root": Role.ADMIN})
            data_dir = tmp_path_factory.mktemp("srv")
            (data_dir / "orchestra.toml").write_text(
                TEST_AGENTS_TOML + TARGET.format(url=receiver.url)
            )
            env = {"ORCHESTRA_NOTIFY_POLL_S": "0.1"}
            with running_server(url, Path(data_dir), env=env) as server:
                server.tokens = tokens
                yield server, receiver


async def test_remote_commands_need_an_admin_and_requeue_goes_out_again(
    served: tuple[ServerProcess, Receiver], tmp_path: Path
) -> None:
    server, receiver = served

    def remote(who: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = cli_env(
            tmp_path, ORCHESTRA_SERVER=server.base_url, ORCHESTRA_TOKEN=server.tokens[who]
        )
        return orchestra(tmp_path, None, "notifications", *args, env=env)

    async with Api(server.base_url, server.tokens["ana"]) as ana:
        await ana.create_workflow()
    async with Api(server.base_url, server.tokens["root"]) as root:

        async def failed() -> list[dict[str, object]] | None:
            found: list[dict[str, object]] = await root.get(
                "/api/notifications", params={"status": NotificationStatus.FAILED.value}
            )
            return found or None

        [row] = await eventually(failed, what="the notification to fail")
        nid = str(row["id"])
        for args in (("list",), ("show", nid), ("requeue", nid), ("prune", "--older-than", "1h")):
            refused = remote("ana", *args)
            assert refused.returncode == 1 and "admin" in refused.stderr, (args, refused)
        assert [n["id"] for n in as_json(remote("root", "list", "--json"))] == [nid]
        ok(remote("root", "requeue", nid[:8]))

        async def sent() -> dict[str, object] | None:
            shown: dict[str, object] = await root.get(f"/api/notifications/{nid}")
            return shown if shown["status"] == NotificationStatus.DELIVERED.value else None

        await eventually(sent, what="the requeued notification to be delivered")
        detail = as_json(remote("root", "show", nid, "--json"))
        assert [a["status_code"] for a in detail["delivery_attempts"]] == [500, 200]
        assert receiver.by_delivery() == {nid: 2}
        pruned = as_json(remote("root", "prune", "--older-than", "1h", "--json"))
        assert pruned == {"deleted": 0, "attempts_deleted": 0, "links_deleted": 0}
