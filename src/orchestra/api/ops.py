"""Operations endpoints: ``/health`` for load balancers, ``/metrics`` for Prometheus,
``/openapi.json`` for API clients (behind the API's auth; no interactive docs).

Counts (workflows by status, pending checkpoints) are read from the database
at scrape time, so they are true whichever process did the work. Timings
(checkpoint wait, agent run durations and failures, step latency) are derived
from the event log as the hub reads it: they cover every process writing to
the database since this server started. With several servers on one database,
scrape one of them (each sees the same log).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel
from sqlalchemy import Connection, func, select

import orchestra
from orchestra.api.auth import Principal, require, runtime_of
from orchestra.api.errors import error_responses
from orchestra.api.hub import EventHub
from orchestra.domain.events import EventType
from orchestra.domain.models import Event
from orchestra.domain.roles import Permission
from orchestra.domain.statuses import (
    TERMINAL_WORKFLOW_STATUSES,
    AgentRunStatus,
    CheckpointStatus,
    WorkflowStatus,
)
from orchestra.store.schema import checkpoints, workflows

router = APIRouter(tags=["operations"])

#: Bound on the in-memory "started at" maps (only a cache of the log).
MAX_TRACKED = 100_000


class DatabaseHealth(BaseModel):
    kind: str
    ok: bool


class Health(BaseModel):
    status: str
    version: str
    database: DatabaseHealth


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> Any:
    db = runtime_of(request).db
    ok = await db.ping()
    body = Health(
        status="ok" if ok else "unavailable",
        version=orchestra.__version__,
        database=DatabaseHealth(kind=db.kind, ok=ok),
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/openapi.json", include_in_schema=False)
async def openapi_schema(
    request: Request, _: Annotated[Principal, Depends(require(Permission.READ))]
) -> JSONResponse:
    """The OpenAPI schema, for whoever may read the API (it maps every route and field)."""
    return JSONResponse(request.app.openapi())


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **error_responses(401, 403, 503),
    },
)
async def metrics(
    request: Request, _: Annotated[Principal, Depends(require(Permission.READ))]
) -> Response:
    m: Metrics = request.app.state.metrics
    await m.refresh_counts()
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


class Metrics:
    """One registry per app (so several apps in one process do not collide)."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        r = self.registry = CollectorRegistry()
        self.workflows = Gauge("orchestra_workflows", "Workflows by status", ["status"], registry=r)
        self.pending_checkpoints = Gauge(
            "orchestra_pending_checkpoints", "Checkpoints waiting for a person", registry=r
        )
        self.checkpoint_wait = Histogram(
            "orchestra_checkpoint_wait_seconds",
            "From a checkpoint's creation to its resolution",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf")),
            registry=r,
        )
        self.agent_run_duration = Histogram(
            "orchestra_agent_run_duration_seconds",
            "Agent runs from start to their outcome",
            ["adapter", "agent_job", "status"],
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, float("inf")),
            registry=r,
        )
        self.agent_run_failures = Counter(
            "orchestra_agent_run_failures",
            "Agent runs that failed",
            ["adapter", "agent_job", "reason"],
            registry=r,
        )
        self.step_latency = Histogram(
            "orchestra_step_duration_seconds",
            "Time a workflow spent in a step (checkpoint steps include the wait)",
            ["step"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 3600, float("inf")),
            registry=r,
        )
        subscribers = Gauge(
            "orchestra_event_stream_subscribers", "Open SSE and WebSocket streams", registry=r
        )
        subscribers.set_function(lambda: hub.subscribers)
        self._checkpoint_created: dict[str, datetime] = {}
        self._runs: dict[str, tuple[datetime, str, str]] = {}
        self._steps: dict[str, tuple[str, datetime]] = {}
        hub.observe(self.observe)

    async def refresh_counts(self) -> None:
        def read(conn: Connection) -> tuple[dict[str, int], int]:
            by_status: dict[str, int] = dict(
                conn.execute(
                    select(workflows.c.status, func.count()).group_by(workflows.c.status)
                ).all()
            )
            pending = conn.execute(
                select(func.count()).where(checkpoints.c.status == CheckpointStatus.PENDING)
            ).scalar_one()
            return by_status, int(pending)

        by_status, pending = await self.hub.db.read(read)
        for status in WorkflowStatus:
            self.workflows.labels(status=status.value).set(by_status.get(status.value, 0))
        self.pending_checkpoints.set(pending)

    def observe(self, batch: list[Event]) -> None:
        """Turn log rows into timings (called by the hub for each new batch)."""
        for tracked in (self._checkpoint_created, self._runs, self._steps):
            if len(tracked) > MAX_TRACKED:
                tracked.clear()
        for e in batch:
            data = e.data
            if e.type is EventType.CHECKPOINT_CREATED:
                self._checkpoint_created[str(data.get("checkpoint_id"))] = e.created_at
            elif e.type is EventType.CHECKPOINT_STATUS_CHANGED:
                created = self._checkpoint_created.pop(str(data.get("id")), None)
                if created is not None and data.get("to") != CheckpointStatus.SUPERSEDED:
                    self.checkpoint_wait.observe(_seconds(created, e.created_at))
            elif e.type is EventType.AGENT_RUN_STARTED:
                self._runs[str(data.get("agent_run_id"))] = (
                    e.created_at,
                    str(data.get("adapter")),
                    # ``job`` (``role`` in events written before migration 0006 renamed it)
                    str(data.get("job", data.get("role"))),
                )
            elif e.type is EventType.AGENT_RUN_STATUS_CHANGED:
                self._run_changed(e)
            if e.type is EventType.STEP_STARTED or (
                e.type is EventType.WORKFLOW_STATUS_CHANGED
                and data.get("to") in TERMINAL_WORKFLOW_STATUSES
            ):
                self._step_changed(e)

    def _run_changed(self, e: Event) -> None:
        started = self._runs.pop(str(e.data.get("id")), None)
        if started is None or e.data.get("from") != AgentRunStatus.RUNNING:
            return
        at, adapter, job = started
        status = str(e.data.get("to"))
        self.agent_run_duration.labels(adapter, job, status).observe(_seconds(at, e.created_at))
        if status == AgentRunStatus.FAILED:
            reason = str(e.data.get("reason") or "unknown")
            self.agent_run_failures.labels(adapter, job, reason).inc()

    def _step_changed(self, e: Event) -> None:
        if e.workflow_id is None:
            return
        previous = self._steps.pop(e.workflow_id, None)
        if previous is not None:
            step, at = previous
            self.step_latency.labels(step).observe(_seconds(at, e.created_at))
        if e.type is EventType.STEP_STARTED:
            self._steps[e.workflow_id] = (str(e.data.get("step")), e.created_at)


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())
