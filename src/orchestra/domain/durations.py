"""Durations as people write them in settings and requests: ``90s``, ``15m``, ``24h``,
``30d``, ``1h30m``, ``0.5h``: the one grammar of every duration Orchestra reads, so
a config file, a CLI flag and an API field read the same way."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from orchestra.domain.errors import InvalidInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"([0-9]{1,6}(?:\.[0-9]{1,3})?)\s*([smhdw])")
_DURATION = re.compile(r"(?:[0-9]{1,6}(?:\.[0-9]{1,3})?\s*[smhdw]\s*)+")
#: Longer texts are refused before any parsing (bounded input).
MAX_DURATION_CHARS = 24
FORM = "a number and a unit, s, m, h, d or w (e.g. 90s, 15m, 24h, 30d, 1h30m)"
#: The longest text :func:`parse_moment` reads (an ISO time with its offset is ~32).
MAX_TEXT = 40


def parse_duration(
    text: object,
    *,
    field: str,
    minimum: timedelta = timedelta(seconds=1),
    maximum: timedelta = timedelta(days=3650),
) -> timedelta:
    """``text`` (e.g. ``"30d"``) as a timedelta within [minimum, maximum]; anything
    else is :class:`InvalidInput` naming ``field`` and the accepted form."""
    given = text.strip().lower() if isinstance(text, str) else ""
    if len(given) > MAX_DURATION_CHARS or _DURATION.fullmatch(given) is None:
        raise InvalidInput(
            f"{field} = {str(text)[:30]!r} is not a duration; write {FORM}",
            details={"field": field},
        )
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(given))
    value = timedelta(seconds=seconds)
    if not minimum <= value <= maximum:
        raise InvalidInput(
            f"{field} = {text!r} is out of range: {describe(minimum)} to {describe(maximum)}",
            details={"field": field},
        )
    return value


def describe(value: timedelta) -> str:
    """The shortest exact spelling: ``timedelta(hours=24)`` → ``1d``."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


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
