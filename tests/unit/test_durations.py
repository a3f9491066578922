"""Durations as settings and requests write them (``30d``), and the decision-link
TTL setting built on them: bad values are refused with what to write instead."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestra.config import Settings
from orchestra.domain.durations import describe, parse_duration
from orchestra.domain.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(hours=24)),
        (" 30D ", timedelta(days=30)),
        ("7 d", timedelta(days=7)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_a_number_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text, field="f") == expected


@pytest.mark.parametrize("text", ["", "30", "d", "1.h", "-1h", "1y", "1h-", "x" * 25, None, 5])
def test_anything_else_names_the_field_and_the_form(text: object) -> None:
    with pytest.raises(InvalidInput, match="older_than") as refused:
        parse_duration(text, field="older_than")
    assert refused.value.details == {"field": "older_than"}


def test_the_range_is_enforced_and_said() -> None:
    with pytest.raises(InvalidInput, match="out of range: 1h to 3650d"):
        parse_duration("59m", field="f", minimum=timedelta(hours=1))
    with pytest.raises(InvalidInput, match="out of range"):
        parse_duration("3651d", field="f")
    assert describe(timedelta(hours=48)) == "2d" and describe(timedelta(seconds=61)) == "61s"


def test_decision_links_are_off_by_default_and_the_ttl_is_checked() -> None:
    assert Settings().link_ttl is None
    assert Settings(decision_links=True).link_ttl == timedelta(hours=24)
    assert Settings(decision_links=True, decision_link_ttl="90m").link_ttl == timedelta(minutes=90)
    for bad in ("30s", "31d", "soon"):
        with pytest.raises(ValueError, match="decision_link_ttl"):
            Settings(decision_link_ttl=bad)
