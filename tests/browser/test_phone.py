"""Deciding from a phone, in Chromium at 390×844 on both databases: the checkpoint
pages (a plan, reviews, a code review) fit the width — nothing scrolls sideways but
the code itself — and the editor and every action can be used."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect
from tests.acceptance.server import ServerProcess
from tests.browser.conftest import (
    PageFactory,
    api,
    create_workflow,
    screenshot,
    wait_for_checkpoint,
)
from tests.support.git_repo import git_repo

PHONE = {"width": 390, "height": 844, "is_mobile": True, "has_touch": True}
#: What may scroll sideways inside itself (long code lines), not the page.
SCROLLERS = "pre, .code-table, .diff, table, .table-wrap"


def _fits(page: object) -> None:
    overflow = page.evaluate(  # type: ignore[attr-defined]
        """(scrollers) => {
            const wide = document.documentElement.scrollWidth - window.innerWidth;
            const offenders = [...document.querySelectorAll('body *')].filter(el => {
                const r = el.getBoundingClientRect();
                return r.right > window.innerWidth + 1 && !el.closest(scrollers);
            }).slice(0, 5).map(el => el.tagName + '.' + el.className);
            return {wide, offenders};
        }""",
        SCROLLERS,
    )
    assert overflow["wide"] <= 1 and not overflow["offenders"], overflow


def test_the_checkpoint_pages_fit_a_phone(
    own_server: tuple[ServerProcess, object], new_page: PageFactory, tmp_path: Path
) -> None:
    server, _ = own_server
    wf = create_workflow(server, name="Phone")
    cp = wait_for_checkpoint(server, wf)
    page = new_page(**PHONE)
    page.goto(f"{server.base_url}/workflows/{wf}")
    editor = page.locator("textarea:visible").first
    expect(editor).to_be_visible()
    _fits(page)
    screenshot(page, "phone-plan-checkpoint")
    page.get_by_role("button", name="Approve plan → reviewers").click()
    expect(page.get_by_role("button", name="Send feedback → planner")).to_be_visible()
    _fits(page)
    screenshot(page, "phone-review-checkpoint")
    assert cp["id"]

    ws = git_repo(tmp_path / "ws")
    with api(server) as client:
        r = client.post(
            "/api/workflows",
            json={
                "name": "Phone code",
                "prompt": "Write the demo file",
                "type": "plan_implement",
                "workspace_path": str(ws),
                "options": {"plan": "Write the demo file."},
            },
        )
        assert r.status_code == 201, r.text
    code_wf = r.json()["id"]
    wait_for_checkpoint(server, code_wf)
    page.goto(f"{server.base_url}/workflows/{code_wf}")
    expect(page.get_by_role("button", name="Request changes → implementer")).to_be_visible()
    _fits(page)
    screenshot(page, "phone-code-review")
