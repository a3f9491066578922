"""Reads: rows to domain models, and the queries the service layer needs.

Every function here takes a ``Connection`` and only reads; writes live in the
engine (through the transition function) and in :mod:`orchestra.store.tokens`.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, bindparam, func, or_, select

from orchestra.domain.deadlines import CheckpointDeadline, DeadlinePolicy
from orchestra.domain.errors import InvalidInput, NotFound
from orchestra.domain.events import EventType
from orchestra.domain.models import (
    AgentRun,
    Checkpoint,
    Event,
    InboxCount,
    Page,
    Resolution,
    Workflow,
)
from orchestra.domain.statuses import CheckpointStatus, SnoozedView, WorkflowStatus
from orchestra.store._fast import fetch_all
from orchestra.store.schema import agent_runs, checkpoints, events, workflows

RowMap = Mapping[str, Any]
PENDING = CheckpointStatus.PENDING.value


def to_resolution(row: RowMap) -> Resolution:
    """The resolution columns of a checkpoint row (or the values a resolution writes)."""
    return Resolution(**{name: row[name] for name in Resolution.model_fields})


def to_checkpoint(row: RowMap) -> Checkpoint:
    resolution = to_resolution(row) if row["resolved_at"] is not None else None
    due_at, stored = row.get("due_at"), row.get("deadline")
    deadline = (
        CheckpointDeadline(due_at=due_at, fired_at=row.get("deadline_fired_at"), **stored)
        if due_at is not None and stored
        else None
    )
    return Checkpoint(
        id=row["id"],
        workflow_id=row["workflow_id"],
        number=row["number"],
        iteration=row["iteration"],
        step_name=row["step_name"],
        status=CheckpointStatus(row["status"]),
        resolution=resolution,
        created_at=row["created_at"],
        due_at=due_at,
        deadline=deadline,
        snoozed_until=row.get("snoozed_until"),
        snoozed_by=row.get("snoozed_by"),
        **row["body"],
    )


def to_workflow(row: RowMap, pending: Checkpoint | None = None) -> Workflow:
    return Workflow(
        id=row["id"],
        name=row["name"],
        type=row["type"],
        status=WorkflowStatus(row["status"]),
        current_step=row["current_step"],
        iteration=row["iteration"],
        max_iterations=row["max_iterations"],
        prompt=row["prompt"],
        workspace_path=row["workspace_path"],
        agents=row["agents"],
        deadline=DeadlinePolicy.model_validate(row["deadline"]) if row["deadline"] else None,
        result=row["result"],
        error=row["error"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        pending_checkpoint=pending,
    )


def to_agent_run(row: RowMap) -> AgentRun:
    return AgentRun.model_validate(dict(row))


def to_event(row: RowMap) -> Event:
    # Rows the database typed already (SQLAlchemy's conversions): no validation pass;
    # every live stream reads the log through this.
    return Event.model_construct(
        id=row["id"],
        workflow_id=row["workflow_id"],
        type=EventType(row["type"]),
        data=row["data"],
        created_at=row["created_at"],
    )


def exists(conn: Connection, stmt: Select[Any], params: RowMap) -> bool:
    """Whether a prebuilt SELECT finds a row (on the store's fast path)."""
    return bool(fetch_all(conn, stmt, params))


def _m(row: Row[Any]) -> RowMap:
    return dict(row._mapping)


# -- workflows -------------------------------------------------------------


def get_workflow(conn: Connection, workflow_id: str) -> Workflow:
    row = conn.execute(select(workflows).where(workflows.c.id == workflow_id)).first()
    if row is None:
        raise NotFound(f"no workflow with id {workflow_id!r}")
    pending = None
    if row.status == WorkflowStatus.AWAITING_CHECKPOINT:
        cp = conn.execute(
            select(checkpoints).where(
                checkpoints.c.workflow_id == workflow_id,
                checkpoints.c.status == CheckpointStatus.PENDING,
            )
        ).first()
        pending = to_checkpoint(_m(cp)) if cp is not None else None
    return to_workflow(_m(row), pending)


def encode_cursor(*parts: Any) -> str:
    raw = "|".join(p.isoformat() if isinstance(p, datetime) else str(p) for p in parts)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


#: Longer than any cursor this module makes (a timestamp and an id, in base64).
MAX_CURSOR = 256


def decode_cursor(cursor: str, n: int) -> list[str]:
    if len(cursor) > MAX_CURSOR:
        raise InvalidInput("invalid cursor; pass the next_cursor of a previous page")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = raw.split("|")
    except (ValueError, UnicodeDecodeError):
        parts = []
    if len(parts) != n:
        raise InvalidInput("invalid cursor; pass the next_cursor of a previous page")
    return parts


def _position(cursor: str) -> tuple[datetime, str]:
    created_raw, ident = decode_cursor(cursor, 2)
    try:
        created = datetime.fromisoformat(created_raw)
    except ValueError:
        created = None
    if created is None or created.tzinfo is None:
        raise InvalidInput("invalid cursor; pass the next_cursor of a previous page")
    return created, ident


def _beyond(table: Any, cursor: str, later: bool) -> Any:
    """Rows after (``later``) or before the cursor's position in (created_at, id) order.

    The bare ``created_at`` bound lets the index on ``(…, created_at)`` start at the
    cursor instead of filtering every row before it."""
    created, ident = _position(cursor)
    at, key = table.c.created_at, table.c.id
    if later:
        return and_(at >= created, or_(at > created, and_(at == created, key > ident)))
    return and_(at <= created, or_(at < created, and_(at == created, key < ident)))


def _ordered(q: Any, table: Any, ascending: bool) -> Any:
    if ascending:
        return q.order_by(table.c.created_at, table.c.id)
    return q.order_by(table.c.created_at.desc(), table.c.id.desc())


def _page(
    conn: Connection,
    q: Any,
    table: Any,
    cursor: str | None,
    limit: int,
    *,
    newest_first: bool,
    before: str | None = None,
) -> tuple[list[RowMap], str | None, str | None]:
    """One page of rows in (created_at, id) order, with the cursors of the next page
    (``cursor=``) and of the page before it (``before=``).

    A page read backwards that reaches the start is the first page itself, so going
    back always lands on the pages that going forward showed."""
    if cursor is not None and before is not None:
        raise InvalidInput("pass cursor or before, not both", details={"field": "before"})
    if before is not None:
        back = q.where(_beyond(table, before, later=newest_first))
        rows = [_m(r) for r in conn.execute(_ordered(back, table, newest_first).limit(limit + 1))]
        if len(rows) > limit:
            rows = rows[:limit][::-1]
            return rows, _cursor_of(rows[-1]), _cursor_of(rows[0])
        cursor = None  # back at the start
    if cursor is not None:
        q = q.where(_beyond(table, cursor, later=not newest_first))
    rows = [_m(r) for r in conn.execute(_ordered(q, table, not newest_first).limit(limit + 1))]
    previous = _cursor_of(rows[0]) if cursor is not None and rows else None
    if len(rows) <= limit:
        return rows, None, previous
    return rows[:limit], _cursor_of(rows[limit - 1]), previous


def _cursor_of(row: RowMap) -> str:
    return encode_cursor(row["created_at"], row["id"])


def list_workflows(
    conn: Connection,
    *,
    statuses: Sequence[WorkflowStatus] | None = None,
    limit: int = 50,
    cursor: str | None = None,
    before: str | None = None,
) -> Page[Workflow]:
    """Newest first."""
    q = select(workflows)
    if statuses:
        q = q.where(workflows.c.status.in_([s.value for s in statuses]))
    items, nxt, prev = _page(conn, q, workflows, cursor, limit, newest_first=True, before=before)
    return Page[Workflow](items=[to_workflow(r) for r in items], next_cursor=nxt, prev_cursor=prev)


def workflow_names(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    """The names of the workflows ``ids`` (a page's worth), by id."""
    if not ids:
        return {}
    query = select(workflows.c.id, workflows.c.name).where(workflows.c.id.in_(set(ids)))
    return {row.id: row.name for row in conn.execute(query)}


# -- checkpoints -----------------------------------------------------------


def get_checkpoint(conn: Connection, checkpoint_id: str) -> Checkpoint:
    row = conn.execute(select(checkpoints).where(checkpoints.c.id == checkpoint_id)).first()
    if row is None:
        raise NotFound(f"no checkpoint with id {checkpoint_id!r}")
    return to_checkpoint(_m(row))


def list_checkpoints(
    conn: Connection,
    *,
    status: CheckpointStatus | None = CheckpointStatus.PENDING,
    workflow_id: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
    workflow_prefix: str | None = None,
    step: str | None = None,
    created_before: datetime | None = None,
    before: str | None = None,
    snoozed: SnoozedView = SnoozedView.INCLUDE,
    now: datetime | None = None,
) -> Page[Checkpoint]:
    """Oldest first: the inbox answers the longest-waiting decision first. Every
    filter is a condition of the query (``workflow_prefix``: lowercase hex, checked
    by the caller; ``snoozed``: as of ``now``). ``cursor`` pages on, ``before`` back."""
    q = select(checkpoints)
    if status is not None:
        q = q.where(checkpoints.c.status == status)
    if workflow_id is not None:
        q = q.where(checkpoints.c.workflow_id == workflow_id)
    if workflow_prefix is not None:
        q = q.where(*_prefix_range(checkpoints.c.workflow_id, workflow_prefix))
    if step is not None:
        q = q.where(checkpoints.c.step_name == step)
    if created_before is not None:
        q = q.where(checkpoints.c.created_at < created_before)
    if snoozed is not SnoozedView.INCLUDE:
        q = q.where(_snoozed_condition(snoozed, now or datetime.now(UTC)))
    items, nxt, prev = _page(conn, q, checkpoints, cursor, limit, newest_first=False, before=before)
    return Page[Checkpoint](
        items=[to_checkpoint(r) for r in items], next_cursor=nxt, prev_cursor=prev
    )


def pending_by_workflow(
    conn: Connection, workflow_ids: Sequence[str], now: datetime
) -> dict[str, int]:
    """How many pending checkpoints not snoozed at ``now`` each of ``workflow_ids`` (a
    page's worth) has.

    Read through the workflows' own checkpoints (a handful each) and counted here: with
    a condition on status, SQLite walks the status index over every pending one."""
    if not workflow_ids:
        return {}
    query = select(
        checkpoints.c.workflow_id, checkpoints.c.status, checkpoints.c.snoozed_until
    ).where(checkpoints.c.workflow_id.in_(set(workflow_ids)))
    found = Counter(
        row.workflow_id
        for row in conn.execute(query)
        if row.status == PENDING and (row.snoozed_until is None or row.snoozed_until <= now)
    )
    return dict(found)


def _snoozed_condition(view: SnoozedView, now: datetime) -> Any:
    """Pending and snoozed past ``now`` (``ONLY``), or not that (``HIDE``): a snooze
    whose time has passed hides nothing, so it "comes back" without any job."""
    snoozed = and_(
        checkpoints.c.status == CheckpointStatus.PENDING,
        checkpoints.c.snoozed_until.is_not(None),
        checkpoints.c.snoozed_until > now,
    )
    if view is SnoozedView.ONLY:
        return snoozed
    return or_(
        checkpoints.c.status != CheckpointStatus.PENDING,
        checkpoints.c.snoozed_until.is_(None),
        checkpoints.c.snoozed_until <= now,
    )


def count_inbox(conn: Connection, now: datetime, cap: int) -> InboxCount:
    """Pending checkpoints not snoozed and snoozed as of ``now`` (each counted no
    further than ``cap + 1``), and the next wake-up."""
    pending = checkpoints.c.status == CheckpointStatus.PENDING

    def capped(*where: Any) -> int:
        # Only indexed columns, and no further than the cap: the index, not the rows.
        some = select(checkpoints.c.status).where(*where).limit(cap + 1)
        return int(conn.execute(select(func.count()).select_from(some.subquery())).scalar_one())

    snoozed_now = _snoozed_condition(SnoozedView.ONLY, now)
    wake = conn.execute(select(func.min(checkpoints.c.snoozed_until)).where(snoozed_now)).scalar()
    return InboxCount(
        pending=capped(pending, _snoozed_condition(SnoozedView.HIDE, now)),
        snoozed=capped(snoozed_now),
        next_wake_at=wake,
        capped_at=cap,
    )


def checkpoints_of(conn: Connection, workflow_id: str) -> list[Checkpoint]:
    q = select(checkpoints).where(checkpoints.c.workflow_id == workflow_id)
    return [to_checkpoint(_m(r)) for r in conn.execute(q.order_by(checkpoints.c.number))]


# -- agent runs and events -------------------------------------------------


def agent_runs_of(conn: Connection, workflow_id: str) -> list[AgentRun]:
    q = select(agent_runs).where(agent_runs.c.workflow_id == workflow_id)
    q = q.order_by(
        agent_runs.c.started_at, agent_runs.c.step_index, agent_runs.c.agent, agent_runs.c.attempt
    )
    return [to_agent_run(_m(r)) for r in conn.execute(q)]


def last_event_id(conn: Connection) -> int:
    """The newest event's id (0 when there is none): where a live view starts."""
    return int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())


_EVENTS_AFTER = (
    select(events)
    .where(events.c.id > bindparam("after"))
    .order_by(events.c.id)
    .limit(bindparam("limit"))
)
_WORKFLOW_EVENTS_AFTER = (
    select(events)
    .where(events.c.workflow_id == bindparam("wid"), events.c.id > bindparam("after"))
    .order_by(events.c.id)
    .limit(bindparam("limit"))
)


def events_after(
    conn: Connection, *, workflow_id: str | None = None, after: int = 0, limit: int = 500
) -> list[Event]:
    """Events with id > ``after`` as the snapshot sees them (live views read through
    :mod:`orchestra.store.settled`, which never passes an id still to commit).

    Every live stream tails the log through this, so it runs prebuilt statements."""
    if workflow_id is None:
        rows = fetch_all(conn, _EVENTS_AFTER, {"after": after, "limit": limit})
    else:
        params = {"wid": workflow_id, "after": after, "limit": limit}
        rows = fetch_all(conn, _WORKFLOW_EVENTS_AFTER, params)
    return [to_event(r) for r in rows]


def workflows_in_workspace(conn: Connection, workspace: str, type_: str) -> list[tuple[str, str]]:
    """``(id, status)`` of the workflows of ``type_`` in ``workspace``."""
    query = select(workflows.c.id, workflows.c.status).where(
        workflows.c.workspace_path == workspace, workflows.c.type == type_
    )
    return [(row.id, row.status) for row in conn.execute(query)]


#: Tables whose ids a person may abbreviate to a unique prefix.
_BY_KIND = {"workflow": workflows, "checkpoint": checkpoints}


def ids_with_prefix(conn: Connection, kind: str, prefix: str, limit: int) -> list[str]:
    """Up to ``limit`` ids of ``kind`` (``workflow``, ``checkpoint``) starting with
    ``prefix`` (lowercase hex, checked by the caller), in order."""
    table = _BY_KIND[kind]
    query = (
        select(table.c.id)
        .where(*_prefix_range(table.c.id, prefix))
        .order_by(table.c.id)
        .limit(limit)
    )
    return [row.id for row in conn.execute(query)]


def _prefix_range(column: Any, prefix: str) -> tuple[Any, ...]:
    """Ids in ``column`` that start with ``prefix`` (lowercase hex): the range lets
    the column's index find them; LIKE keeps it exact whatever the collation."""
    return (column >= prefix, column < prefix + "g", column.like(prefix + "%"))
