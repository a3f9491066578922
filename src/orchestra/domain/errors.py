"""The domain's exceptions. Each carries a stable ``code``; the API maps codes to
HTTP statuses in one place (:mod:`orchestra.api.errors`)."""

from __future__ import annotations

from typing import Any


class OrchestraError(Exception):
    """Base of every error Orchestra raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(OrchestraError):
    code = "not_found"


class InvalidInput(OrchestraError):
    """Bad input from a person or a client: nothing was written."""

    code = "invalid_input"


class Conflict(OrchestraError):
    """The change is not allowed in the current state (e.g. already resolved)."""

    code = "conflict"


class TransitionNotAllowed(Conflict):
    code = "transition_not_allowed"


class LimitReached(OrchestraError):
    """A configured cap is reached (e.g. open live streams): try again later; nothing
    was changed."""

    code = "limit_reached"


class LeaseLost(OrchestraError):
    """A worker tried to write for a workflow it no longer owns; nothing was written."""

    code = "lease_lost"


class DatabaseUnavailable(OrchestraError):
    code = "database_unavailable"
