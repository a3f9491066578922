"""The deadline a client gives when starting a workflow (``POST /api/workflows``): a
due time and the opt-in to a default action, nothing else. A client cannot choose
escalation targets (the operator's), an action no checkpoint offers, or a due time
out of bounds; each is a 422 that names the field, and nothing is written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.app import create_app
from orchestra.config import Settings
from orchestra.domain.errors import InvalidInput
from orchestra.runtime import Runtime, open_runtime
from tests.support.engine import snapshot

START = {"name": "flag", "prompt": "Add a --json flag"}


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime = open_runtime(Settings(data_dir=tmp_path, database_url=db_url, no_auth=True))
    try:
        transport = httpx.ASGITransport(app=create_app(runtime, run_worker=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield runtime, client
    finally:
        runtime.close()


async def test_a_deadline_given_at_the_start_reaches_the_checkpoint_contract(
    api: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = api
    body = {**START, "deadline": {"after": "2h", "default_action": "approve"}}
    r = await client.post("/api/workflows", json=body)
    assert r.status_code == 201, r.text
    await runtime.service.engine.worker.run_until_idle()
    wf = (await client.get(f"/api/workflows/{r.json()['id']}")).json()
    cp = wf["pending_checkpoint"]
    assert cp["due_at"] == cp["deadline"]["due_at"] and cp["due_at"] > cp["created_at"]
    assert cp["deadline"]["action"] == "approve" and cp["deadline"]["escalate"] == []
    assert cp["deadline"]["fired_at"] is None
    # The policy is the workflow's own field; ``agents`` is the operator's agent choice.
    assert wf["deadline"] == {"after_s": 7200.0, "default_action": "approve", "steps": {}}
    assert "deadline" not in wf["agents"]


async def test_a_deadline_hidden_in_agents_is_refused_and_nothing_is_written(
    api: tuple[Runtime, httpx.AsyncClient],
) -> None:
    """The old place of the policy is no way in: ``agents`` takes agent jobs only."""
    runtime, client = api
    before = await snapshot(runtime.db)
    sneaked = {"after_s": 1, "default_action": "approve", "steps": {}}
    r = await client.post("/api/workflows", json={**START, "agents": {"deadline": sneaked}})
    assert r.status_code == 422, r.text
    assert "agents.deadline" in r.json()["error"]["message"]
    # Nor through the service (the local CLI's way in).
    with pytest.raises(InvalidInput, match=r"unknown agents field\(s\): deadline"):
        await runtime.service.create_workflow(**START, agents={"deadline": sneaked})
    assert await snapshot(runtime.db) == before


@pytest.mark.parametrize(
    ("deadline", "says"),
    [
        ({"after": "soon"}, "not a duration"),
        ({"after": 10**12}, "between"),
        ({"after": "1h", "escalate": ["ops"]}, "escalate"),  # the operator's choice
        ({"after": "1h", "default_action": "merge"}, "offered by no checkpoint"),
        ({"after": "1h", "default_action": "x" * 10_000}, "not an action name"),
        ({"after": "1h", "actor": "admin"}, "actor"),
        ({"after": {"$gt": 0}}, "not a duration"),
        ({"default_action": "approve"}, "deadline.after is needed"),
        ("2h", "deadline"),
    ],
)
async def test_a_bad_deadline_is_a_422_naming_it_and_nothing_is_written(
    api: tuple[Runtime, httpx.AsyncClient], deadline: Any, says: str
) -> None:
    runtime, client = api
    before = await snapshot(runtime.db)
    r = await client.post("/api/workflows", json={**START, "deadline": deadline})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert says in error["message"], error
    assert await snapshot(runtime.db) == before
