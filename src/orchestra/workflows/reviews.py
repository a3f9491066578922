"""Structured reviews: the schema reviewers are asked for, robust parsing, and the
consolidated view (verdicts side by side, issues by severity, agreement)."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from orchestra.domain.models import AgentOutput, Consolidation, ReviewIssue, ReviewVerdict
from orchestra.domain.untrusted import (
    AGENT_JSON_CHARS,
    UntrustedJSON,
    loads_bounded,
    raw_decode_bounded,
)

VERDICTS = ("approve", "approve_with_changes", "request_changes", "reject")
SEVERITIES = ("critical", "high", "medium", "low", "info")

#: What reviewers are asked to answer. Valid under OpenAI's strict structured-output
#: rules (codex sends ``--output-schema`` with ``strict: true``): every object has
#: ``additionalProperties: false`` and lists all its properties in ``required``; the
#: optional ones are nullable instead, and :func:`parse_review` reads ``null`` as absent.
REVIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "verdict": {"type": "string", "enum": list(VERDICTS)},
        "summary": {"type": "string"},
        "confidence": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "issues": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "severity": {"type": "string", "enum": list(SEVERITIES)},
                    "category": {"type": ["string", "null"]},
                    "title": {"type": "string"},
                    "detail": {"type": ["string", "null"]},
                },
                "required": ["severity", "category", "title", "detail"],
            },
        },
        "recommendations": {"type": ["array", "null"], "items": {"type": "string"}},
        "questions": {"type": ["array", "null"], "items": {"type": "string"}},
    },
    "required": ["verdict", "summary", "confidence", "issues", "recommendations", "questions"],
}


def _with_locations(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` whose issues also name a file and a line (code reviews)."""
    issue = schema["properties"]["issues"]["items"]
    located = {
        **issue,
        "properties": {
            **issue["properties"],
            "file": {"type": ["string", "null"]},
            "line": {"type": ["integer", "null"], "minimum": 1},
        },
        "required": [*issue["required"], "file", "line"],
    }
    issues = {**schema["properties"]["issues"], "items": located}
    return {**schema, "properties": {**schema["properties"], "issues": issues}}


#: What code reviewers are asked to answer: a review whose issues carry ``file`` and
#: ``line`` (the path as the diff shows it, the line number in the new file).
CODE_REVIEW_SCHEMA: dict[str, Any] = _with_locations(REVIEW_SCHEMA)

#: The longest file path kept from a review (longer: the issue is kept without one).
MAX_ISSUE_PATH_CHARS = 4096

#: Candidate starts of a JSON object inside prose tried at most (each is a linear parse).
MAX_JSON_CANDIDATES = 50
_OBJECT_START = re.compile(r'\{\s*"')


def _is_review(value: object) -> bool:
    return isinstance(value, dict) and "verdict" in value


def _fenced_blocks(text: str) -> list[str]:
    """The insides of ```-fenced blocks (a leading ``json`` tag dropped), in linear time."""
    pieces = text.split("```")
    blocks = []
    for inside in pieces[1:-1:2]:  # odd pieces sit between an opening and a closing fence
        body = inside.removeprefix("json").strip()
        if body.startswith("{"):
            blocks.append(body)
    return blocks


def _first_review_object(text: str) -> dict[str, Any] | None:
    """The first JSON object with a verdict in ``text``: fenced, bare, inside prose,
    or nested in another object (``{"review": {...}}``).

    Bounded, since the text is an agent's: only the first
    :data:`~orchestra.domain.untrusted.AGENT_JSON_CHARS` characters are searched,
    at most :data:`MAX_JSON_CANDIDATES` starts are tried, and a document nested
    deeper than :data:`~orchestra.domain.untrusted.AGENT_JSON_DEPTH` is no review.
    """
    text = text[:AGENT_JSON_CHARS]
    for block in _fenced_blocks(text)[:MAX_JSON_CANDIDATES]:
        try:
            value = loads_bounded(block)
        except UntrustedJSON:
            continue
        if _is_review(value):
            return dict(value)
    decoder = json.JSONDecoder()
    for n, match in enumerate(_OBJECT_START.finditer(text)):
        if n >= MAX_JSON_CANDIDATES:
            break
        try:
            value = raw_decode_bounded(decoder, text, match.start())
        except UntrustedJSON:
            continue
        if _is_review(value):
            return dict(value)
    return None


def parse_review(content: str, structured: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """A normalised review dict, or ``None`` when the answer is plain text.

    The agent's structured output wins when it is a review; otherwise the text
    is searched, so an agent that ignored the schema still gets its review read.
    """
    data = structured if _is_review(structured) else _first_review_object(content)
    if data is None:
        return None
    verdict = str(data.get("verdict", "")).strip().lower().replace(" ", "_")
    issues = []
    for raw in data.get("issues") or []:
        if not isinstance(raw, dict):
            continue
        severity = str(raw.get("severity", "medium")).lower()
        issue = {
            "severity": severity if severity in SEVERITIES else "medium",
            "category": raw.get("category"),
            "title": str(raw.get("title") or raw.get("description") or raw.get("issue") or ""),
            "detail": str(raw.get("detail") or raw.get("suggestion") or ""),
        }
        path, line = raw.get("file") or raw.get("path"), raw.get("line")
        if isinstance(path, str) and 0 < len(path) <= MAX_ISSUE_PATH_CHARS:
            issue["file"] = path
            if isinstance(line, int) and not isinstance(line, bool) and 0 < line < 10**7:
                issue["line"] = line
        issues.append(issue)
    confidence = data.get("confidence")
    return {
        "verdict": verdict if verdict in VERDICTS else None,
        "summary": str(data.get("summary") or ""),
        "confidence": float(confidence) if isinstance(confidence, int | float) else None,
        "issues": issues,
        "recommendations": [str(r) for r in data.get("recommendations") or []],
        "questions": [str(q) for q in data.get("questions") or []],
    }


def consolidate(outputs: list[AgentOutput]) -> Consolidation:
    """Verdicts side by side, issues grouped by severity, and a line on agreement."""
    verdicts: list[ReviewVerdict] = []
    grouped: dict[str, list[ReviewIssue]] = {s: [] for s in SEVERITIES}
    recommendations: list[str] = []
    for out in outputs:
        review = out.structured
        if review is None:
            verdicts.append(ReviewVerdict(agent=out.agent, summary=out.content[:300]))
            continue
        verdicts.append(
            ReviewVerdict(
                agent=out.agent,
                verdict=review.get("verdict"),
                confidence=review.get("confidence"),
                summary=review.get("summary", ""),
            )
        )
        for issue in review.get("issues", []):
            grouped[issue["severity"]].append(ReviewIssue(agent=out.agent, **issue))
        recommendations.extend(
            r for r in review.get("recommendations", []) if r not in recommendations
        )
    counts = Counter(v.verdict for v in verdicts if v.verdict)
    if not counts:
        agreement = "No structured verdicts; read the reviews below."
    elif len(counts) == 1 and sum(counts.values()) == len(verdicts):
        agreement = f"All {len(verdicts)} reviewers agree: {next(iter(counts))}."
    else:
        agreement = "Reviewers differ: " + ", ".join(f"{n}× {v}" for v, n in counts.most_common())
    return Consolidation(
        verdicts=verdicts,
        issues_by_severity={s: items for s, items in grouped.items() if items},
        recommendations=recommendations,
        agreement=agreement,
    )


def feedback_markdown(outputs: list[AgentOutput], consolidation: Consolidation) -> str:
    """The consolidated feedback a person edits before it goes back to the planner."""
    lines = ["## Reviewer verdicts", ""]
    for v in consolidation.verdicts:
        lines.append(
            f"- **{v.agent}**: {v.verdict or 'plain-text review'}"
            + (f" — {v.summary}" if v.summary else "")
        )
    if consolidation.issues_by_severity:
        lines += ["", "## Issues to address", ""]
        for severity, issues in consolidation.issues_by_severity.items():
            for issue in issues:
                detail = f": {issue.detail}" if issue.detail else ""
                lines.append(f"- [{severity}] {issue.title}{detail} ({issue.agent})")
    if consolidation.recommendations:
        lines += ["", "## Recommendations", ""]
        lines += [f"- {r}" for r in consolidation.recommendations]
    plain = [o for o in outputs if o.structured is None]
    for out in plain:
        lines += ["", f"## Review by {out.agent}", "", out.content.strip()]
    return "\n".join(lines).strip() + "\n"


def verdict_line(consolidation: Consolidation) -> str:
    """The reviewers' verdicts in a few words: ``3 reviewers: 2× approve, 1× reject``."""
    counts = Counter(v.verdict or "plain text" for v in consolidation.verdicts)
    n = len(consolidation.verdicts)
    said = ", ".join(f"{k}× {v}" for v, k in counts.most_common())
    issues = sum(len(items) for items in consolidation.issues_by_severity.values())
    return f"{n} reviewer{'s' if n != 1 else ''}: {said}" + (
        f" ({issues} issue{'s' if issues != 1 else ''})" if issues else ""
    )


def reviews_favour_approval(consolidation: Consolidation) -> bool:
    """Whether the reviews, taken together, say the work may go ahead: every reviewer
    gave a verdict, none asked for changes or rejected, no critical or high issue."""
    verdicts = [v.verdict for v in consolidation.verdicts]
    if not verdicts or any(v is None or v in ("request_changes", "reject") for v in verdicts):
        return False
    return not any(consolidation.issues_by_severity.get(s) for s in ("critical", "high"))
