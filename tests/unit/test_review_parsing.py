"""What real agents send beyond the cases of test_reviews.py: structured output that is
not a review, a review after other JSON, a review wrapped in an object. The answer
must still be read as the review it contains."""

from __future__ import annotations

import json

from orchestra.workflows.reviews import parse_review

REVIEW = {
    "verdict": "reject",
    "summary": "Unsafe.",
    "issues": [{"severity": "critical", "title": "Drops data"}],
}


def test_structured_output_that_is_not_a_review_falls_back_to_the_text() -> None:
    # e.g. an adapter parsed some other JSON object out of the answer
    parsed = parse_review(f"Review:\n```json\n{json.dumps(REVIEW)}\n```", {"files": ["a.py"]})
    assert parsed is not None and parsed["verdict"] == "reject"


def test_a_review_after_other_json_in_the_text_is_found() -> None:
    text = (
        'The config I looked at was {"retries": 3}.\n'
        f'```json\n{{"not": "a review"}}\n```\nMy review: {json.dumps(REVIEW)}'
    )
    parsed = parse_review(text)
    assert parsed is not None
    assert parsed["verdict"] == "reject"
    assert parsed["issues"][0]["severity"] == "critical"


def test_a_review_wrapped_in_another_object_is_found() -> None:
    parsed = parse_review(json.dumps({"review": REVIEW, "model": "x"}))
    assert parsed is not None and parsed["summary"] == "Unsafe."


def test_structured_output_without_a_review_anywhere_is_plain_text() -> None:
    assert parse_review("Ship it, but add tests.", {"files": ["a.py"]}) is None
