"""A code change as ``code_ready_for_review`` carries it, made from a real ``git diff`` of a
small repository, with hostile names and content; and a Plan & Review copy whose plan
checkpoint shows it and takes line comments (until the real workflow is on main)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestra.domain.code import CheckOutcome, CodeChange, DiffFile, Finding, as_context
from orchestra.domain.models import Checkpoint, CheckpointAction
from orchestra.domain.statuses import ActionStyle, CheckpointStatus
from orchestra.engine.definition import CheckpointStep, StepContext, registered
from orchestra.workflows import plan_review
from orchestra.workflows.git_worktree import git

HOSTILE_NAME = "<img src=x onerror=alert(1)>.py"
HOSTILE_LINE = "</script><script>alert(1)</script>"
#: A name that would end an HTML attribute early if it were not escaped.
QUOTE_NAME = 'q" onmouseover="alert(4)" x=\'.py'
CODE_TYPE = "plan_review_code"


def make_repo(repo: Path) -> str:
    """A repository with one commit and changes on top; returns the base commit."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text("".join(f"line {n}\n" for n in range(1, 21)))
    (repo / HOSTILE_NAME).write_text("print('hi')\n")
    (repo / "old.txt").write_text("gone\n")
    (repo / "logo.bin").write_bytes(b"\x00\x01\x02")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD").strip()
    app = [f"line {n}\n" for n in range(1, 21)]
    app[9] = "line ten, changed\n"
    app.insert(15, "def flag():\n")
    (repo / "app.py").write_text("".join(app))
    (repo / HOSTILE_NAME).write_text(f"print('hi')\n{HOSTILE_LINE}\n")
    (repo / "old.txt").unlink()
    (repo / "logo.bin").write_bytes(b"\x00\x01\x03\x04")
    (repo / "README.md").write_text("# Flag\n\nUse --json.\n")
    (repo / QUOTE_NAME).write_text("<img src=x onerror=alert(5)>\n")
    git(repo, "add", "-A")
    return base


def diff_files(repo: Path, base: str) -> list[DiffFile]:
    """Each changed file's counts and unified diff against ``base`` (staged)."""
    stats = git(repo, "diff", "--cached", "--numstat", "-z", base).split("\0")
    files = []
    for entry in filter(None, stats):
        added, removed, path = entry.split("\t", 2)
        binary = added == "-"
        patch = "" if binary else git(repo, "diff", "--cached", base, "--", path)
        files.append(
            DiffFile(
                path=path,
                added=0 if binary else int(added),
                removed=0 if binary else int(removed),
                binary=binary,
                patch=patch,
            )
        )
    return files


def code_change(repo: Path) -> CodeChange:
    base = make_repo(repo)
    return CodeChange(
        branch="orchestra/flag-1234abcd",
        base=base,
        snapshot="f" * 40,
        worktree=str(repo),
        files=diff_files(repo, base),
        findings=[
            Finding(agent="rev-a", severity="high", title="Name the flag", file="app.py", line=16),
            Finding(agent="rev-b", title="Off the diff", file="app.py", line=999),
            Finding(agent="rev-b", severity="low", title="No tests for the change"),
            Finding(
                agent="<b>rev-c</b>",
                title='<script>alert("t")</script>',
                detail="<img src=x onerror=alert(3)>",
                file=HOSTILE_NAME,
                line=2,
            ),
        ],
        check=CheckOutcome(
            command=["pytest", "-q"],
            exit_code=1,
            passed=False,
            output_tail="1 failed\n</pre><script>alert(2)</script>",
            duration_ms=1234,
        ),
    )


def code_checkpoint(change: CodeChange) -> Checkpoint:
    """``code_ready_for_review`` showing ``change``, built by hand (for template tests)."""
    actions = [
        CheckpointAction(name="approve", label="Approve", style=ActionStyle.PRIMARY),
        CheckpointAction(name="request_changes", label="Request changes", takes_comments=True),
    ]
    named = {"id": "cp1", "workflow_id": "wf", "number": 1, "iteration": 1}
    return Checkpoint(
        **named,
        step_name="code_ready_for_review",
        title="Code ready for review",
        instructions="",
        editable_content="",
        editable_label="Feedback for the implementer",
        actions=actions,
        status=CheckpointStatus.PENDING,
        context={"code": as_context(change)},
        created_at=datetime.now(UTC),
    )


@contextmanager
def code_workflow(change: CodeChange) -> Iterator[str]:
    """Plan & Review, registered as :data:`CODE_TYPE`, whose plan checkpoint shows
    ``change`` and whose every action takes line comments."""
    original = plan_review.definition.steps[plan_review.PLAN_READY]
    assert isinstance(original, CheckpointStep)

    def view(ctx: StepContext[Any]) -> Any:
        shown = original.view(ctx)
        return replace(shown, context={**dict(shown.context or {}), "code": as_context(change)})

    actions = [
        a.model_copy(update={"takes_comments": a.name != "cancel"}) for a in original.actions
    ]
    steps = {
        **plan_review.definition.steps,
        original.name: replace(original, actions=actions, view=view),
    }
    with registered(replace(plan_review.definition, type=CODE_TYPE, steps=steps)):
        yield CODE_TYPE
