"""Reviews arrive as structured JSON (fenced, bare, or inside prose) or as plain text;
both are parsed, consolidated and turned into feedback for the planner."""

from __future__ import annotations

import json

import pytest

from orchestra.domain.models import AgentOutput
from orchestra.workflows.reviews import consolidate, feedback_markdown, parse_review

REVIEW = {
    "verdict": "request_changes",
    "summary": "The plan misses the migration.",
    "confidence": 0.8,
    "issues": [
        {"severity": "high", "category": "data", "title": "No migration", "detail": "Add one."},
        {"severity": "low", "title": "Naming"},
    ],
    "recommendations": ["Add a migration step."],
}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(REVIEW),
        f"```json\n{json.dumps(REVIEW, indent=2)}\n```",
        f"Here is my review:\n\n```\n{json.dumps(REVIEW)}\n```\n\nThanks!",
        f"I looked at it closely. {json.dumps(REVIEW)} That is all.",
        # a fenced block that is not JSON comes first; the object after it counts
        f"```\nnot json {{ here\n```\nReview: {json.dumps(REVIEW)}",
    ],
    ids=["bare", "fenced", "fenced in prose", "inline in prose", "after a broken fence"],
)
def test_structured_review_is_found_wherever_it_is(text: str) -> None:
    parsed = parse_review(text)
    assert parsed is not None
    assert parsed["verdict"] == "request_changes"
    assert parsed["summary"] == "The plan misses the migration."
    assert parsed["confidence"] == 0.8
    assert [(i["severity"], i["title"]) for i in parsed["issues"]] == [
        ("high", "No migration"),
        ("low", "Naming"),
    ]
    assert parsed["issues"][0]["category"] == "data"
    assert parsed["recommendations"] == ["Add a migration step."]


@pytest.mark.parametrize(
    "text",
    [
        "Looks good to me, but step 3 needs a test.",
        "",
        '{"summary": "a JSON object without a verdict is not a review"}',
        "```json\n[1, 2, 3]\n```",
        "Set {braces} aside: they are not JSON.",
    ],
)
def test_plain_text_review_is_not_structured(text: str) -> None:
    assert parse_review(text) is None


def test_already_structured_output_wins_over_the_text() -> None:
    parsed = parse_review("plain words", {"verdict": "Approve", "summary": "ok", "issues": []})
    assert parsed is not None and parsed["verdict"] == "approve"


def test_unknown_values_are_normalised_not_trusted() -> None:
    parsed = parse_review(
        json.dumps(
            {
                "verdict": "Approve With Changes",
                "summary": "s",
                "confidence": "very",
                "issues": [{"severity": "blocker", "description": "Old key"}, "not an object"],
            }
        )
    )
    assert parsed is not None
    assert parsed["verdict"] == "approve_with_changes"
    assert parsed["confidence"] is None
    assert parsed["issues"] == [
        {"severity": "medium", "category": None, "title": "Old key", "detail": ""}
    ]
    unknown = parse_review(json.dumps({"verdict": "ship it", "summary": "", "issues": []}))
    assert unknown is not None and unknown["verdict"] is None


def _output(agent: str, content: str) -> AgentOutput:
    return AgentOutput(
        agent=agent, job="reviewer", content=content, structured=parse_review(content)
    )


def test_consolidation_of_structured_and_plain_reviews() -> None:
    approve = {**REVIEW, "verdict": "approve", "issues": [], "recommendations": []}
    outputs = [
        _output("alpha", json.dumps(REVIEW)),
        _output("beta", json.dumps(approve)),
        _output("gamma", "Plain text: please add rollback steps."),
    ]
    view = consolidate(outputs)
    assert [(v.agent, v.verdict) for v in view.verdicts] == [
        ("alpha", "request_changes"),
        ("beta", "approve"),
        ("gamma", None),
    ]
    assert list(view.issues_by_severity) == ["high", "low"]  # most severe first
    assert view.issues_by_severity["high"][0].agent == "alpha"
    assert view.recommendations == ["Add a migration step."]
    assert view.agreement.startswith("Reviewers differ")

    feedback = feedback_markdown(outputs, view)
    assert "[high] No migration: Add one. (alpha)" in feedback
    assert "please add rollback steps." in feedback  # the plain review is kept whole
    assert "**gamma**: plain-text review" in feedback


def test_agreement_when_every_reviewer_gives_the_same_verdict() -> None:
    outputs = [_output(name, json.dumps(REVIEW)) for name in ("a", "b")]
    assert consolidate(outputs).agreement == "All 2 reviewers agree: request_changes."
    plain = [_output("a", "just words")]
    assert consolidate(plain).agreement.startswith("No structured verdicts")
