"""Durations as people write them in settings and requests: ``90s``, ``15m``, ``24h``,
``30d`` (one number, one unit), so a config file and a CLI flag read the same way."""

from __future__ import annotations

import re
from datetime import timedelta

from orchestra.domain.errors import InvalidInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9]{1,6})\s*([smhd])")
#: Longer texts are refused before any parsing (bounded input).
MAX_DURATION_CHARS = 16


def parse_duration(
    text: object,
    *,
    field: str,
    minimum: timedelta = timedelta(seconds=1),
    maximum: timedelta = timedelta(days=3650),
) -> timedelta:
    """``text`` (e.g. ``"30d"``) as a timedelta within [minimum, maximum]; anything
    else is :class:`InvalidInput` naming ``field`` and the accepted form."""
    form = "a whole number and a unit: s, m, h or d (e.g. 90s, 15m, 24h, 30d)"
    if not isinstance(text, str) or len(text) > MAX_DURATION_CHARS:
        raise InvalidInput(f"{field} must be {form}", details={"field": field})
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidInput(
            f"{field} = {text!r} is not a duration; write {form}", details={"field": field}
        )
    value = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
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
