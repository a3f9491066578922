"""Servers stopped mid-step, gracefully (SIGTERM) or not (SIGKILL): the next server on
the same database continues every workflow to completion, on both databases."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from orchestra.domain.statuses import AgentRunStatus, WorkflowStatus
from tests.acceptance.server import Api, ServerProcess, running_server, start_server
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

PLAN_READY = "plan_ready_for_review"
REVIEWS_READY = "reviews_ready_for_consolidation"
#: Long enough to be caught mid-step, short enough to run again quickly.
SLOW_PLANNER = {"planner": "demo-slow"}  # configured in tests/acceptance/server.py


async def _start_slow_workflow(server: ServerProcess) -> str:
    """A workflow whose planner is running (a step in flight) on ``server``."""
    async with Api(server.base_url) as api:
        wid = (await api.create_workflow(agents=SLOW_PLANNER))["id"]

        async def planner_running() -> bool | None:
            runs = (await api.get(f"/api/workflows/{wid}/history"))["agent_runs"]
            return True if any(r["status"] == AgentRunStatus.RUNNING for r in runs) else None

        await eventually(planner_running, what="the planner to start", timeout_s=30)
        return wid


async def _finish(api: Api, wid: str) -> list[tuple[int, str]]:
    """Approve to completion; the planner's runs as (attempt, status)."""
    plan = await api.wait_for_checkpoint(wid, PLAN_READY)
    await api.post(f"/api/checkpoints/{plan['id']}/resolve", {"action": "approve"})
    reviews = await api.wait_for_checkpoint(wid, REVIEWS_READY)
    await api.post(f"/api/checkpoints/{reviews['id']}/resolve", {"action": "approve"})
    await api.wait_for_status(wid, WorkflowStatus.COMPLETED)
    runs = (await api.get(f"/api/workflows/{wid}/history"))["agent_runs"]
    return [(r["attempt"], r["status"]) for r in runs if r["job"] == "planner"]


async def test_stopped_and_killed_servers_leave_work_that_the_next_one_completes(
    db_url: str, tmp_path: Path
) -> None:
    # SIGTERM while the planner runs: the step finishes within the grace period.
    first = start_server(db_url, tmp_path, no_auth=True)
    try:
        graceful = await _start_slow_workflow(first)
        first.proc.send_signal(signal.SIGTERM)
        first.proc.wait(timeout=30)
    finally:
        first.kill()
    # A graceful stop is a clean exit, after the runtime closed.
    assert first.proc.returncode == 0, first.output()

    # SIGKILL while the planner runs: nothing of the process's shutdown code runs.
    second = start_server(db_url, tmp_path, no_auth=True)
    try:
        crashed = await _start_slow_workflow(second)
    finally:
        second.kill()
    assert second.proc.returncode == -signal.SIGKILL

    with running_server(db_url, tmp_path, no_auth=True) as third:
        async with Api(third.base_url) as api:
            after_term, after_kill = await asyncio.gather(
                _finish(api, graceful), _finish(api, crashed)
            )
    # Finished within the grace period, so not run again.
    assert after_term == [(1, AgentRunStatus.COMPLETED)]
    # Cut short: kept as interrupted once its lease expired, and run again as attempt 2.
    assert after_kill == [(1, AgentRunStatus.INTERRUPTED), (2, AgentRunStatus.COMPLETED)]
