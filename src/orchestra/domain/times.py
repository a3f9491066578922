"""Durations and moments as people type them ("2h", "30m", "1d", an ISO 8601 time):
one parser for the API, the CLI and the web pages, so each says the same thing
about a bad one (no I/O)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from orchestra.domain.errors import InvalidInput

#: ``90s``, ``30m``, ``2h``, ``1d``, ``1w``, or several together (``1h30m``).
_PART = re.compile(r"(\d{1,6})\s*([smhdw])")
_DURATION = re.compile(r"(?:\d{1,6}\s*[smhdw]\s*)+")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: The longest text either parser reads (an ISO time with its offset is ~32).
MAX_TEXT = 40
#: The longest duration either parser takes (far beyond any bound of its callers,
#: short of what a date can hold).
MAX_DURATION = timedelta(days=36500)


def parse_duration(text: str, *, field: str) -> timedelta:
    """``text`` as a duration: digits and a unit (s, m, h, d, w), repeatable
    (``1h30m``); anything else is bad input naming ``field``."""
    raw = text.strip().lower()
    if len(raw) > MAX_TEXT or not _DURATION.fullmatch(raw):
        raise InvalidInput(
            f"{field} {text[:MAX_TEXT]!r} is not a duration; write a number and a unit, "
            "e.g. 30m, 2h, 1d (s, m, h, d, w)",
            details={"field": field},
        )
    seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _PART.findall(raw))
    if seconds <= 0:
        raise InvalidInput(f"{field} must be longer than 0", details={"field": field})
    if seconds > MAX_DURATION.total_seconds():
        raise InvalidInput(
            f"{field} must be at most {MAX_DURATION.days} days", details={"field": field}
        )
    return timedelta(seconds=seconds)


def parse_moment(text: str, now: datetime, *, field: str) -> datetime:
    """``text`` as a moment: a duration from ``now`` (``2h``) or an ISO 8601 time
    with a timezone (``2026-12-01T09:00:00+01:00``; ``Z`` for UTC)."""
    raw = text.strip()
    if raw and raw[0].isdigit() and _DURATION.fullmatch(raw.lower()):
        return now + parse_duration(raw, field=field)
    try:
        moment = datetime.fromisoformat(raw) if len(raw) <= MAX_TEXT else None
    except ValueError:
        moment = None
    if moment is None:
        raise InvalidInput(
            f"{field} {text[:MAX_TEXT]!r} is neither a duration (30m, 2h, 1d) nor an ISO 8601 "
            "time (2026-12-01T09:00:00+01:00)",
            details={"field": field},
        )
    if moment.tzinfo is None:
        raise InvalidInput(
            f"{field} {raw!r} has no timezone; add one (Z for UTC, or e.g. +01:00)",
            details={"field": field},
        )
    return moment.astimezone(UTC)
