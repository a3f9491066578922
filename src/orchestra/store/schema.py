"""The schema, defined once (SQLAlchemy Core). Migrations must produce exactly this;
``tests/integration/test_migrations.py`` diffs a migrated database against it.

Status columns carry CHECK constraints derived from the domain enums, so the
database refuses a status the domain does not know.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import DateTime, TypeDecorator

from orchestra.domain.events import EventType, NotificationKind
from orchestra.domain.statuses import (
    AgentRunStatus,
    CheckpointStatus,
    NotificationStatus,
    WorkflowStatus,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both databases (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def one_of(column: str, enum: type[StrEnum]) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({values})", name=f"{column}_valid")


#: The condition of the one-pending-checkpoint-per-workflow index.
PENDING_ONLY = text(f"status = '{CheckpointStatus.PENDING.value}'")

workflows = Table(
    "workflows",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", Text, nullable=False),
    Column("type", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("current_step", String(64)),
    #: How many steps this workflow has entered; identifies one visit of a step.
    Column("step_index", Integer, nullable=False, server_default="0"),
    Column("iteration", Integer, nullable=False, server_default="1"),
    Column("max_iterations", Integer, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("workspace_path", Text),
    Column("agents", Json, nullable=False),
    #: The workflow definition's own state (plans, reviews, prompts…).
    Column("state", Json, nullable=False),
    Column("result", Json),
    Column("error", Text),
    #: Engine-owned: agents a retry runs again although their last attempt failed,
    #: mapped to a timeout override or null (``"*"``: every failed agent).
    Column("retry", Json),
    #: Its deadline policy (:class:`~orchestra.domain.deadlines.DeadlinePolicy`), fixed
    #: at its start; null: none of its checkpoints is due.
    Column("deadline", Json),
    Column("lease_owner", String(128)),
    Column("lease_token", String(32)),
    Column("lease_expires_at", UTCDateTime),
    Column("created_by", String(128)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    one_of("status", WorkflowStatus),
    Index("ix_workflows_status_created", "status", "created_at"),
    Index("ix_workflows_created", "created_at", "id"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow_id", String(32), ForeignKey("workflows.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("step_name", String(64), nullable=False),
    #: Title, instructions, agent outputs, editable content, actions, context…
    Column("body", Json, nullable=False),
    Column("status", String(32), nullable=False),
    Column("action", String(64)),
    Column("edited_content", Text),
    Column("notes", Text),
    Column("inputs", Json),
    #: Line comments given with the resolution (code review), as a JSON list.
    Column("comments", Json),
    Column("resolved_by", String(128)),
    Column("resolved_at", UTCDateTime),
    #: Deadlines: when the decision is due, and what happens then (``deadline``:
    #: ``{"action": name or null, "escalate": [target…]}``); fired at most once.
    Column("due_at", UTCDateTime),
    Column("deadline", Json),
    Column("deadline_fired_at", UTCDateTime),
    #: "Not now": hidden from the inbox until this time, without deciding.
    Column("snoozed_until", UTCDateTime),
    Column("snoozed_by", String(128)),
    Column("idempotency_key", String(200)),
    Column("created_at", UTCDateTime, nullable=False),
    one_of("status", CheckpointStatus),
    # Never two checkpoints for one visit of a step (step_index encodes the iteration).
    UniqueConstraint("workflow_id", "step_index"),
    UniqueConstraint("workflow_id", "number"),
    # At most one pending checkpoint per workflow, enforced by the database.
    Index(
        "uq_checkpoints_one_pending",
        "workflow_id",
        unique=True,
        sqlite_where=PENDING_ONLY,
        postgresql_where=PENDING_ONLY,
    ),
    Index("ix_checkpoints_status_created", "status", "created_at"),
    Index("ix_checkpoints_status_due_at", "status", "due_at"),
    Index("ix_checkpoints_status_snoozed_until", "status", "snoozed_until"),
)

agent_runs = Table(
    "agent_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow_id", String(32), ForeignKey("workflows.id"), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("step_name", String(64), nullable=False),
    Column("iteration", Integer, nullable=False),
    #: The agent's key within the step, e.g. ``planner`` or ``reviewer-2``.
    Column("agent", String(64), nullable=False),
    #: The agent's job (``planner``, ``reviewer``); a person's permission is a ``role``.
    Column("job", String(32), nullable=False),
    Column("adapter", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("output", Text),
    Column("structured", Json),
    Column("error", Text),
    Column("stderr_tail", Text),
    Column("tokens_in", Integer),
    Column("tokens_out", Integer),
    Column("cost_usd", Float),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("duration_ms", Integer),
    #: What else the agent reported: session id, turns, model, stop reason…
    Column("meta", Json),
    one_of("status", AgentRunStatus),
    UniqueConstraint("workflow_id", "step_index", "agent", "attempt"),
)

events = Table(
    "events",
    metadata,
    # Ids may become visible out of order on PostgreSQL: readers take the settled
    # part of the log (store.settled), so a cursor never skips.
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("workflow_id", String(32), ForeignKey("workflows.id")),
    Column("type", String(64), nullable=False),
    Column("data", Json, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    one_of("type", EventType),
    Index("ix_events_workflow_id", "workflow_id", "id"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    #: sha256 of the token; the token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    #: sha256 of the session secret; the secret lives only in the browser's cookie.
    Column("id", String(64), primary_key=True),
    Column("token_id", String(32), ForeignKey("api_tokens.id"), nullable=False),
    #: What the session's forms and script send back (X-CSRF-Token / the csrf field).
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    #: Set by logout (ended and expired rows are swept at the next login).
    Column("ended_at", UTCDateTime),
    Index("ix_web_sessions_token_id", "token_id"),
)

#: The notification outbox: an event queued once per target (whatever crashes:
#: the unique constraint), delivered after the commit that made it, retried with
#: backoff. ``next_attempt_at`` doubles as the claim's lease while a POST is out.
notifications = Table(
    "notifications",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("target", String(64), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text),
    Column("last_status_code", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    one_of("status", NotificationStatus),
    one_of("kind", NotificationKind),
    UniqueConstraint("target", "event_id"),
    Index("ix_notifications_status_next", "status", "next_attempt_at"),
    Index("ix_notifications_created", "created_at"),
)

#: Each delivery attempt of a notification, for admins to see why one failed.
notification_attempts = Table(
    "notification_attempts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("notification_id", String(32), ForeignKey("notifications.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_ms", Integer),
    Column("status_code", Integer),
    Column("error", Text),
    UniqueConstraint("notification_id", "attempt"),
)

#: Signed links sent in notifications: single-use and expiring; opening one (after
#: a normal login) only shows the checkpoint's page, it never decides.
decision_links = Table(
    "decision_links",
    metadata,
    #: sha256 of the link's secret part; the secret lives only in the link.
    Column("id", String(64), primary_key=True),
    Column("checkpoint_id", String(32), ForeignKey("checkpoints.id"), nullable=False),
    Column("target", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("used_by", String(128)),
    Index("ix_decision_links_checkpoint_id", "checkpoint_id"),
)

#: How far the outbox has read the event log (one row, ``name = 'log'``): a restart
#: goes on from here, and a first start begins at the log's end (no history is sent).
notification_cursor = Table(
    "notification_cursor",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("event_id", BigInteger, nullable=False),
)
