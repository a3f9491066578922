"""Webhook notifications from a real server process, against a real local receiver,
on both databases: exactly once per event across a SIGKILL and a restart; a request
cut short by a SIGKILL is sent once more with the same delivery id (at least once);
the admin endpoint shows every row's attempts; a missing secret stops the start.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestra.domain.roles import Role
from orchestra.domain.statuses import NotificationStatus
from orchestra.store.db import Database
from orchestra.store.tokens import create_token
from tests.acceptance.server import TEST_AGENTS_TOML, Api, _clean_env, start_server
from tests.support.receiver import receiving
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

SECRET = "acceptance-secret"
PLAN_READY = "plan_ready_for_review"
REVIEWS_READY = "reviews_ready_for_consolidation"
ENV = {
    "HOOK_SECRET": SECRET,
    "ORCHESTRA_NOTIFY_POLL_S": "0.1",
    "ORCHESTRA_NOTIFY_BACKOFF_S": "0.2",
}


def _configure(data_dir: Path, url: str, timeout_s: float = 10) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "orchestra.toml").write_text(
        'public_url = "https://orchestra.example.com"\n'
        + TEST_AGENTS_TOML
        + f"""
[[notify]]
name = "ops"
url = "{url}"
secret = {{ from_env = "HOOK_SECRET" }}
events = ["checkpoint_pending", "workflow_completed"]
timeout_s = {timeout_s}
"""
    )


async def _admin_token(db_url: str) -> str:
    db = Database(db_url)
    try:
        return await create_token(db, name="root", role=Role.ADMIN)
    finally:
        db.close()


async def _delivered(api: Api, n: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = await api.get(
            "/api/notifications", params={"status": NotificationStatus.DELIVERED.value}
        )
        return rows if len(rows) >= n else None

    return await eventually(probe, what=f"{n} delivered notifications", timeout_s=30)


async def test_each_event_is_delivered_exactly_once_across_a_sigkill_and_restart(
    db_url: str, tmp_path: Path
) -> None:
    admin = await _admin_token(db_url)
    with receiving() as receiver:
        _configure(tmp_path, receiver.url)
        first = start_server(db_url, tmp_path, env=ENV)
        try:
            async with Api(first.base_url, admin) as api:
                wids = [(await api.create_workflow(name=f"wf{n}"))["id"] for n in range(2)]
                for wid in wids:
                    await api.wait_for_checkpoint(wid, PLAN_READY)
                await _delivered(api, 2)
        finally:
            first.kill()
        second = start_server(db_url, tmp_path, env=ENV)
        try:
            async with Api(second.base_url, admin) as api:
                for wid in wids:
                    cp = await api.wait_for_checkpoint(wid, PLAN_READY)
                    await api.post(f"/api/checkpoints/{cp['id']}/resolve", {"action": "approve"})
                    cp = await api.wait_for_checkpoint(wid, REVIEWS_READY)
                    await api.post(f"/api/checkpoints/{cp['id']}/resolve", {"action": "approve"})
                rows = await _delivered(api, 6)  # 2 + 2 checkpoints, 2 completions
                await eventually(lambda: len(receiver.received) >= 6, what="six requests")
        finally:
            second.stop()
    assert sorted(receiver.by_delivery().values()) == [1] * 6, receiver.by_delivery()
    assert len({r.json["event_id"] for r in receiver.received}) == 6
    assert all(r.signed_by(SECRET) for r in receiver.received)
    assert {r["attempts"] for r in rows} == {1}
    kinds = sorted(r.headers["x-orchestra-event"] for r in receiver.received)
    assert kinds == ["checkpoint_pending"] * 4 + ["workflow_completed"] * 2
    links = {r.json["link"] for r in receiver.received}
    assert links == {f"https://orchestra.example.com/workflows/{w}#decide" for w in wids}


async def test_a_request_cut_short_by_a_sigkill_is_sent_once_more_with_the_same_id(
    db_url: str, tmp_path: Path
) -> None:
    admin = await _admin_token(db_url)
    with receiving(["hang"]) as receiver:
        _configure(tmp_path, receiver.url, timeout_s=1)
        first = start_server(db_url, tmp_path, env=ENV)
        try:
            async with Api(first.base_url, admin) as api:
                wid = (await api.create_workflow())["id"]
                await eventually(lambda: receiver.arrived >= 1, what="the request to hang")
        finally:
            first.kill()  # mid-request: the row stays claimed
        receiver.release()
        second = start_server(db_url, tmp_path, env=ENV)
        try:
            async with Api(second.base_url, admin) as api:
                [row] = await _delivered(api, 1)  # once the claim's lease ran out
        finally:
            second.stop()
    assert row["attempts"] == 2 and row["payload"]["workflow"]["id"] == wid
    assert receiver.by_delivery() == {row["id"]: 2}  # the cut-short one and one resend


async def test_a_secret_from_a_missing_variable_stops_the_server_saying_which(
    db_url: str, tmp_path: Path
) -> None:
    _configure(tmp_path, "http://127.0.0.1:9/hook")
    with pytest.raises(RuntimeError) as caught:
        start_server(db_url, tmp_path, env={"ORCHESTRA_NOTIFY_POLL_S": "0.1"})
    assert "the server exited with 2" in str(caught.value)
    assert "HOOK_SECRET, which is not set" in str(caught.value)


async def test_orchestra_worker_delivers_too(db_url: str, tmp_path: Path) -> None:
    """A server without notifications and with no worker; a worker process with them:
    the worker runs the workflow to its checkpoint and its notifier sends it."""
    admin = await _admin_token(db_url)
    plain = tmp_path / "server"
    plain.mkdir()
    (plain / "orchestra.toml").write_text(TEST_AGENTS_TOML)
    with receiving() as receiver:
        _configure(tmp_path / "worker", receiver.url)
        env = _clean_env(ENV, tmp_path / "worker")
        cmd = [sys.executable, "-m", "orchestra.server", "worker", "--database-url", db_url]
        cmd += ["--data-dir", str(tmp_path / "worker")]
        with (tmp_path / "worker.log").open("wb") as out:
            worker = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        server = start_server(db_url, plain, args=["--no-worker"])
        try:
            async with Api(server.base_url, admin) as api:
                wid = (await api.create_workflow())["id"]
                [row] = await _delivered(api, 1)
        finally:
            server.stop()
            worker.terminate()
            worker.wait(timeout=20)
    assert row["payload"]["workflow"]["id"] == wid
    assert [r.delivery for r in receiver.received] == [row["id"]]
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
