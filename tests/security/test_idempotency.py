"""Attack: an Idempotency-Key replayed with another body, or by another caller, got
the first request's answer (200) as if it were the same request. A key names one
request: caller and body must match what the checkpoint recorded, else a 422
``idempotency_key_reused`` and nothing is written. Real server, both databases."""

from __future__ import annotations

from typing import Any

import pytest

from tests.acceptance.server import Api, ServerProcess, module_server_fixture

pytestmark = pytest.mark.slow

PLAN_READY = "plan_ready_for_review"

server = module_server_fixture()


async def _state(api: Api, wid: str, cp_id: str) -> tuple[Any, Any]:
    return await api.get(f"/api/checkpoints/{cp_id}"), await api.get(
        f"/api/workflows/{wid}/history"
    )


async def test_a_reused_key_with_another_body_or_caller_is_refused(server: ServerProcess) -> None:
    async with (
        Api(server.base_url, server.tokens["ana"]) as ana,
        Api(server.base_url, server.tokens["root"]) as root,
    ):
        wid = (await ana.create_workflow())["id"]
        cp = await ana.wait_for_checkpoint(wid, PLAN_READY)
        url = f"/api/checkpoints/{cp['id']}/resolve"
        key = {"Idempotency-Key": "req-sec-1"}
        body = {"action": "approve", "notes": "ship it"}
        first = await ana.post(url, body, headers=key)
        # the workflow moves on to the reviews, then waits at the next checkpoint
        await ana.wait_for_checkpoint(wid, "reviews_ready_for_consolidation")
        before = await _state(ana, wid, cp["id"])

        assert await ana.post(url, body, headers=key) == first  # the genuine replay
        for caller, other in (
            (ana, {"action": "reject", "notes": "ship it"}),
            (ana, {"action": "approve", "notes": "something else"}),
            (ana, {"action": "approve"}),
            (ana, {"action": "approve", "notes": "ship it", "edited_content": "# mine\n"}),
            (ana, {"action": "approve", "notes": "ship it", "inputs": {"timeout_s": 5}}),
            (root, body),  # the same body by someone else
        ):
            r = await caller.client.post(url, json=other, headers=key)
            assert r.status_code == 422, (other, r.text)
            error = r.json()["error"]
            assert error["code"] == "idempotency_key_reused"
            assert "use a new key" in error["message"]
            assert "resolution" not in error["details"]  # the first answer does not leak
        assert await _state(ana, wid, cp["id"]) == before


async def test_the_same_request_replayed_still_gets_the_original_answer(
    server: ServerProcess,
) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as ana:
        wid = (await ana.create_workflow())["id"]
        cp = await ana.wait_for_checkpoint(wid, PLAN_READY)
        url = f"/api/checkpoints/{cp['id']}/resolve"
        edited = (cp["editable_content"] or "") + "\nEdited.\n"
        body = {"action": "approve", "edited_content": edited, "notes": None}
        key = {"Idempotency-Key": "req-sec-2"}
        first = await ana.post(url, body, headers=key)
        assert first["status"] == "edited"
        for _ in range(3):
            assert await ana.post(url, body, headers=key) == first
        # another key is another request, which lost the race: 409 as before
        r = await ana.client.post(url, json=body, headers={"Idempotency-Key": "req-sec-3"})
        assert r.status_code == 409
