"""Deadlines: when a checkpoint's decision is due and what happens when it is not made.

Two sources give a checkpoint a due time: the operator's ``[deadlines.<step>]``
tables (a duration, the notify targets to escalate to, optionally a default
action) and the person starting a workflow (``deadline``: a duration and the
opt-in to a default action). When the time passes, the checkpoint's escalation
targets are notified; only when the workflow opted in is a default action taken,
through the same resolution as a person's, recorded as :data:`DEADLINE_ACTOR`.
Without an opt-in nothing moves on its own.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from orchestra.domain import durations
from orchestra.domain.errors import InvalidInput

#: Who a default action taken at a deadline is recorded as.
DEADLINE_ACTOR = "orchestra (deadline)"
#: The shortest and the longest due time, in seconds.
MIN_DEADLINE_S = 1.0
MAX_DEADLINE_S = 366 * 86_400.0
#: A duration as given: seconds, or a text such as "4h" (the schema says both).
Duration = Annotated[
    float,
    WithJsonSchema(
        {
            "anyOf": [{"type": "number"}, {"type": "string", "examples": ["90s", "4h", "1h30m"]}],
            "description": "seconds, or a duration such as 90s, 30m, 4h, 2d, 1h30m",
        }
    ),
]
#: An action's name as the definitions spell them.
_ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def parse_duration(value: Any) -> float:
    """Seconds from a number of seconds or a duration text (``"4h"``, ``"1h30m"``,
    :mod:`orchestra.domain.durations`); ValueError saying what is accepted otherwise."""
    bounds = {
        "minimum": timedelta(seconds=MIN_DEADLINE_S),
        "maximum": timedelta(seconds=MAX_DEADLINE_S),
    }
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not (math.isfinite(seconds) and MIN_DEADLINE_S <= seconds <= MAX_DEADLINE_S):
            raise ValueError(
                f"a deadline must be between {MIN_DEADLINE_S:g} second and "
                f"{MAX_DEADLINE_S / 86_400:g} days (got {str(value)[:40]!r})"
            )
        return seconds
    try:
        return durations.parse_duration(value, field="deadline", **bounds).total_seconds()
    except InvalidInput as exc:
        raise ValueError(f"{exc.message}; or give seconds (a number)") from None


def check_action_name(name: str) -> str:
    if not _ACTION_NAME.fullmatch(name):
        raise ValueError(f"{name[:70]!r} is not an action name (lowercase letters, digits, _)")
    return name


class StepDeadline(BaseModel):
    """One ``[deadlines.<step>]`` table of ``orchestra.toml`` (the operator's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: How long after the checkpoint is created the decision is due.
    after: Duration
    #: ``[[notify]]`` targets told when it passes (checked against them at load).
    escalate: list[str] = Field(default_factory=list, max_length=20)
    #: The action taken when it passes: only for workflows that opted in.
    action: str | None = None

    @field_validator("after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("action")
    @classmethod
    def _action(cls, value: str | None) -> str | None:
        return None if value is None else check_action_name(value)


class DeadlineRequest(BaseModel):
    """A workflow's own deadline, as the person starting it gives it: a due time for
    each of its checkpoints, and the opt-in to a default action there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Seconds or a duration text; None: the configured per-step due times only.
    after: Duration | None = None
    #: The action taken at a checkpoint whose due time passed undecided (when that
    #: checkpoint offers it). None: nothing moves on its own, escalation only.
    default_action: str | None = None

    @field_validator("after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("default_action")
    @classmethod
    def _action(cls, value: str | None) -> str | None:
        return None if value is None else check_action_name(value)


class CheckpointDeadline(BaseModel):
    """A checkpoint's deadline, as its contract carries it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    due_at: datetime
    after_s: float
    #: The action taken when it passes (None: escalation only).
    action: str | None = None
    #: Targets notified when it passes.
    escalate: list[str] = Field(default_factory=list)
    #: Why no action will be taken, when a default action was asked for.
    reason: str | None = None
    #: When it passed and was acted on (once).
    fired_at: datetime | None = None

    def consequence(self) -> str:
        """What happens at the due time, in words (the page, the CLI)."""
        parts = []
        if self.escalate:
            parts.append("escalate to " + ", ".join(self.escalate))
        if self.action:
            parts.append(f"default action {self.action!r} by {DEADLINE_ACTOR}")
        return "; ".join(parts) or "marked overdue (nothing is decided on its own)"


class DeadlinePolicy(BaseModel):
    """A workflow's deadlines as it recorded them at its start (``workflows.deadline``):
    its own request and the operator's per-step tables of its checkpoint steps, as they
    were then, so every worker computes the same due times."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The workflow's own due time for each checkpoint (None: the steps' only).
    after_s: float | None = None
    #: The opt-in to a default action (None: escalation only).
    default_action: str | None = None
    #: The operator's ``[deadlines.<step>]`` tables of its checkpoint steps.
    steps: dict[str, StepDeadline] = Field(default_factory=dict)


def deadline_policy(
    request: DeadlineRequest | None, steps: dict[str, StepDeadline]
) -> DeadlinePolicy | None:
    """What a new workflow records of its deadlines (None: it has none)."""
    if request is None and not steps:
        return None
    return DeadlinePolicy(
        after_s=request.after if request else None,
        default_action=request.default_action if request else None,
        steps=steps,
    )


def checkpoint_deadline(
    policy: DeadlinePolicy | None, step: str, offered: list[str]
) -> dict[str, Any] | None:
    """The stored deadline of a new checkpoint at ``step`` offering ``offered``:
    ``{after_s, action, escalate, reason}``; None when nothing gives it a due time.

    The due time is the workflow's own, else the step's configured one. The action
    is the workflow's default action where offered, else the step's configured
    action where offered — and only when the workflow opted in."""
    if policy is None:
        return None
    conf = policy.steps.get(step)
    after = policy.after_s or (conf.after if conf else None)
    if after is None:
        return None
    wanted = policy.default_action
    configured = conf.action if conf else None
    action, reason = None, None
    if wanted is not None:
        candidates = [wanted, configured]
        action = next((a for a in candidates if a is not None and a in offered), None)
        if action is None:
            reason = (
                f"default action {wanted!r} is not offered at this checkpoint "
                f"(it offers: {', '.join(offered)}); escalation only"
            )
    elif configured:
        reason = (
            f"the configured default action {configured!r} applies only to workflows "
            "that opt in; escalation only"
        )
    return {
        "after_s": float(after),
        "action": action,
        "escalate": list(conf.escalate) if conf else [],
        "reason": reason,
    }
