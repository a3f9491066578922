"""The agent adapter protocol: the only door between the engine and an agent.

An adapter turns a prompt into content. It never touches the database: the
engine records runs, progress and failures. Built-in adapters are registered
through the same entry-point group a third-party adapter uses
(``orchestra.adapters``), see :mod:`orchestra.agents.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

JSON = dict[str, Any]

#: Called by an adapter for each piece of progress: ``(kind, text)``, where
#: kind is e.g. ``"text"``, ``"tool"``, ``"command"``, ``"status"``. It must not
#: block; the engine throttles and persists what it receives.
ProgressSink = Callable[[str, str], None]


@dataclass(frozen=True)
class AgentRequest:
    """What an agent is asked to do, in which directory, within which time."""

    prompt: str
    #: The agent's job in the workflow (``planner``, ``reviewer``).
    job: str
    timeout_s: float
    workspace: Path | None = None
    #: JSON schema of the structured answer wanted (reviews), when any.
    output_schema: JSON | None = None
    #: The agent's own session to continue (its previous run's ``session_id``), for
    #: an agent configured with ``resume = true`` whose CLI can resume one.
    resume_session: str | None = None


@dataclass
class AgentResult:
    """What an agent produced. Numbers are ``None`` when the agent does not say."""

    content: str
    structured: JSON | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    duration_ms: int | None = None
    session_id: str | None = None
    meta: JSON = field(default_factory=dict)


class AgentFailure(Exception):
    """An agent could not produce content; becomes an ``agent_problem`` checkpoint.

    ``reason`` is a short machine-readable word (``timeout``, ``exit_code``,
    ``agent_error``, ``not_installed``, ``http_error``, ``bad_output``);
    ``message`` says what happened in words a person can act on.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        stderr_tail: str = "",
        retryable: bool = True,
        meta: JSON | None = None,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.stderr_tail = stderr_tail
        self.retryable = retryable
        self.meta = meta or {}


@dataclass(frozen=True)
class AgentCheck:
    """Whether an adapter's program or endpoint is reachable (``orchestra agents``)."""

    ok: bool
    detail: str


@runtime_checkable
class Adapter(Protocol):
    """An agent implementation. Constructed with its options by the registry."""

    name: str

    async def run(self, request: AgentRequest, progress: ProgressSink) -> AgentResult:
        """Run the agent to completion; raise :class:`AgentFailure` on failure.

        Cancellation (``asyncio.CancelledError``) must stop the agent, including
        any process it started, before propagating.
        """
        ...

    async def check(self) -> AgentCheck:
        """Report whether the agent can be reached, without running a prompt."""
        ...


#: How an adapter is built from the options of an agent entry.
AdapterFactory = Callable[[Mapping[str, Any]], Adapter]
