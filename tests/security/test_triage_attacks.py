"""Attacks on inbox triage (snooze, the inbox filters, the count): a snooze needs a
token that may resolve (a viewer's, none, or a cookie without its CSRF token or
from a foreign page changes nothing); ``until`` is bounded (no snoozing forever,
no date overflow into a 500); filter parameters are bounded and checked before
any query. Real server, both databases; each refusal leaves the checkpoint as it
was."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from orchestra.api.auth import CSRF_HEADER
from orchestra.domain.events import EventType
from orchestra.workflows.plan_review import PLAN_READY
from tests.acceptance.server import Api, ServerProcess, module_server_fixture, web_login

pytestmark = pytest.mark.slow

server = module_server_fixture()
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _checkpoint(server: ServerProcess) -> dict[str, Any]:
    async with Api(server.base_url, server.tokens["ana"]) as api:
        wf = await api.create_workflow(name="triage attack")
        return await api.wait_for_checkpoint(wf["id"], PLAN_READY)


async def _unchanged(server: ServerProcess, cp: dict[str, Any]) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as api:
        now = await api.get(f"/api/checkpoints/{cp['id']}")
        assert now["snoozed_until"] is None and now["snoozed_by"] is None
        history = await api.get(f"/api/workflows/{cp['workflow_id']}/history")
        assert not [e for e in history["events"] if e["type"] == EventType.CHECKPOINT_SNOOZED]


def _status(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    error: dict[str, Any] = r.json()["error"]
    return error


async def test_snoozing_needs_a_token_that_may_resolve(server: ServerProcess) -> None:
    cp = await _checkpoint(server)
    path = f"/api/checkpoints/{cp['id']}/snooze"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as anonymous:
        _status(await anonymous.post(path, json={"until": "1h"}), 401)
        _status(await anonymous.delete(path), 401)
        _status(await anonymous.get("/api/checkpoints/count"), 401)
    async with Api(server.base_url, server.tokens["vic"]) as viewer:
        _status(await viewer.client.post(path, json={"until": "1h"}), 403)
        _status(await viewer.client.delete(path), 403)
        assert (await viewer.get("/api/checkpoints/count"))["pending"] >= 1  # reading is fine
    await _unchanged(server, cp)


@pytest.mark.parametrize(
    "until",
    [
        "31d",
        "999999w999999w999999w999999w999999w",  # would overflow a date
        "9999-12-31T23:59:59+00:00",
        "0001-01-01T00:00:00+00:00",
        "-1h",
        "1h; DROP TABLE checkpoints",
        "infinity",
        "x" * 10_000,
        "",
    ],
)
async def test_until_is_bounded_and_a_bad_one_writes_nothing(
    server: ServerProcess, until: str
) -> None:
    cp = await _checkpoint(server)
    async with Api(server.base_url, server.tokens["ana"]) as api:
        r = await api.client.post(f"/api/checkpoints/{cp['id']}/snooze", json={"until": until})
        error = _status(r, 422)
        assert "until" in error["message"]
        typed = await api.client.post(f"/api/checkpoints/{cp['id']}/snooze", json={"until": 3600})
        _status(typed, 422)
    await _unchanged(server, cp)


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"workflow": "a" * 33}, "32"),
        ({"workflow": "' OR 1=1 --"}, "hex digits"),
        ({"step": "s" * 65}, "64"),
        ({"step": "plan' OR '1'='1"}, PLAN_READY),
        ({"older_than": "1" * 41}, "40"),
        ({"older_than": "999999w"}, "out of range"),
        ({"snoozed": "everything"}, "hide"),
    ],
)
async def test_filter_parameters_are_bounded_and_checked(
    server: ServerProcess, params: dict[str, str], says: str
) -> None:
    async with Api(server.base_url, server.tokens["vic"]) as api:
        r = await api.client.get("/api/checkpoints", params=params)
        error = _status(r, 422)
        assert says in str(error), error


async def test_a_cookie_snooze_needs_its_csrf_token_and_the_servers_origin(
    server: ServerProcess,
) -> None:
    cp = await _checkpoint(server)
    form = f"/checkpoints/{cp['id']}/snooze"
    api = f"/api/checkpoints/{cp['id']}/snooze"
    async with web_login(server.base_url, server.tokens["ana"]) as (browser, csrf):
        no_field = await browser.post(form, content="until=1h", headers=FORM)
        assert no_field.status_code == 403, no_field.text[:300]
        no_header = await browser.post(api, json={"until": "1h"})
        _status(no_header, 403)
        foreign = {"Origin": "http://evil.example", CSRF_HEADER: csrf}
        _status(await browser.post(api, json={"until": "1h"}, headers=foreign), 403)
        await _unchanged(server, cp)
        kept = await browser.post(
            form, content=f"csrf={csrf}&until=1h&next=//evil.example/x", headers=FORM
        )
        assert kept.status_code == 303 and kept.headers["location"] == "/inbox"  # not elsewhere
    async with web_login(server.base_url, server.tokens["vic"]) as (viewer, csrf):
        denied = await viewer.post(form, content=f"csrf={csrf}&until=", headers=FORM)
        assert denied.status_code == 403
