"""Implement & Review's diff checkpoint in a real browser against a real server: a
``plan_implement`` workflow with the demo agents in a git repository made here; a line
comment typed under a diff line reaches the implementer's next prompt as typed; then
approve → confirm the commit → the branch has it, and the timeline says which commit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.acceptance.server import ServerProcess
from tests.browser.conftest import (
    SCREENSHOTS,
    PageFactory,
    api,
    create_workflow,
    wait_for_checkpoint,
)
from tests.support.git_repo import git_repo as repo
from tests.support.waiting import eventually_sync

from orchestra.domain.statuses import WorkflowStatus
from orchestra.workflows.git_worktree import git

pytestmark = pytest.mark.browser

COMMENT = "Name it --json, please: <b>not</b> `-j`\nand keep the old name working."


def _resolve(server: ServerProcess, cp: dict[str, Any], action: str) -> None:
    with api(server) as client:
        done = client.post(f"/api/checkpoints/{cp['id']}/resolve", json={"action": action})
    assert done.status_code == 200, done.text


def _at(server: ServerProcess, wf_id: str, step: str) -> dict[str, Any]:
    def there() -> dict[str, Any] | None:
        cp = wait_for_checkpoint(server, wf_id)
        return cp if cp["step_name"] == step else None

    return eventually_sync(there, what=f"checkpoint {step}", timeout_s=60)


def test_comment_on_a_line_request_changes_then_commit(
    server: ServerProcess, new_page: PageFactory, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    wf_id = create_workflow(
        server, name="Add a flag", type="plan_implement", workspace_path=str(ws)
    )
    _resolve(server, _at(server, wf_id, "plan_ready_for_review"), "approve")
    _resolve(server, _at(server, wf_id, "reviews_ready_for_consolidation"), "approve")
    first = _at(server, wf_id, "code_ready_for_review")

    page = new_page(width=1280, height=1000)
    page.goto(f"{server.base_url}/workflows/{wf_id}")
    cp = page.locator(f"#checkpoint-{first['id']}")
    code = cp.locator("section.code-change")
    expect(code.locator("details.code-file").first).to_have_attribute("open", "")
    row = code.locator("table.code-diff tr.diff-add").first
    file = row.locator("xpath=ancestor::table").get_attribute("data-file")
    line = row.get_attribute("data-line")
    assert file and line
    row.hover()
    row.locator("button[data-comment]").click()
    box = code.locator("tr.comment-row textarea")
    expect(box).to_be_focused()
    box.fill(COMMENT)
    box.blur()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    code.screenshot(path=str(SCREENSHOTS / "code-review.png"))  # the README's, cropped
    cp.get_by_role("button", name="Request changes → implementer").click()

    # The next iteration's implementer got the comment as typed, under its file and line.
    second = _at(server, wf_id, "code_ready_for_review")
    assert second["id"] != first["id"]
    with api(server) as client:
        history = client.get(f"/api/workflows/{wf_id}/history").json()
    implements = [r for r in history["agent_runs"] if r["step_name"] == "implement"]
    assert len(implements) == 2
    assert COMMENT in implements[-1]["prompt"] and file in implements[-1]["prompt"]
    resolved = next(c for c in history["checkpoints"] if c["id"] == first["id"])
    assert resolved["resolution"]["comments"] == [
        {"file": file, "line": int(line), "body": COMMENT}
    ]

    # The timeline shows the comment with the decision, and each implement run's snapshot.
    timeline = page.locator(".timeline")
    expect(timeline.locator(".line-comments")).to_contain_text(f"{file}:{line}")
    expect(timeline.locator(".line-comments")).to_contain_text("<b>not</b>")
    for run in implements:
        snap = run["meta"]["snapshot"][:10]
        expect(timeline.locator(".snapshot", has_text=snap)).to_have_count(1)
    stages = page.locator("table.stage-costs [data-stage]").evaluate_all(
        "rows => rows.map((row) => row.dataset.stage)"
    )
    wanted = ["plan", "review", "implement", "code review"]
    assert [s for s in stages if s in wanted] == wanted, stages

    # Approve → confirm the commit → the branch has it.
    page.locator(f"#checkpoint-{second['id']}").get_by_role(
        "button", name="Approve → commit"
    ).click()
    confirm = _at(server, wf_id, "confirm_commit")
    page.locator(f"#checkpoint-{confirm['id']}").get_by_role(
        "button", name="Commit", exact=True
    ).click()
    expect(page.locator(".wf-head .badge")).to_have_attribute(
        "data-status", WorkflowStatus.COMPLETED.value
    )
    with api(server) as client:
        result = client.get(f"/api/workflows/{wf_id}").json()["result"]
    assert git(ws, "rev-parse", result["branch"]).strip() == result["commit"]
    expect(page.locator(".timeline code.commit")).to_have_text(result["commit"][:10])
    expect(page.locator(".outcome .commit-line")).to_contain_text(result["commit"][:12])
    expect(page.locator(".outcome .commit-line")).to_contain_text(result["branch"])


def test_without_the_script_the_fallback_comments_and_enter_decides_nothing(
    server: ServerProcess, new_page: PageFactory, tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    page = new_page(java_script_enabled=False)
    page.goto(f"{server.base_url}/workflows/new")
    page.get_by_label("Name").fill("No JS")
    page.get_by_label("Workflow", exact=True).select_option(label="Implement & Review")
    page.get_by_label("What should be planned?").fill("Add a flag")
    page.get_by_label("Workspace path").fill(str(ws))
    page.get_by_role("button", name="Start workflow").click()
    expect(page).to_have_url(re.compile(r"/workflows/\w+$"))
    wf_id = page.url.rsplit("/", 1)[1]
    _resolve(server, _at(server, wf_id, "plan_ready_for_review"), "approve")
    _resolve(server, _at(server, wf_id, "reviews_ready_for_consolidation"), "approve")
    first = _at(server, wf_id, "code_ready_for_review")
    page.reload()  # no live updates without the script
    cp = page.locator(f"#checkpoint-{first['id']}")
    expect(cp.locator("button[data-comment]").first).to_be_hidden()  # inert without JS
    cp.get_by_text("Comment on a line by its number").click()
    file = cp.get_by_label("File").input_value()
    line = cp.get_by_role("spinbutton", name="Line")
    line.fill("3")
    line.press("Enter")  # no default action: nothing is decided
    with api(server) as client:
        still = client.get(f"/api/checkpoints/{first['id']}").json()
    assert still["status"] == "pending"
    cp.get_by_label("Comment", exact=True).fill("Without a script, too.")
    cp.get_by_role("button", name="Request changes → implementer").click()
    expect(page).to_have_url(f"{server.base_url}/workflows/{wf_id}#checkpoint-{first['id']}")
    with api(server) as client:
        done = client.get(f"/api/checkpoints/{first['id']}").json()
    assert done["resolution"]["action"] == "request_changes"
    assert done["resolution"]["comments"] == [
        {"file": file, "line": 3, "body": "Without a script, too."}
    ]
