"""Prompt templates of Plan & Review and Implement & Review. The checkpoints that
let a person edit a prompt show exactly the text these functions produce."""

from __future__ import annotations

import json
from collections.abc import Sequence

from orchestra.domain.models import LineComment
from orchestra.workflows.reviews import CODE_REVIEW_SCHEMA, REVIEW_SCHEMA

#: The most characters of a diff put into a code reviewer's prompt.
MAX_DIFF_PROMPT_CHARS = 400_000


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
    return with_notes(text, notes, by)


def with_notes(prompt: str, notes: str | None, by: str | None) -> str:
    """``prompt`` with the notes a person gave with their decision, so they reach
    the agent that acts next (unchanged when there are none)."""
    if not notes or not notes.strip():
        return prompt
    return f"{prompt.rstrip()}\n\n## Notes from {by or 'the reviewer'}\n\n{notes.strip()}\n"


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


def implementer_prompt(task: str, plan: str, branch: str) -> str:
    return (
        "You are the implementer. Implement the approved plan below in this repository. "
        f"Your working directory is a git worktree on branch {branch}, made for you: "
        "change the files directly, run what you need, and do not commit (a person "
        "reviews the change first). When you are done, answer with a short summary of "
        "what you changed and why.\n\n"
        f"## Task\n\n{task.strip()}\n\n"
        f"## Approved plan\n\n{plan.strip()}\n"
    )


def comments_markdown(comments: Sequence[LineComment]) -> str:
    """Line comments as the implementer reads them: each body exactly as written."""
    return "".join(f"- `{c.file}` line {c.line}:\n\n{c.body}\n\n" for c in comments)


def implementer_revision_prompt(
    task: str,
    plan: str,
    iteration: int,
    feedback: str,
    comments: Sequence[LineComment],
    notes: str | None,
    by: str | None,
) -> str:
    text = (
        f"You are the implementer. Your change (iteration {iteration}) was reviewed and "
        "needs more work. The files in your working directory are your change as it was "
        "reviewed. Address the feedback below, keep what nobody questioned, do not "
        "commit, and answer with a short summary of what you changed.\n\n"
        f"## Task\n\n{task.strip()}\n\n"
        f"## Approved plan\n\n{plan.strip()}\n\n"
        f"## Feedback to address\n\n{feedback.strip()}\n"
    )
    if comments:
        text += f"\n## Line comments from {by or 'the reviewer'}\n\n" + comments_markdown(comments)
    return with_notes(text, notes, by)


_CODE_REVIEWER_PREAMBLE = (
    "You are a code reviewer. Review the change below (a diff against the commit it "
    "was cut from) for the task and the approved plan: is it correct, complete, safe "
    "and tested? Your working directory holds the changed files. Answer with one JSON "
    "object only, matching this schema; give each issue the file (its path as the "
    "diff names it) and the line (in the new file) it is about, or null:\n\n"
    f"```json\n{json.dumps(CODE_REVIEW_SCHEMA, indent=2)}\n```\n\n"
)


def code_reviewer_prompt(task: str, plan: str, diff: str, check: str | None) -> str:
    if len(diff) > MAX_DIFF_PROMPT_CHARS:
        diff = diff[:MAX_DIFF_PROMPT_CHARS] + "\n[… the diff is cut here; read the files …]\n"
    text = (
        _CODE_REVIEWER_PREAMBLE + f"## Task\n\n{task.strip()}\n\n"
        f"## Approved plan\n\n{plan.strip()}\n\n"
        f"## The change\n\n```diff\n{diff}```\n"
    )
    if check:
        text += f"\n## Checks\n\n{check}\n"
    return text
