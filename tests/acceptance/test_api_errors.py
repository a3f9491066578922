"""Every error answer of the API, against a real server on both databases: the right
status, one error shape, and the database unchanged afterwards."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, func, select

from orchestra.domain.statuses import CheckpointStatus, WorkflowStatus
from orchestra.store.db import Database
from orchestra.store.schema import agent_runs, api_tokens, checkpoints, events, workflows
from tests.acceptance.server import (
    Api,
    ServerProcess,
    module_server_fixture,
    running_server,
)
from tests.conftest import BACKENDS, _pg_admin, _pg_url

pytestmark = pytest.mark.slow

PLAN_READY = "plan_ready_for_review"
EDIT_REVIEWER_PROMPT = "edit_reviewer_prompt"


server = module_server_fixture(env={"ORCHESTRA_MAX_BODY_BYTES": "4096"})


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    async with Api(server.base_url, server.tokens["root"]) as client:
        yield client


def _counts(conn: Connection) -> dict[str, Any]:
    def count(table: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    statuses = conn.execute(select(checkpoints.c.id, checkpoints.c.status)).all()
    return {
        "workflows": count(workflows),
        "checkpoints": sorted(map(tuple, statuses)),
        "agent_runs": count(agent_runs),
        "events": count(events),
        "tokens": count(api_tokens),
    }


async def snapshot(server: ServerProcess) -> dict[str, Any]:
    """What the database holds, read directly (not through the API)."""
    db = Database(server.database_url)
    try:
        return await db.read(_counts)
    finally:
        db.close()


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["message"]
    assert "Traceback" not in r.text
    if code is not None:
        assert body["error"]["code"] == code, body
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture
async def waiting(api: Api) -> dict[str, Any]:
    """A workflow waiting at its plan checkpoint (nothing else running)."""
    wid = (await api.create_workflow())["id"]
    return await api.wait_for_checkpoint(wid, PLAN_READY)


async def test_bad_workflow_requests_change_nothing(
    server: ServerProcess, api: Api, tmp_path: Path
) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a directory")
    good = {"name": "n", "prompt": "p"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**good, "type": "no_such_workflow"}, 422, "invalid_input"),
        ({**good, "agents": {"planner": "no_such_adapter"}}, 422, "invalid_input"),
        ({**good, "agents": {"reviewers": [{"adapter": "nope"}]}}, 422, "invalid_input"),
        ({**good, "agents": {"reviewers": []}}, 422, "invalid_input"),
        ({**good, "workspace_path": str(tmp_path / "missing")}, 422, "invalid_input"),
        ({**good, "workspace_path": str(a_file)}, 422, "invalid_input"),
        ({**good, "workspace_path": "relative/dir"}, 422, "invalid_input"),
        ({**good, "max_iterations": 0}, 422, "invalid_input"),
        ({**good, "max_iterations": 10**30}, 422, "invalid_input"),
        ({**good, "name": "   "}, 422, "invalid_input"),
        ({**good, "name": "nul\x00byte"}, 422, "invalid_input"),
        ({"name": "n"}, 422, "invalid_input"),
        ({**good, "surprise": 1}, 422, "invalid_input"),
    ]
    before = await snapshot(server)
    for body, status, code in cases:
        assert_error(await api.client.post("/api/workflows", json=body), status, code)
    headers = {"Content-Type": "application/json"}
    malformed = await api.client.post("/api/workflows", content=b'{"name": ', headers=headers)
    assert_error(malformed, 400, "malformed_json")
    huge = {"name": "n", "prompt": "x" * 5000}
    assert_error(await api.client.post("/api/workflows", json=huge), 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"name": "n", "prompt": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    streamed = await api.client.post("/api/workflows", content=chunks(), headers=headers)
    assert_error(streamed, 413, "payload_too_large")
    assert await snapshot(server) == before


async def test_bad_resolutions_change_nothing(
    server: ServerProcess, api: Api, waiting: dict[str, Any]
) -> None:
    url = f"/api/checkpoints/{waiting['id']}/resolve"
    before = await snapshot(server)
    error = assert_error(await api.client.post(url, json={"action": "nope"}), 422, "invalid_input")
    assert "approve" in error["details"]["allowed"]
    assert_error(await api.client.post(url, json={}), 422, "invalid_input")
    assert_error(await api.client.post(url, json={"action": 7}), 422, "invalid_input")
    unknown = "/api/checkpoints/does-not-exist/resolve"
    assert_error(await api.client.post(unknown, json={"action": "approve"}), 404, "not_found")
    long_key = {"Idempotency-Key": "k" * 300}
    assert_error(await api.client.post(url, json={"action": "approve"}, headers=long_key), 422)
    for inputs in ({"timeout_s": "soon"}, {"timeout_s": 30}, [30]):
        body = {"action": "approve", "inputs": inputs}
        assert_error(await api.client.post(url, json=body), 422, "invalid_input")
    error = assert_error(
        await api.client.post(url, json={"action": "approve", "inputs": {"timeout_s": 30}}), 422
    )
    assert error["details"]["field"] == "inputs.timeout_s"
    assert "takes no input" in error["message"]
    assert await snapshot(server) == before

    # A checkpoint whose action needs content: refuse an empty one.
    await api.post(url, {"action": EDIT_REVIEWER_PROMPT})
    prompt_cp = await api.wait_for_checkpoint(waiting["workflow_id"], EDIT_REVIEWER_PROMPT)
    send = f"/api/checkpoints/{prompt_cp['id']}/resolve"
    before = await snapshot(server)
    for body in (
        {"action": "send_to_reviewers"},
        {"action": "send_to_reviewers", "edited_content": "  "},
    ):
        error = assert_error(await api.client.post(send, json=body), 422, "invalid_input")
        assert error["details"]["field"] == "edited_content"
    # Already resolved: 409 with the existing resolution.
    again = assert_error(await api.client.post(url, json={"action": "approve"}), 409)
    assert again["code"] == "already_resolved"
    assert again["details"]["resolution"]["action"] == EDIT_REVIEWER_PROMPT
    assert again["details"]["resolution"]["resolved_by"] == "root"
    assert await snapshot(server) == before


async def test_cancel_retry_and_lookups(
    server: ServerProcess, api: Api, waiting: dict[str, Any]
) -> None:
    wid = waiting["workflow_id"]
    before = await snapshot(server)
    assert_error(
        await api.client.post(f"/api/workflows/{wid}/retry"), 409, "transition_not_allowed"
    )
    for path in (
        "/api/workflows/nope",
        "/api/workflows/nope/history",
        "/api/workflows/nope/events",
        "/api/workflows/nope/events/stream",
        "/api/checkpoints/nope",
        "/api/no/such/route",
    ):
        assert_error(await api.client.get(path), 404, "not_found")
    for path in ("/api/workflows/nope/cancel", "/api/workflows/nope/retry"):
        assert_error(await api.client.post(path), 404, "not_found")
    assert_error(await api.client.delete(f"/api/workflows/{wid}"), 405, "method_not_allowed")
    for path, params in (
        ("/api/workflows", {"limit": 0}),
        ("/api/workflows", {"limit": 100000}),
        ("/api/workflows", {"limit": "many"}),
        ("/api/workflows", {"cursor": "garbage!"}),
        ("/api/workflows", {"status": "sleeping"}),
        ("/api/checkpoints", {"status": "sleeping"}),
        (f"/api/workflows/{wid}/events", {"after": -1}),
        (f"/api/workflows/{wid}/events", {"after": 2**64}),
        ("/api/events/stream", {"after": -1}),
    ):
        assert_error(await api.client.get(path, params=params), 422, "invalid_input")
    for bad_cursor in ("yesterday", str(2**64), "-3"):
        headers = {"Last-Event-ID": bad_cursor}
        assert_error(await api.client.get("/api/events/stream", headers=headers), 422)
    assert await snapshot(server) == before

    cancelled = await api.post(f"/api/workflows/{wid}/cancel")
    assert cancelled["status"] == WorkflowStatus.CANCELLED
    history = await api.get(f"/api/workflows/{wid}/history")
    assert history["checkpoints"][0]["status"] == CheckpointStatus.SUPERSEDED
    before = await snapshot(server)
    for action in ("cancel", "retry"):
        error = assert_error(await api.client.post(f"/api/workflows/{wid}/{action}"), 409)
        assert error["details"]["status"] == WorkflowStatus.CANCELLED
    late = await api.client.post(
        f"/api/checkpoints/{waiting['id']}/resolve", json={"action": "approve"}
    )
    assert_error(late, 409, "already_resolved")
    assert await snapshot(server) == before


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="needs PostgreSQL")
async def test_database_gone_gives_503_and_no_stack_trace(tmp_path: Path, pg_template: str) -> None:
    name = f"orchestra_gone_{os.getpid()}_{tmp_path.name[-8:]}".replace("-", "_")
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        with running_server(_pg_url(name), tmp_path, no_auth=True) as proc:
            async with Api(proc.base_url) as api:
                await api.create_workflow()
                with _pg_admin() as admin:
                    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                health = await api.client.get("/health")
                assert health.status_code == 503
                assert health.json()["database"] == {"kind": "postgresql", "ok": False}
                for _ in range(2):  # the pool's stale connections and then new ones
                    r = await api.client.post("/api/workflows", json={"name": "n", "prompt": "p"})
                    assert_error(r, 503, "database_unavailable")
                    assert_error(await api.client.get("/api/workflows"), 503)
            assert "Traceback" not in r.text
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_unexpected_errors_are_a_generic_500_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: a bug in a handler answers 500 in the error shape without its
    details, and the traceback goes to the log; driver errors map to 503/422."""
    from sqlalchemy.exc import DataError, OperationalError

    from orchestra.app import create_app
    from orchestra.config import Settings
    from orchestra.runtime import open_runtime

    runtime = open_runtime(Settings(data_dir=tmp_path, no_auth=True))
    app = create_app(runtime, run_worker=False)

    @app.get("/boom/{kind}")
    async def boom(kind: str) -> None:
        if kind == "bug":
            raise RuntimeError("secret detail")
        if kind == "db":
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        raise DataError("INSERT", {}, Exception("NUL byte"))

    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            bug = await client.get("/boom/bug")
            assert bug.status_code == 500
            assert bug.json() == {
                "error": {
                    "code": "internal_error",
                    "message": "internal server error (logged)",
                    "details": {},
                }
            }
            assert "secret detail" in caplog.text and "Traceback" in caplog.text
            assert_error(await client.get("/boom/db"), 503, "database_unavailable")
            assert_error(await client.get("/boom/data"), 422, "invalid_input")
    finally:
        runtime.close()
