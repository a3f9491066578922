"""Prompt templates of Plan & Review. The checkpoints that let a person edit a
prompt show exactly the text these functions produce."""

from __future__ import annotations

import json

from orchestra.workflows.reviews import REVIEW_SCHEMA


def planner_prompt(task: str) -> str:
    return (
        "You are the planner. Write an implementation plan in Markdown for the task "
        "below: the goal, the steps in order, the files likely to change, the tests "
        "that prove it works, and the risks.\n\n"
        f"## Task\n\n{task.strip()}\n"
    )


def revision_prompt(
    task: str, plan: str, version: int, feedback: str, notes: str | None, by: str | None
) -> str:
    text = (
        f"You are the planner. Revise your plan (version {version}) for the task below. "
        "Address the feedback; keep what the reviewers did not question. Answer with the "
        "complete revised plan in Markdown.\n\n"
        f"## Task\n\n{task.strip()}\n\n"
        f"## Current plan (v{version})\n\n{plan.strip()}\n\n"
        f"## Feedback to address\n\n{feedback.strip()}\n"
    )
    if notes and notes.strip():
        text += f"\n## Notes from {by or 'the reviewer'}\n\n{notes.strip()}\n"
    return text


_REVIEWER_PREAMBLE = (
    "You are a reviewer. Review the implementation plan below for the task it "
    "addresses: is it correct, complete, safe and testable? Answer with one JSON "
    "object only, matching this schema:\n\n"
    f"```json\n{json.dumps(REVIEW_SCHEMA, indent=2)}\n```\n\n"
)


def reviewer_prompt(task: str, plan: str, version: int) -> str:
    return (
        _REVIEWER_PREAMBLE + f"## Task\n\n{task.strip()}\n\n"
        f"## Plan (v{version})\n\n{plan.strip()}\n"
    )
