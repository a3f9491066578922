"""The code under review's pieces: file tables rendered in the pool with findings under
their lines, the view the panel is drawn from, the resolve form's parser, and tokens and
cost per stage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from orchestra.domain.code import CodeChange, DiffFile, Finding
from orchestra.domain.models import AgentRun, Checkpoint, LineComment
from orchestra.domain.statuses import AgentRunStatus
from orchestra.web import render_pool
from orchestra.web.code_view import FILE_HTML, code_view, file_spec, render_file
from orchestra.web.forms import decision_from_form
from orchestra.web.render_pool import RenderPool
from orchestra.web.session import BadForm
from orchestra.web.view import stage_costs
from tests.browser.code_change import code_checkpoint

PATCH = (
    "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
)
APP = DiffFile(path="app.py", added=1, removed=1, patch=PATCH)
LOGO = DiffFile(path="logo.png", binary=True)


def _finding(title: str, file: str | None = "app.py", line: int | None = 2) -> Finding:
    return Finding(agent="rev", title=title, file=file, line=line)


def _checkpoint(findings: list[Finding]) -> Checkpoint:
    change = CodeChange(
        branch="b", base="0" * 40, snapshot="1" * 40, worktree="/w", files=[APP, LOGO]
    )
    change = change.model_copy(update={"findings": findings})
    return code_checkpoint(change)


def test_a_finding_sits_once_under_the_new_line_it_names() -> None:
    # Line 2 is both the removed "b" (old 2) and the added "B" (new 2): under the new one.
    under_new = _finding("on the new line")
    old_only = _finding("on a removed line only", line=4)  # no new line 4; no old 4 either
    html, placed = render_file(file_spec(APP, [under_new, old_only], commenting=True))
    assert placed == [2]
    added = html.index('<tr class="diff-add" data-line="2">')
    removed = html.index('<tr class="diff-del" data-line="2">')
    assert removed < added < html.index("on the new line")
    assert html.count("on the new line") == 1 and "on a removed line only" not in html
    assert html.count("data-comment") == 4  # every line but the hunk header
    quiet, _ = render_file(file_spec(APP, [], commenting=False))
    assert "data-comment" not in quiet


def test_a_removed_line_takes_a_finding_when_no_new_line_has_its_number() -> None:
    patch = "@@ -1,3 +1,1 @@\n a\n-b\n-c\n"
    gone = DiffFile(path="app.py", removed=2, patch=patch)
    html, placed = render_file(file_spec(gone, [_finding("why remove c?", line=3)], True))
    assert placed == [3]
    assert html.index('data-line="3"') < html.index("why remove c?")


def test_the_view_collects_then_shows_and_lists_unplaced_findings_first() -> None:
    placed, elsewhere, general = (
        _finding("placed"),
        _finding("elsewhere", line=99),
        _finding("general", file=None, line=None),
    )
    cp = _checkpoint([placed, elsewhere, general])
    asked: set[str] = set()
    token = FILE_HTML.set(asked)
    try:
        collecting = code_view(cp, commenting=True)
    finally:
        FILE_HTML.reset(token)
    assert collecting is not None and len(asked) == 1  # the binary file has no table
    token = FILE_HTML.set({spec: render_file(spec) for spec in asked})
    try:
        view = code_view(cp, commenting=True)
    finally:
        FILE_HTML.reset(token)
    assert view is not None
    assert [f.title for f in view.general] == ["elsewhere", "general"]
    app, logo = view.files
    assert "placed" in app.html and app.note == ""
    assert logo.html == "" and logo.note == ""


def test_a_file_the_pool_could_not_render_says_why_and_its_findings_move_up() -> None:
    cp = _checkpoint([_finding("placed")])
    token = FILE_HTML.set({file_spec(APP, [_finding("placed")], True): "took too long to render"})
    try:
        view = code_view(cp, commenting=True)
    finally:
        FILE_HTML.reset(token)
    assert view is not None
    assert view.files[0].note == "took too long to render" and view.files[0].html == ""
    assert [f.title for f in view.general] == ["placed"]


def test_no_code_no_view() -> None:
    cp = _checkpoint([]).model_copy(update={"context": {"code": {"branch": 1}}})
    assert code_view(cp, commenting=True) is None


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    renders = RenderPool()
    try:
        yield renders
    finally:
        renders.close()


async def test_files_are_rendered_in_the_pool_within_bounds(
    pool: RenderPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = file_spec(APP, [_finding("placed")], True)
    done = await pool.render(files=[spec])
    assert done.files[spec] == render_file(spec)
    monkeypatch.setattr(render_pool, "MAX_FILE_CHARS", 10)
    other = file_spec(APP, [], False)
    assert (await pool.render(files=[other])).files[other] == render_pool.TOO_LARGE


async def test_without_workers_files_are_not_rendered_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders = RenderPool()

    async def none() -> None:
        return None

    monkeypatch.setattr(renders, "_ready", none)
    spec = file_spec(APP, [], True)
    assert (await renders.render(files=[spec])).files[spec] == render_pool.UNAVAILABLE


# -- the resolve form -------------------------------------------------------------------


def _fields(**given: Any) -> dict[str, list[str]]:
    return {k: v if isinstance(v, list) else [v] for k, v in given.items()}


def test_the_form_reads_a_decision() -> None:
    decision = decision_from_form(
        _fields(
            action="retry",
            notes="a\r\nb",
            **{"input.retry.timeout_s": "90", "input.other.x": "1", "input.retry.blank": " "},
            comment_file=["app.py", "b.py"],
            comment_line=["2", ""],
            comment_body=["x\r\ny", ""],
        )
    )
    assert decision.action == "retry" and decision.notes == "a\nb"
    assert decision.edited_content is None  # absent: not edited
    assert decision.inputs == {"timeout_s": 90.0}
    assert decision.comments == [LineComment(file="app.py", line=2, body="x\ny")]
    plain = decision_from_form(_fields(action="approve", notes=" ", edited_content=""))
    assert (plain.notes, plain.edited_content, plain.comments, plain.inputs) == (
        None,
        "",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({}, "choose an action"),
        ({"action": "a", "input.a.n": "lots"}, "must be a number"),
        ({"action": "a", "comment_file": "f", "comment_line": "-3", "comment_body": "x"}, "1"),
        (
            {"action": "a", "comment_file": "f" * 5000, "comment_line": "3", "comment_body": "x"},
            "comment 1",
        ),
    ],
)
def test_the_form_refuses_what_it_cannot_read(fields: dict[str, str], says: str) -> None:
    with pytest.raises(BadForm) as refused:
        decision_from_form(_fields(**fields))
    assert refused.value.status == 422 and says in refused.value.message


# -- tokens and cost per stage ------------------------------------------------------------


RUN: dict[str, Any] = {
    "workflow_id": "wf",
    "step_index": 0,
    "iteration": 1,
    "agent": "a",
    "job": "j",
    "adapter": "demo",
    "status": AgentRunStatus.COMPLETED,
    "attempt": 1,
    "prompt": "p",
    "started_at": datetime.now(UTC),
}


def _run(step: str, tokens: tuple[int | None, int | None], cost: float | None) -> AgentRun:
    given = {"step_name": step, "tokens_in": tokens[0], "tokens_out": tokens[1], "cost_usd": cost}
    return AgentRun.model_validate({**RUN, **given, "id": f"r-{step}-{tokens}"})


def test_stage_costs_sum_by_stage_in_the_order_they_ran() -> None:
    runs = [
        _run("plan", (10, 5), 0.5),
        _run("implement", (100, 50), None),
        _run("code_review", (7, 3), 0.25),
        _run("code_review", (None, None), 0.25),
        _run("plan", (1, 1), None),
        _run("merge_back", (0, 0), None),
    ]
    got = [
        (c.stage, c.runs, c.tokens_in, c.tokens_out, c.cost_usd, c.priced)
        for c in stage_costs(runs)
    ]
    assert got == [
        ("plan", 2, 11, 6, 0.5, True),
        ("implement", 1, 100, 50, 0.0, False),
        ("code review", 2, 7, 3, 0.5, True),
        ("merge back", 1, 0, 0, 0.0, False),
    ]
