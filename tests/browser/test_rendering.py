"""The pieces the pages are rendered from: safe markdown, line diffs, the workflow view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestra.domain.events import EventType
from orchestra.domain.models import (
    AgentRun,
    Checkpoint,
    CheckpointAction,
    Event,
    History,
    Resolution,
    Workflow,
)
from orchestra.domain.statuses import AgentRunStatus, CheckpointStatus, WorkflowStatus
from orchestra.web.diff import LineKind, line_diff
from orchestra.web.markdown import render_markdown
from orchestra.web.view import (
    MAX_PROGRESS_LINES,
    TONES,
    documents_of,
    edit_texts,
    tone,
    workflow_view,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


# -- markdown ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "<script>window.__xss=1</script>",
        '<img src=x onerror="window.__xss=1">',
        "# Title <iframe src=javascript:alert(1)></iframe>",
        "```\n</pre><script>x()</script>\n```",
        '<a href="javascript:alert(1)">x</a>',
    ],
)
def test_markdown_escapes_html_from_agents(text: str) -> None:
    html = str(render_markdown(text))
    assert "<script" not in html and "<img" not in html and "<iframe" not in html
    assert "<a href" not in html
    assert "&lt;" in html


@pytest.mark.parametrize(
    "link", ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,x", "vbscript:x"]
)
def test_markdown_drops_dangerous_links(link: str) -> None:
    assert "href" not in str(render_markdown(f"[click]({link})"))


def test_markdown_renders_structure_and_safe_links() -> None:
    html = str(render_markdown("## Steps\n\n1. **one**\n2. `two`\n\n[docs](https://x.test/a)"))
    assert "<h5>Steps</h5>" in html  # below the page's own headings
    assert "<strong>one</strong>" in html and "<code>two</code>" in html
    assert '<a href="https://x.test/a">docs</a>' in html


def test_markdown_does_not_load_images() -> None:
    assert "<img" not in str(render_markdown("![pixel](https://tracker.test/p.png)"))


# -- diffs -----------------------------------------------------------------------------


def test_line_diff_marks_added_removed_and_context() -> None:
    old = "\n".join(f"line {i}" for i in range(1, 21))
    new = old.replace("line 10", "line ten") + "\nline 21"
    diff = line_diff(old, new, context=1)
    kinds = [(line.kind, line.text) for line in diff.lines]
    assert (LineKind.REMOVED, "line 10") in kinds and (LineKind.ADDED, "line ten") in kinds
    assert (LineKind.ADDED, "line 21") in kinds
    assert (LineKind.SAME, "line 1") not in kinds  # far from any change
    assert kinds[0][0] is LineKind.SKIPPED
    assert (diff.added, diff.removed) == (2, 1)


def test_line_diff_of_equal_texts_is_empty() -> None:
    diff = line_diff("a\nb\n", "a\nb\n")
    assert not diff.changed and diff.lines == []


# -- the workflow view -------------------------------------------------------------------


@pytest.mark.parametrize("enum", [WorkflowStatus, CheckpointStatus, AgentRunStatus])
def test_every_status_has_a_tone(enum: type[WorkflowStatus]) -> None:
    assert set(TONES[enum]) == set(enum)
    assert tone(WorkflowStatus.PENDING) != tone(CheckpointStatus.PENDING)


def _checkpoint(
    number: int,
    iteration: int,
    label: str,
    content: str,
    *,
    edited: str | None = None,
    at: datetime = T0,
) -> Checkpoint:
    resolution = None
    if edited is not None or number < 99:
        resolution = Resolution(
            action="go", edited_content=edited, resolved_by="ana", resolved_at=at
        )
    return Checkpoint(
        id=f"cp{number}",
        workflow_id="wf",
        number=number,
        iteration=iteration,
        step_name=f"step{number}",
        title=f"Checkpoint {number}",
        instructions="",
        editable_content=content,
        editable_label=label,
        actions=[CheckpointAction(name="go", label="Go on")],
        status=CheckpointStatus.EDITED if edited else CheckpointStatus.APPROVED,
        resolution=resolution,
        created_at=at,
    )


def test_documents_group_content_by_label_and_iteration_as_resolved() -> None:
    docs = documents_of(
        [
            _checkpoint(1, 1, "Plan", "v1 as written", edited="v1 as edited"),
            _checkpoint(2, 1, "Feedback", "fix it"),
            _checkpoint(3, 2, "Plan", "v2"),
            _checkpoint(4, 2, "Your text", ""),  # nothing to show
        ]
    )
    assert [(d.label, d.versions) for d in docs] == [
        ("Plan", {1: "v1 as edited", 2: "v2"}),
        ("Feedback", {1: "fix it"}),
    ]


def _workflow() -> Workflow:
    return Workflow(
        id="wf",
        name="w",
        type="t",
        status=WorkflowStatus.RUNNING,
        current_step="x",
        iteration=2,
        max_iterations=3,
        prompt="p",
        agents={},
        created_at=T0,
        updated_at=T0,
    )


def _run(run_id: str, at: datetime) -> AgentRun:
    return AgentRun(
        id=run_id,
        workflow_id="wf",
        step_name="work",
        step_index=0,
        iteration=1,
        agent="planner",
        job="planner",
        adapter="demo",
        status=AgentRunStatus.RUNNING,
        attempt=1,
        prompt="p",
        started_at=at,
    )


def test_workflow_view_orders_the_timeline_and_collects_progress() -> None:
    lines = [{"kind": "text", "text": f"line {i}"} for i in range(MAX_PROGRESS_LINES + 5)]
    history = History(
        workflow=_workflow(),
        checkpoints=[
            _checkpoint(1, 1, "Plan", "a\nb\n", edited="a\nc\n", at=T0 + timedelta(seconds=2))
        ],
        agent_runs=[_run("r1", T0 + timedelta(seconds=1))],
        events=[
            Event(
                id=7,
                workflow_id="wf",
                type=EventType.AGENT_PROGRESS,
                data={"agent_run_id": "r1", "agent": "planner", "lines": lines, "dropped": 0},
                created_at=T0,
            )
        ],
    )
    edits = {i: line_diff(*texts) for i, texts in edit_texts(history.checkpoints).items()}
    view = workflow_view(history, edits)
    assert [("run" if i.run else "cp" if i.checkpoint else i.note) for i in view.timeline] == [
        "created",
        "run",
        "cp",
    ]
    edit = view.timeline[2].edit
    assert edit is not None and (edit.added, edit.removed) == (1, 1)
    assert view.timeline[2].action_label == "Go on"
    progress = view.runs["r1"].progress
    assert len(progress) == MAX_PROGRESS_LINES and progress[-1].text == f"line {len(lines) - 1}"
    assert view.runs["r1"].dropped == 5
    assert view.iterations == [1, 2] and view.last_event_id == 7
