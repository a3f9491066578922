"""Bounded handling of agent output and request bodies: deep nesting, huge input and
unencodable text are refused with a message, in linear time, never a RecursionError."""

from __future__ import annotations

import time

import pytest

from orchestra.agents.subprocess_runner import parse_json_line, structured_from_text
from orchestra.domain.untrusted import (
    UntrustedJSON,
    loads_bounded,
    request_problem,
    too_deep,
)
from orchestra.workflows.reviews import parse_review

DEEP = 100_000


@pytest.mark.parametrize(
    "text",
    ["[" * DEEP + "]" * DEEP, '{"a":' * DEEP + "1" + "}" * DEEP, "[" * 100 + "]" * 100],
)
def test_deep_json_is_refused_not_a_recursion_error(text: str) -> None:
    with pytest.raises(UntrustedJSON, match="nested deeper than 64"):
        loads_bounded(text)
    assert structured_from_text(text) is None
    with pytest.raises(UntrustedJSON, match="claude printed a line of JSON nested deeper"):
        parse_json_line(text, "claude")


def test_bounds_keep_ordinary_json() -> None:
    assert loads_bounded('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    assert not too_deep(loads_bounded("[" * 64 + "]" * 64), 64)
    with pytest.raises(UntrustedJSON, match="longer than"):
        loads_bounded("[1]" * 10, max_chars=5)
    assert parse_json_line("not json", "codex") is None


def test_reviews_in_hostile_text_are_plain_text_and_quick() -> None:
    review = '{"verdict": "approve", "summary": "ok", "issues": []}'
    hostile = [
        "[" * DEEP + "]" * DEEP,
        "My review:\n" + '{"verdict": "approve", "a": ' * DEEP + "1" + "}" * DEEP,
        "```{" * 200_000,  # the old fence regex was quadratic on this
        '{"a": ' * 200_000,
    ]
    for text in hostile:
        start = time.monotonic()
        assert parse_review(text) is None
        assert time.monotonic() - start < 5  # generous: linear, not quadratic
    # A review after some noise, fenced or in prose, is still found.
    assert parse_review("```json\n" + review + "\n```")["verdict"] == "approve"  # type: ignore[index]
    assert parse_review("{not json} then " + review)["verdict"] == "approve"  # type: ignore[index]
    assert parse_review('{"review": ' + review + "}")["verdict"] == "approve"  # type: ignore[index]


def test_request_problems_name_the_field() -> None:
    assert request_problem({"name": "ok", "agents": {"planner": "demo"}}) is None
    assert request_problem({"name": "a\ud800b"}) == (
        "name: the text cannot be encoded as UTF-8 (a lone surrogate)"
    )
    problem = request_problem({"agents": {"options": {"k\udc00": 1}}})
    assert problem is not None and problem.startswith("agents.options: a key")
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    problem = request_problem({"x": deep})
    assert problem is not None and "nested deeper than 32 levels" in problem
    assert problem.encode("utf-8")  # quotable in an answer
