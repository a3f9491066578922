"""Driving Plan & Review through the service layer, and reading back what was written.

The engine tests use these so each test says what happens at a checkpoint, not
how to get there. ``snapshot`` is the whole database, so "nothing was written"
can be asserted literally.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Connection, func, select

from orchestra.agents.config import AgentSpec
from orchestra.agents.registry import create_adapter
from orchestra.domain.events import EventType
from orchestra.domain.models import AgentRun, Checkpoint, Decision, Event, Workflow
from orchestra.domain.statuses import WorkflowStatus
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.store.db import Database
from orchestra.store.schema import events, metadata

Snapshot = dict[str, list[tuple[Any, ...]]]


def demo(*, timeout_s: float | None = None, **options: Any) -> dict[str, Any]:
    """A demo agent with ``options`` (delay_s, fail, …), for :func:`use_agents` to
    configure (clients choose agents by name; the operator configures them)."""
    entry: dict[str, Any] = {"adapter": "demo", "options": options}
    if timeout_s is not None:
        entry["timeout_s"] = timeout_s
    return entry


def _configured_name(service: Orchestra, entry: str | dict[str, Any]) -> str:
    """Add ``entry`` to the service's agents configuration (as an operator would in the
    agents file); return its name. A plain demo keeps the name ``demo``."""
    if isinstance(entry, str):
        return entry
    name = entry.get("name")
    if name is None and not entry.get("options") and entry.get("timeout_s") is None:
        name = entry["adapter"]
    elif name is None:
        digest = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
        name = f"{entry['adapter']}-{digest[:6]}"
    spec = AgentSpec(
        name=name,
        adapter=entry["adapter"],
        options=entry.get("options") or {},
        timeout_s=entry.get("timeout_s"),
    )
    create_adapter(spec.adapter, spec.options)  # checked as the agents file would be
    service.agents = service.agents.model_copy(
        update={"agents": {**service.agents.agents, name: spec}}
    )
    return name


def use_agents(service: Orchestra, choice: dict[str, Any] | None) -> dict[str, Any] | None:
    """Configure the agents ``choice`` describes on ``service``; return the choice by name."""
    if choice is None:
        return None
    named: dict[str, Any] = {}
    for job in ("planner", "implementer"):
        if job in choice:
            named[job] = _configured_name(service, choice[job])
    for job in ("reviewers", "code_reviewers"):
        if job in choice:
            named[job] = [_configured_name(service, r) for r in choice[job]]
    return named


def agents(
    planner: dict[str, Any] | None = None, reviewers: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "planner": planner or demo(),
        "reviewers": reviewers if reviewers is not None else [demo(), demo(), demo()],
    }


async def pending(service: Orchestra, workflow_id: str, step: str | None = None) -> Checkpoint:
    """The workflow's pending checkpoint (asserting it waits at ``step``)."""
    wf = await service.get_workflow(workflow_id)
    assert wf.status is WorkflowStatus.AWAITING_CHECKPOINT, (wf.status, wf.error)
    cp = wf.pending_checkpoint
    assert cp is not None
    if step is not None:
        assert cp.step_name == step, cp.step_name
    return cp


async def start(
    service: Orchestra,
    worker: Worker,
    *,
    prompt: str = "Add a --json flag to `orchestra list`",
    step: str | None = "plan_ready_for_review",
    **create: Any,
) -> Checkpoint:
    """Create a workflow, run it to its first checkpoint and return that checkpoint."""
    create["agents"] = use_agents(service, create.get("agents"))
    wf = await service.create_workflow(name=create.pop("name", "test"), prompt=prompt, **create)
    await worker.run_until_idle()
    return await pending(service, wf.id, step)


async def decide(
    service: Orchestra,
    worker: Worker,
    checkpoint: Checkpoint,
    action: str,
    *,
    actor: str = "ana",
    **resolution: Any,
) -> Workflow:
    """Resolve ``checkpoint`` with ``action`` (and the :class:`Decision`'s other fields
    as ``resolution``), let the worker run, return the workflow."""
    await service.resolve(checkpoint.id, Decision(action=action, **resolution), actor=actor)
    await worker.run_until_idle()
    return await service.get_workflow(checkpoint.workflow_id)


async def runs(
    service: Orchestra,
    workflow_id: str,
    *,
    job: str | None = None,
    iteration: int | None = None,
    agent: str | None = None,
) -> list[AgentRun]:
    found = (await service.history(workflow_id)).agent_runs
    return [
        r
        for r in found
        if (job is None or r.job == job)
        and (iteration is None or r.iteration == iteration)
        and (agent is None or r.agent == agent)
    ]


async def events_of(service: Orchestra, workflow_id: str, *types: EventType) -> list[Event]:
    found = (await service.history(workflow_id)).events
    return [e for e in found if not types or e.type in types]


def _dump(conn: Connection) -> Snapshot:
    out: Snapshot = {}
    for table in metadata.sorted_tables:
        order = list(table.primary_key.columns)
        out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*order))]
    return out


async def snapshot(db: Database) -> Snapshot:
    """Every row of every table, in primary-key order."""
    return await db.read(_dump)


async def max_event_id(db: Database) -> int:
    return await db.read(lambda c: c.execute(select(func.max(events.c.id))).scalar() or 0)


def assert_events_ordered(found: list[Event]) -> None:
    """Event ids strictly increase (the order they are read in) and never repeat."""
    ids = [e.id for e in found]
    assert ids == sorted(ids), ids
    assert len(set(ids)) == len(ids), ids
