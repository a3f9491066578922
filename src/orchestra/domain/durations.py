"""Durations as people write them in settings and requests: ``90s``, ``15m``, ``24h``,
``30d``, ``1h30m``, ``0.5h``: the one grammar of every duration Orchestra reads, so
a config file, a CLI flag and an API field read the same way."""

from __future__ import annotations

import re
from datetime import timedelta

from orchestra.domain.errors import InvalidInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"([0-9]{1,6}(?:\.[0-9]{1,3})?)\s*([smhd])")
_DURATION = re.compile(r"(?:[0-9]{1,6}(?:\.[0-9]{1,3})?\s*[smhd])+")
#: Longer texts are refused before any parsing (bounded input).
MAX_DURATION_CHARS = 24
FORM = "a number and a unit, s, m, h or d (e.g. 90s, 15m, 24h, 30d, 1h30m)"


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
