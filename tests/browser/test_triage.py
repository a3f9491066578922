"""Inbox triage in Chromium, on both databases: the filter form, snoozing a row
(it leaves the inbox, shows under Snoozed, comes back by itself when its time
passes, or at once with "Back now"), and the live count: the navigation badge and
the tab title follow new checkpoints, and an opted-in browser notification shows
the new checkpoint's summary. (A batch with an item resolved elsewhere:
``test_batch.py``.)"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect
from tests.acceptance.server import ServerProcess
from tests.browser.conftest import PageFactory, api, create_workflow, wait_for_checkpoint

from orchestra.domain.statuses import CheckpointStatus

#: Records each Notification the page constructs (the real one still runs).
WRAP_NOTIFICATION = """
(() => {
  const Real = window.Notification;
  window.__notes = [];
  if (!Real) return;
  function Recorded(title, options) {
    window.__notes.push({ title, body: (options || {}).body || '' });
    return new Real(title, options);
  }
  Recorded.requestPermission = (...args) => Real.requestPermission(...args);
  Object.defineProperty(Recorded, 'permission', { get: () => Real.permission });
  Recorded.prototype = Real.prototype;
  window.Notification = Recorded;
})();
"""


def _row(page: Any, cp: dict[str, Any]) -> Any:
    return page.locator(f'.inbox-item[data-checkpoint-id="{cp["id"]}"]')


def test_filter_snooze_and_it_comes_back(server: ServerProcess, new_page: PageFactory) -> None:
    first = wait_for_checkpoint(server, create_workflow(server, name="Alpha triage"))
    second = wait_for_checkpoint(server, create_workflow(server, name="Beta triage"))
    page = new_page()
    page.goto(server.base_url + "/inbox")
    expect(_row(page, first)).to_be_visible()
    expect(_row(page, second)).to_be_visible()

    page.get_by_role("textbox", name="Workflow").fill(first["workflow_id"][:6])
    page.get_by_role("button", name="Filter").click()
    expect(_row(page, first)).to_be_visible()
    expect(_row(page, second)).to_have_count(0)
    page.get_by_role("link", name="Clear filters").click()
    expect(_row(page, second)).to_be_visible()

    bad = page.goto(server.base_url + "/inbox?workflow=zz")
    assert bad is not None and bad.status == 422
    expect(page.locator("[data-filter-error]")).to_contain_text("first 4+ hex digits")

    page.goto(server.base_url + "/inbox")
    _row(page, first).get_by_role("button", name=re.compile("for 1 h$")).click()
    expect(page.locator("#toast")).to_contain_text("Snoozed until")
    expect(_row(page, first)).to_have_count(0)
    expect(_row(page, second)).to_be_visible()
    with api(server) as client:
        got = client.get(f"/api/checkpoints/{first['id']}").json()
    assert got["status"] == CheckpointStatus.PENDING and got["snoozed_until"]

    page.get_by_role("link", name=re.compile(r"^Snoozed \(\d+\)$")).click()
    expect(page.get_by_role("heading", name="Snoozed")).to_be_visible()
    expect(_row(page, first)).to_contain_text("back in")
    _row(page, first).get_by_role("button", name=re.compile("^Back into the inbox now")).click()
    expect(_row(page, first)).to_have_count(0)
    page.goto(server.base_url + "/inbox")
    expect(_row(page, first)).to_be_visible()

    # Snoozed for two seconds elsewhere: the open inbox drops it, then shows it again
    # by itself when the time passes (no event says so: the page looks again then).
    with api(server) as client:
        r = client.post(f"/api/checkpoints/{second['id']}/snooze", json={"until": "2s"})
        assert r.status_code == 200, r.text
    expect(_row(page, second)).to_have_count(0)
    expect(_row(page, second)).to_be_visible()


def test_badge_title_and_notification_follow_a_new_checkpoint(
    server: ServerProcess, new_page: PageFactory
) -> None:
    page = new_page(permissions=["notifications"])
    page.add_init_script(WRAP_NOTIFICATION)
    page.goto(server.base_url + "/")
    with api(server) as client:
        before = client.get("/api/checkpoints/count").json()["pending"]
    title = (
        re.compile(rf"^\({before}\) Workflows · Orchestra$") if before else "Workflows · Orchestra"
    )
    expect(page).to_have_title(title)

    notify = page.get_by_role("button", name="Notify me")
    notify.click()
    expect(page.get_by_role("button", name="Notifications on")).to_be_visible()
    assert page.evaluate("localStorage.getItem('orchestra.notify')") == "1"

    cp = wait_for_checkpoint(server, create_workflow(server, name="Gamma triage"))
    expect(page).to_have_title(f"({before + 1}) Workflows · Orchestra")
    expect(page.locator('[data-region="inbox_count"] .count')).to_have_text(str(before + 1))
    page.wait_for_function(
        "(summary) => window.__notes.some((n) => n.body === summary)", arg=cp["summary"]
    )
    notes = page.evaluate("window.__notes")
    assert any(cp["title"] in n["title"] for n in notes)

    page.reload()  # the opt-in is remembered
    expect(page.get_by_role("button", name="Notifications on")).to_be_visible()
    with api(server) as client:
        r = client.post(f"/api/checkpoints/{cp['id']}/resolve", json={"action": "cancel"})
        assert r.status_code == 200, r.text
    expect(page).to_have_title(
        f"({before}) Workflows · Orchestra" if before else "Workflows · Orchestra"
    )
