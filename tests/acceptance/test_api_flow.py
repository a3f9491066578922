"""Plan & Review over HTTP only, against a real server process, on both databases:
the whole path, live events (SSE and WebSocket) with reconnects, concurrent and
replayed resolutions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from orchestra.domain.events import EventType
from orchestra.domain.statuses import CheckpointStatus, WorkflowStatus
from tests.acceptance.server import (
    Api,
    ServerProcess,
    collect_sse,
    module_server_fixture,
    read_text,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


server = module_server_fixture()


PLAN_READY = "plan_ready_for_review"
REVIEWS_READY = "reviews_ready_for_consolidation"
EDIT = "\n5. Also document the flag in the README.\n"
NOTES = "Name the exact test cases, please."


def _checkpoint_created(step: str, iteration: int = 1) -> Any:
    def seen(frames: list[Any]) -> bool:
        return any(
            f.event == EventType.CHECKPOINT_CREATED
            and f.data["data"]["step"] == step
            and f.data["data"]["iteration"] == iteration
            for f in frames
        )

    return seen


async def _all_events(api: Api, workflow_id: str) -> list[dict[str, Any]]:
    page = await api.get(f"/api/workflows/{workflow_id}/events", params={"limit": 5000})
    items: list[dict[str, Any]] = page["items"]
    return items


async def test_plan_review_over_http(server: ServerProcess) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as api:
        wf = await api.create_workflow(name="json flag")
        # The embedded worker adopts a new workflow in its creating commit, so the
        # answer (the committed state) may already show it running.
        assert wf["status"] in {WorkflowStatus.PENDING, WorkflowStatus.RUNNING}
        assert wf["created_by"] == "ana"
        wid = wf["id"]

        # Follow the workflow's stream until the plan waits for a person.
        async with api.client.stream("GET", f"/api/workflows/{wid}/events/stream") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            frames = await collect_sse(r, _checkpoint_created(PLAN_READY))
        created = frames[-1]
        plan_cp = await api.get(f"/api/checkpoints/{created.data['data']['checkpoint_id']}")
        assert plan_cp["step_name"] == PLAN_READY and plan_cp["status"] == CheckpointStatus.PENDING
        inbox = await api.get("/api/checkpoints", params={"workflow_id": wid})
        assert [c["id"] for c in inbox["items"]] == [plan_cp["id"]]

        edited_plan = plan_cp["editable_content"] + EDIT
        resolved = await api.post(
            f"/api/checkpoints/{plan_cp['id']}/resolve",
            {"action": "approve", "edited_content": edited_plan},
        )
        assert resolved["status"] == CheckpointStatus.EDITED
        assert resolved["resolution"]["resolved_by"] == "ana"
        assert resolved["resolution"]["edited_content"] == edited_plan

        reviews_cp = await api.wait_for_checkpoint(wid, REVIEWS_READY)
        assert len(reviews_cp["agent_outputs"]) == 3
        await api.post(
            f"/api/checkpoints/{reviews_cp['id']}/resolve",
            {"action": "revise", "notes": NOTES},
        )

        plan2 = await api.wait_for_checkpoint(wid, PLAN_READY)
        assert plan2["iteration"] == 2
        await api.post(f"/api/checkpoints/{plan2['id']}/resolve", {"action": "approve"})
        reviews2 = await api.wait_for_checkpoint(wid, REVIEWS_READY)
        assert reviews2["iteration"] == 2
        await api.post(f"/api/checkpoints/{reviews2['id']}/resolve", {"action": "approve"})

        done = await api.wait_for_status(wid, WorkflowStatus.COMPLETED)
        assert done["pending_checkpoint"] is None and done["finished_at"] is not None

        history = await api.get(f"/api/workflows/{wid}/history")
        runs = history["agent_runs"]
        first_reviews = [r for r in runs if r["job"] == "reviewer" and r["iteration"] == 1]
        assert len(first_reviews) == 3
        assert all(EDIT.strip() in r["prompt"] for r in first_reviews)
        second_plan = [r for r in runs if r["job"] == "planner" and r["iteration"] == 2]
        assert len(second_plan) == 1 and NOTES in second_plan[0]["prompt"]
        assert EDIT.strip() in second_plan[0]["prompt"]  # the edited plan is what is revised
        decisions = [
            (c["step_name"], c["resolution"]["action"], c["resolution"]["resolved_by"])
            for c in history["checkpoints"]
        ]
        assert decisions == [
            (PLAN_READY, "approve", "ana"),
            (REVIEWS_READY, "revise", "ana"),
            (PLAN_READY, "approve", "ana"),
            (REVIEWS_READY, "approve", "ana"),
        ]
        assert history["checkpoints"][1]["resolution"]["notes"] == NOTES
        ids = [e["id"] for e in history["events"]]
        assert ids == sorted(set(ids))
        listed = await api.get("/api/workflows", params={"status": WorkflowStatus.COMPLETED})
        assert wid in [w["id"] for w in listed["items"]]


async def test_sse_reconnect_loses_nothing_and_repeats_nothing(server: ServerProcess) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as api:
        wid = (await api.create_workflow())["id"]
        url = f"/api/workflows/{wid}/events/stream"
        async with api.client.stream("GET", url) as r:
            first = await collect_sse(r, lambda fs: len(fs) >= 3)
        # Disconnected: the workflow moves on while nobody listens.
        plan_cp = await api.wait_for_checkpoint(wid, PLAN_READY)
        await api.post(f"/api/checkpoints/{plan_cp['id']}/resolve", {"action": "approve"})
        await api.wait_for_checkpoint(wid, REVIEWS_READY)

        # Reconnect as a browser does: the original URL plus Last-Event-ID, which wins.
        headers = {"Last-Event-ID": str(first[-1].id)}
        async with api.client.stream("GET", url + "?after=0", headers=headers) as r:
            second = await collect_sse(r, _checkpoint_created(REVIEWS_READY))

        received = [f.id for f in first + second]
        logged = [e["id"] for e in await _all_events(api, wid)]
        assert received == logged  # every event once, in order
        assert [f.data for f in first + second] == await _all_events(api, wid)

        # ?after= alone works the same way.
        async with api.client.stream("GET", f"{url}?after={first[-1].id}") as r:
            again = await collect_sse(r, _checkpoint_created(REVIEWS_READY))
        assert [f.id for f in again] == [f.id for f in second]

        # Nothing moves until someone decides: after the last event, keep-alives only.
        async with api.client.stream("GET", f"{url}?after={second[-1].id}") as r:
            idle = await read_text(r, lambda text: text.count("\n\n") >= 2)
        assert idle == ": keep-alive\n\n" * 2


async def test_global_stream_carries_every_workflow(server: ServerProcess) -> None:
    async with (
        Api(server.base_url, server.tokens["vic"]) as viewer,
        Api(server.base_url, server.tokens["ana"]) as api,
    ):
        a = (await api.create_workflow(name="a"))["id"]
        b = (await api.create_workflow(name="b"))["id"]
        async with viewer.client.stream("GET", "/api/events/stream") as r:
            frames = await collect_sse(
                r,
                lambda fs: (
                    {a, b}
                    <= {
                        f.data["workflow_id"] for f in fs if f.event == EventType.CHECKPOINT_CREATED
                    }
                ),
            )
        ids = [f.id for f in frames]
        assert ids == sorted(set(ids))


async def test_websocket_stream(server: ServerProcess) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as api:
        wid = (await api.create_workflow())["id"]
        ws_url = server.base_url.replace("http://", "ws://") + f"/ws/workflows/{wid}"
        auth = {"Authorization": f"Bearer {server.tokens['vic']}"}
        received: list[dict[str, Any]] = []
        async with connect(ws_url, additional_headers=auth) as ws:
            async with asyncio.timeout(30):
                while not (
                    received
                    and received[-1]["type"] == EventType.CHECKPOINT_CREATED
                    and received[-1]["data"]["step"] == PLAN_READY
                ):
                    received.append(json.loads(await ws.recv()))
        assert received == await _all_events(api, wid)

        # Same cursor semantics: ?after= resumes after an event (a viewer's header).
        cut = received[1]["id"]
        plan_cp = await api.wait_for_checkpoint(wid, PLAN_READY)
        await api.post(f"/api/checkpoints/{plan_cp['id']}/resolve", {"action": "cancel"})
        resumed: list[dict[str, Any]] = []
        viewer = {"Authorization": f"Bearer {server.tokens['vic']}"}
        async with connect(f"{ws_url}?after={cut}", additional_headers=viewer) as ws:
            async with asyncio.timeout(30):
                while not (resumed and resumed[-1]["data"].get("to") == WorkflowStatus.CANCELLED):
                    resumed.append(json.loads(await ws.recv()))
        last = resumed[-1]["id"]
        assert [e for e in await _all_events(api, wid) if cut < e["id"] <= last] == resumed

        # No credential, or a token in the URL (never one: URLs end up in logs).
        for bad in (ws_url, f"{ws_url}?token={server.tokens['vic']}"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(bad):
                    pass
            assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as missing:
            async with connect(ws_url.replace(wid, "nope"), additional_headers=auth):
                pass
        assert missing.value.response.status_code == 404


async def test_twenty_concurrent_resolutions_one_wins(server: ServerProcess) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as api:
        wid = (await api.create_workflow())["id"]
        cp = await api.wait_for_checkpoint(wid, PLAN_READY)
        url = f"/api/checkpoints/{cp['id']}/resolve"

        async def attempt(i: int) -> httpx.Response:
            body = {
                "action": "approve",
                "edited_content": f"{cp['editable_content']}\n<!-- {i} -->",
            }
            return await api.client.post(url, json=body)

        answers = await asyncio.gather(*(attempt(i) for i in range(20)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] + [409] * 19, [a.text for a in answers]
        winner = next(a.json() for a in answers if a.status_code == 200)["resolution"]
        for loser in (a.json() for a in answers if a.status_code == 409):
            assert loser["error"]["code"] == "already_resolved"
            assert loser["error"]["details"]["resolution"] == winner
        history = await api.get(f"/api/workflows/{wid}/history")
        assert [c["resolution"] for c in history["checkpoints"] if c["id"] == cp["id"]] == [winner]
        changes = [
            e
            for e in history["events"]
            if e["type"] == EventType.CHECKPOINT_STATUS_CHANGED and e["data"]["id"] == cp["id"]
        ]
        assert len(changes) == 1


async def test_idempotent_replay_gets_the_original_answer(server: ServerProcess) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as api:
        wid = (await api.create_workflow())["id"]
        cp = await api.wait_for_checkpoint(wid, PLAN_READY)
        url = f"/api/checkpoints/{cp['id']}/resolve"
        body = {"action": "approve", "notes": "ship it"}
        key = {"Idempotency-Key": "req-7f3a"}
        first = await api.post(url, body, headers=key)
        await api.wait_for_checkpoint(wid, REVIEWS_READY)  # the workflow moved on meanwhile
        assert await api.post(url, body, headers=key) == first
        other = await api.client.post(url, json=body, headers={"Idempotency-Key": "req-other"})
        assert other.status_code == 409
        assert other.json()["error"]["details"]["resolution"] == first["resolution"]
        history = await api.get(f"/api/workflows/{wid}/history")
        assert len([c for c in history["checkpoints"] if c["step_name"] == PLAN_READY]) == 1


async def _metrics(api: Api) -> dict[str, float]:
    r = await api.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in r.text.splitlines()
        if line and not line.startswith("#")
    }


async def test_metrics_follow_the_work(server: ServerProcess) -> None:
    planner = 'adapter="demo",agent_job="planner",status="completed"'
    async with Api(server.base_url, server.tokens["ana"]) as api:
        wid = (await api.create_workflow())["id"]
        cp = await api.wait_for_checkpoint(wid, PLAN_READY)
        await api.post(f"/api/checkpoints/{cp['id']}/resolve", {"action": "cancel"})

        async def counted() -> dict[str, float] | None:  # the hub reads the log just after
            m = await _metrics(api)
            return m if m["orchestra_checkpoint_wait_seconds_count"] >= 1 else None

        lines = await eventually(counted, what="the resolution in the metrics", timeout_s=10)
        assert lines['orchestra_workflows{status="cancelled"}'] >= 1
        assert "orchestra_pending_checkpoints" in lines
        assert lines[f"orchestra_agent_run_duration_seconds_count{{{planner}}}"] >= 1
        assert lines['orchestra_step_duration_seconds_count{step="plan"}'] >= 1
        gauge = "orchestra_event_stream_subscribers"
        async with api.client.stream("GET", "/api/events/stream?after=999999999"):
            inside = (await _metrics(api))[gauge]
            assert inside >= 1

        async def left() -> bool | None:  # the server noticed the client going away
            return True if (await _metrics(api))[gauge] == inside - 1 else None

        await eventually(left, what="the subscriber count to drop", timeout_s=10)
