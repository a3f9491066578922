"""The dashboard in a real browser against a real server process.

Each test drives Chromium the way a person would: fills forms, types in the
editor, clicks actions, and watches the page change without reloading it.
"Without reloading" is checked with a marker set on ``window`` at the start:
a navigation would drop it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.acceptance.server import ServerProcess
from tests.browser.conftest import (
    PageFactory,
    api,
    create_workflow,
    off_loop,
    restart,
    screenshot,
    wait_for_checkpoint,
)

from orchestra.config import load_settings
from orchestra.domain.models import Decision
from orchestra.domain.statuses import AgentRunStatus, WorkflowStatus
from orchestra.runtime import open_runtime

pytestmark = pytest.mark.browser


def mark_page(page: Any) -> None:
    page.evaluate("window.__stayed = 'yes'")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__stayed") == "yes", "the page reloaded"


def panel(page: Any) -> Any:
    return page.locator("article.checkpoint").first


def test_plan_and_review_from_the_form_to_completion(
    server: ServerProcess, new_page: PageFactory
) -> None:
    page = new_page()
    page.goto(server.base_url + "/workflows/new")
    page.get_by_label("Name").fill("Add a --json flag")
    page.get_by_label("What should be planned?").fill("Add a `--json` flag to `orchestra list`.")
    page.get_by_label("Planner").select_option("demo-slow")  # slow enough to watch it work
    page.get_by_role("button", name="Start workflow").click()
    expect(page).to_have_url(re.compile(r"/workflows/\w+$"))
    mark_page(page)

    # The planner runs live (elapsed time ticking, progress streaming), then the
    # plan checkpoint appears by itself.
    running = page.locator(f'.run:has(.badge[data-status="{AgentRunStatus.RUNNING.value}"])')
    expect(running.locator("time[data-ticking]")).to_have_text(re.compile(r"^\d+ s$"))
    expect(running.locator("ol.progress")).to_contain_text("demo agent thinking")
    cp = panel(page)
    expect(cp.locator("h2[id^=cp-title]")).to_have_text("Plan ready for review")
    screenshot(page, "workflow-plan-checkpoint")

    # Edit the plan (preview and changes tabs show it), then approve.
    editor = cp.locator("textarea[data-content]")
    editor.press("Control+End")
    editor.type("\n5. Document the flag in the README.\n")
    cp.get_by_role("tab", name="Preview").click()
    expect(cp.locator(".preview.prose")).to_contain_text("Document the flag in the README.")
    cp.get_by_role("tab", name="Changes").click()
    expect(cp.locator(".diff-add", has_text="5. Document the flag in the README.")).to_be_visible()
    cp.get_by_role("tab", name="Edit").click()
    cp.get_by_role("button", name="Approve plan → reviewers").click()

    # The reviews arrive: the consolidated view, verdicts side by side.
    review = panel(page)
    expect(review.locator("h2[id^=cp-title]")).to_have_text("Reviews ready for consolidation")
    expect(review.locator(".verdict")).to_have_count(3)
    expect(review.locator(".agreement")).to_contain_text("Reviewers differ")
    expect(review.locator(".issues")).to_contain_text("Name the tests that prove the change")
    screenshot(page, "workflow-review-checkpoint")

    # Revise with notes: the planner writes v2, which needs approving again.
    review.get_by_label("Notes").fill("Also cover the empty list.")
    review.get_by_role("button", name="Send feedback → planner").click()
    expect(page.locator(".breadcrumb")).to_contain_text("v2")
    plan2 = panel(page)
    expect(plan2.locator("h2[id^=cp-title]")).to_have_text("Plan ready for review")
    expect(plan2.locator(".meta")).to_contain_text("iteration 2")
    plan2.get_by_role("button", name="Approve plan → reviewers").click()

    # Approve to completion with the keyboard (Ctrl+Enter = the primary action).
    final = panel(page)
    expect(final.locator("h2[id^=cp-title]")).to_have_text("Reviews ready for consolidation")
    expect(final.locator(".meta")).to_contain_text("iteration 2")
    final.get_by_label("Notes").focus()
    page.keyboard.press("Control+Enter")
    expect(page.locator(".wf-head .badge")).to_have_attribute(
        "data-status", WorkflowStatus.COMPLETED.value
    )
    expect(page.locator(".outcome")).to_contain_text("Document the flag in the README.")

    # The timeline: every resolution with who and what, the edit as a diff.
    timeline = page.locator(".timeline")
    expect(timeline.locator(".tl-checkpoint")).to_have_count(4)
    expect(timeline).to_contain_text("Resolved by local with “Send feedback → planner”")
    expect(timeline.locator("blockquote.notes")).to_contain_text("Also cover the empty list.")
    timeline.get_by_text("What was edited in Plan").click()
    expect(timeline.locator(".diff-add", has_text="5. Document the flag")).to_be_visible()

    # The plan diff between iterations, and each version by the breadcrumb.
    versions = page.locator("#versions")
    expect(versions.get_by_label("From")).to_have_value("1")
    expect(versions.get_by_label("To")).to_have_value("2")
    expect(versions.locator(".diff-lines")).to_be_visible()
    page.locator(".breadcrumb").get_by_role("link", name="v1").click()
    expect(page.locator("#iteration-1")).to_have_attribute("open", "")
    expect(page.locator("#iteration-1")).to_contain_text("5. Document the flag in the README.")
    screenshot(page, "workflow-completed")
    assert_not_reloaded(page)


def test_the_list_and_the_inbox_update_live_and_resolve_in_place(
    server: ServerProcess, new_page: PageFactory
) -> None:
    listing = new_page()
    listing.goto(server.base_url + "/")
    inbox = new_page()
    inbox.goto(server.base_url + "/inbox")
    mark_page(listing)
    mark_page(inbox)

    wf_id = create_workflow(server, name="Inbox example")
    row = listing.locator(f'tr[data-workflow-id="{wf_id}"]')
    expect(row).to_be_visible()
    expect(row.locator(".waiting")).to_have_text("1 decision")
    screenshot(listing, "workflows")

    first_cp = wait_for_checkpoint(server, wf_id)
    item = inbox.locator(f'.inbox-item[data-checkpoint-id="{first_cp["id"]}"]')
    expect(item).to_be_visible()
    screenshot(inbox, "inbox")
    item.locator("summary").click()
    item.get_by_role("button", name="Approve plan → reviewers").click()
    expect(item).to_have_count(0)  # resolved, gone; the next one (reviews) arrives
    expect(inbox.locator(".inbox-item", has_text="Reviews ready")).to_be_visible()
    expect(row.locator(".badge")).to_have_attribute(
        "data-status", WorkflowStatus.AWAITING_CHECKPOINT.value
    )
    assert_not_reloaded(listing)
    assert_not_reloaded(inbox)

    dark = new_page(color_scheme="dark")
    dark.goto(f"{server.base_url}/workflows/{wf_id}")
    expect(panel(dark).locator(".consolidation")).to_be_visible()
    screenshot(dark, "workflow-dark")
    narrow = new_page(width=420, height=900)
    narrow.goto(server.base_url + "/")
    expect(narrow.locator(f'tr[data-workflow-id="{wf_id}"]')).to_be_visible()
    screenshot(narrow, "workflows-narrow")


def test_two_people_resolving_the_same_checkpoint(
    server: ServerProcess, new_page: PageFactory
) -> None:
    wf_id = create_workflow(server, name="Race")
    wait_for_checkpoint(server, wf_id)
    url = f"{server.base_url}/workflows/{wf_id}"
    first, stale, watching = new_page(), new_page(), new_page()
    # One page's live updates are cut, as if its connection had dropped: it only
    # learns of the other decision when it tries to decide.
    stale.route("**/events/stream*", lambda route: route.abort())
    for page in (first, stale, watching):
        page.goto(url)
        expect(panel(page)).to_be_visible()

    stale_text = "My careful rewrite of the plan."
    panel(stale).locator("textarea[data-content]").fill(stale_text)
    panel(watching).get_by_label("Notes").fill("A note I am still writing")
    panel(first).get_by_role("button", name="Approve plan → reviewers").click()
    expect(panel(first).locator("h2[id^=cp-title]")).to_have_text("Reviews ready for consolidation")

    panel(stale).get_by_role("button", name="Approve plan → reviewers").click()
    message = panel(stale).locator("[data-message]")
    expect(message).to_contain_text("local chose “Approve plan → reviewers”")
    expect(panel(stale).locator("textarea[data-content]")).to_have_value(stale_text)
    expect(panel(stale).get_by_role("button", name="Approve plan → reviewers")).to_be_disabled()

    # The live page keeps the person's unsent text and says who decided.
    kept = watching.locator("article.checkpoint.stale")
    expect(kept.locator("[data-message]")).to_contain_text("local chose")
    expect(kept.get_by_label("Notes")).to_have_value("A note I am still writing")
    # … and the workflow moves on beside it.
    expect(watching.locator("article.checkpoint:not(.stale)")).to_contain_text("Reviews ready")
    with api(server) as client:
        cp = client.get(f"/api/workflows/{wf_id}/history").json()["checkpoints"][0]
    assert cp["resolution"]["edited_content"] is None  # the loser's text was not applied


def test_html_in_agent_output_does_not_run(server: ServerProcess, new_page: PageFactory) -> None:
    payload = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
    wf_id = create_workflow(server, name="Hostile", prompt=f"Plan this: {payload}")
    wait_for_checkpoint(server, wf_id)
    page = new_page()
    page.goto(f"{server.base_url}/workflows/{wf_id}")
    cp = panel(page)
    expect(cp.locator(".output-body")).to_contain_text("<script>window.__xss=1</script>")
    cp.get_by_role("tab", name="Preview").click()
    expect(cp.locator(".preview.prose")).to_contain_text("<script>window.__xss=1</script>")
    page.locator(".run details[id$='-output'] > summary").first.click()
    expect(page.locator(".run .prose").first).to_contain_text("<script>window.__xss=1</script>")
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("script:not([src]):not([type])").count() == 0


def resolve_offline(server: ServerProcess, data_dir: Path, checkpoint_id: str) -> None:
    """Resolve through the service on the server's database (the server is down)."""
    settings = load_settings(data_dir=str(data_dir), database_url=server.database_url)
    runtime = open_runtime(settings)
    try:
        asyncio.run(
            runtime.service.resolve(checkpoint_id, Decision(action="approve"), actor="offline-ana")
        )
    finally:
        runtime.close()


def test_the_page_reconnects_and_catches_up(
    own_server: tuple[ServerProcess, Path], new_page: PageFactory
) -> None:
    server, data_dir = own_server
    wf_id = create_workflow(server, name="Reconnect")
    cp = wait_for_checkpoint(server, wf_id)
    page = new_page()
    page.goto(f"{server.base_url}/workflows/{wf_id}")
    expect(panel(page)).to_be_visible()
    mark_page(page)

    server.stop()
    expect(page.locator("#connection")).to_contain_text("reconnecting")
    # Decided elsewhere while this page could not hear anything.
    off_loop(resolve_offline, server, data_dir, cp["id"])
    restart(server, data_dir)

    expect(page.locator("#connection")).to_be_hidden(timeout=40_000)
    expect(page.locator(".timeline")).to_contain_text("Resolved by offline-ana", timeout=40_000)
    expect(panel(page).locator("h2[id^=cp-title]")).to_have_text("Reviews ready for consolidation")
    assert_not_reloaded(page)


def test_token_login_and_what_each_role_is_offered(
    auth_server: ServerProcess, new_page: PageFactory
) -> None:
    reviewer, viewer = auth_server.tokens["rita"], auth_server.tokens["vera"]
    wf_id = create_workflow(auth_server, reviewer, name="Guarded")
    wait_for_checkpoint(auth_server, wf_id, reviewer)

    page = new_page()
    page.goto(f"{auth_server.base_url}/workflows/{wf_id}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Token").fill("orc_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".field-error")).to_contain_text("unknown or revoked")
    page.get_by_label("Token").fill(viewer)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(rf"/workflows/{wf_id}$"))
    expect(page.locator(".who")).to_contain_text("vera")
    expect(panel(page)).to_contain_text("deciding needs the reviewer role")
    assert page.locator("button[data-action]").count() == 0
    assert page.locator("[data-workflow-action]").count() == 0
    assert page.get_by_role("link", name="New workflow").count() == 0

    other = new_page()
    other.goto(f"{auth_server.base_url}/login?next=/workflows/{wf_id}")
    other.get_by_label("Token").fill(reviewer)
    other.get_by_role("button", name="Sign in").click()
    # A reviewer resolves through the API with the session cookie and the CSRF header.
    panel(other).get_by_role("button", name="Approve plan → reviewers").click()
    expect(panel(other).locator("h2[id^=cp-title]")).to_have_text("Reviews ready for consolidation")
    # The viewer's page follows live over its own authenticated stream.
    expect(page.locator(".timeline")).to_contain_text("Resolved by rita")
    other.get_by_role("button", name="Sign out").click()
    expect(other).to_have_url(re.compile(r"/login$"))


def test_a_destructive_action_asks_first(
    server: ServerProcess, new_page: PageFactory, dialogs: list[str]
) -> None:
    wf_id = create_workflow(server, name="To cancel")
    wait_for_checkpoint(server, wf_id)
    page = new_page()
    page.goto(f"{server.base_url}/workflows/{wf_id}")
    panel(page).get_by_role("button", name="Cancel workflow").first.click()
    expect(page.locator(".wf-head .badge")).to_have_attribute(
        "data-status", WorkflowStatus.CANCELLED.value
    )
    assert dialogs == ["Cancel workflow? This cannot be undone."]


def test_an_action_that_sends_the_text_waits_for_text(
    server: ServerProcess, new_page: PageFactory
) -> None:
    wf_id = create_workflow(server, name="Prompt first")
    wait_for_checkpoint(server, wf_id)
    page = new_page()
    page.goto(f"{server.base_url}/workflows/{wf_id}")
    panel(page).get_by_role("button", name="Edit reviewer prompt first").click()
    cp = panel(page)
    expect(cp.locator("h2[id^=cp-title]")).to_have_text("Edit the reviewers' prompt")
    send = cp.get_by_role("button", name="Send to reviewers")
    expect(send).to_be_enabled()  # the prompt comes filled in
    editor = cp.locator("textarea[data-content]")
    editor.fill("   ")
    expect(send).to_be_disabled()
    editor.fill("Review this plan for missing tests only.")
    expect(send).to_be_enabled()
    send.click()
    expect(panel(page).locator("h2[id^=cp-title]")).to_have_text("Reviews ready for consolidation")
    with api(server) as client:
        runs = client.get(f"/api/workflows/{wf_id}/history").json()["agent_runs"]
    prompts = {r["prompt"] for r in runs if r["job"] == "reviewer"}
    assert prompts == {"Review this plan for missing tests only."}


def test_a_retry_takes_a_longer_timeout_typed_beside_it(
    server: ServerProcess, new_page: PageFactory
) -> None:
    """The agent-problem checkpoint offers a number for its retry; a bad one is refused
    with the server's message, a good one is sent and shown with the decision."""
    failing = {"planner": "demo-failing"}
    wf_id = create_workflow(server, name="Failing planner", agents=failing)
    first = wait_for_checkpoint(server, wf_id)
    assert first["step_name"] == "agent_problem"
    page = new_page()
    page.goto(f"{server.base_url}/workflows/{wf_id}")
    mark_page(page)
    cp = panel(page)
    expect(cp.locator("fieldset.action-inputs legend")).to_have_text("With “Retry failed agents”")
    timeout = cp.get_by_label("Timeout (seconds)")
    timeout.fill("0")
    cp.get_by_role("button", name="Retry failed agents").click()
    expect(cp.locator("[data-message]")).to_contain_text("between 1 and 3600")
    timeout.fill("90")
    cp.get_by_role("button", name="Retry failed agents").click()
    expect(page.locator(".timeline")).to_contain_text("Timeout (seconds): 90")
    assert_not_reloaded(page)
    with api(server) as client:
        decided = client.get(f"/api/checkpoints/{first['id']}").json()
    assert decided["resolution"]["inputs"] == {"timeout_s": 90.0}
