"""Batch decisions from the inbox, in Chromium on both databases: tick two
checkpoints, one of which someone else resolves meanwhile, apply one action; the
page reports that one as already resolved and resolves the other."""

from __future__ import annotations

from playwright.sync_api import expect
from tests.acceptance.server import ServerProcess
from tests.browser.conftest import PageFactory, api, create_workflow, wait_for_checkpoint


def test_a_batch_from_the_inbox_reports_the_item_resolved_elsewhere(
    own_server: tuple[ServerProcess, object], new_page: PageFactory
) -> None:
    server, _ = own_server
    first = wait_for_checkpoint(server, create_workflow(server, name="First"))
    second = wait_for_checkpoint(server, create_workflow(server, name="Second"))
    page = new_page()
    page.goto(server.base_url + "/inbox")
    for cp in (first, second):
        page.locator(f'.inbox-item[data-checkpoint-id="{cp["id"]}"] .batch-pick').check()
    with api(server) as client:  # someone else decides the second one first
        r = client.post(f"/api/checkpoints/{second['id']}/resolve", json={"action": "cancel"})
        assert r.status_code == 200, r.text
    page.locator("#batch-action").select_option("approve")
    page.get_by_role("button", name="Apply to each").click()
    result = page.locator("[data-batch-result]")
    expect(result).to_contain_text("1 of 2 resolved")
    expect(result.locator(f'[data-checkpoint-id="{first["id"]}"]')).to_have_attribute(
        "data-outcome", "resolved"
    )
    expect(result.locator(f'[data-checkpoint-id="{second["id"]}"]')).to_have_attribute(
        "data-outcome", "already_resolved"
    )
    with api(server) as client:
        got = client.get(f"/api/checkpoints/{first['id']}").json()
    assert got["status"] == "approved" and got["resolution"]["action"] == "approve"
