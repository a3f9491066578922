"""An implementer that writes hostile files, against a real server in Chromium: the diff
checkpoint shows file names that are markup or end an attribute early, and lines that
close a script, as text; commenting on such a file and requesting changes runs nothing,
and the comment reaches the next prompt with the file's name as it is. (A module of its
own: Playwright's sync API holds this thread's event loop while the browser is open.)"""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.acceptance.server import ServerProcess, start_server
from tests.browser import conftest as web
from tests.browser.code_change import QUOTE_NAME
from tests.browser.conftest import PageFactory, api, create_workflow, database, wait_for_checkpoint
from tests.conftest import BACKENDS
from tests.support.git_repo import git_repo as repo
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The browser fixtures, for this module.
browser, dialogs, new_page = web.browser, web.dialogs, web.new_page

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "fakes" / "claude"
MARKUP_NAME = "<img src=x onerror=window.__xss=1>.py"
LINES = ["</script><script>window.__xss=2</script>", '<img src=x onerror="window.__xss=3">']


def _implementer(folder: Path) -> Path:
    """A ``claude`` that writes the hostile files in its working directory, then answers
    as the fake claude does."""
    script = folder / "claude-hostile"
    files = {MARKUP_NAME: "\n".join(LINES) + "\n", QUOTE_NAME: LINES[0] + "\n"}
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"for name, text in {files!r}.items():\n"
        "    open(name, 'w').write(text)\n"
        f"os.execv(sys.executable, [sys.executable, {str(FAKE_CLAUDE)!r}, *sys.argv[1:]])\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("web")
    with database(request, data_dir) as url:
        (data_dir / "orchestra.toml").write_text(
            '[agents.demo]\nadapter = "demo"\n\n'
            '[agents.hostile]\nadapter = "claude"\ntimeout_s = 60\n'
            f'[agents.hostile.options]\npath = "{_implementer(data_dir)}"\n\n'
            '[jobs]\nplanner = "demo"\nreviewers = ["demo"]\nimplementer = "hostile"\n'
        )
        proc = start_server(url, data_dir, no_auth=True)
        try:
            yield proc
        finally:
            proc.stop()


def _at(server: ServerProcess, wf_id: str, step: str) -> dict[str, Any]:
    def there() -> dict[str, Any] | None:
        cp = wait_for_checkpoint(server, wf_id)
        if cp["step_name"] in ("plan_ready_for_review", "reviews_ready_for_consolidation"):
            with api(server) as client:
                client.post(f"/api/checkpoints/{cp['id']}/resolve", json={"action": "approve"})
            return None
        return cp if cp["step_name"] == step else None

    return eventually_sync(there, what=f"checkpoint {step}", timeout_s=60)


def test_hostile_files_render_as_text_and_comments_on_them_run_nothing(
    server: ServerProcess, new_page: PageFactory, dialogs: list[str], tmp_path: Path
) -> None:
    ws = repo(tmp_path / "ws")
    wf_id = create_workflow(server, name="Hostile", type="plan_implement", workspace_path=str(ws))
    cp = _at(server, wf_id, "code_ready_for_review")
    page = new_page()
    page.goto(f"{server.base_url}/workflows/{wf_id}")
    panel = page.locator(f"#checkpoint-{cp['id']}")
    code = panel.locator("section.code-change")
    for name in (MARKUP_NAME, QUOTE_NAME):  # each attribute whole, each name shown as text
        expect(code.locator(f"table.code-diff[data-file={_css_string(name)}]")).to_have_count(1)
        expect(code.locator("summary code.code-path", has_text=name)).to_have_count(1)
    expect(code.locator("td.diff-text", has_text=LINES[0]).first).to_be_visible()
    expect(code.locator("td.diff-text", has_text=LINES[1])).to_have_count(1)

    quoted = code.locator(f"table.code-diff[data-file={_css_string(QUOTE_NAME)}]")
    quoted.locator("tr[data-line] button[data-comment]").first.click()
    comment = "<script>window.__xss=4</script>"
    code.locator("tr.comment-row textarea").fill(comment)
    panel.get_by_role("button", name="Request changes → implementer").click()
    second = _at(server, wf_id, "code_ready_for_review")
    assert second["id"] != cp["id"]
    with api(server) as client:
        history = client.get(f"/api/workflows/{wf_id}/history").json()
    prompt = [r for r in history["agent_runs"] if r["step_name"] == "implement"][-1]["prompt"]
    assert comment in prompt and QUOTE_NAME in prompt
    expect(page.locator(".timeline .line-comments")).to_contain_text(comment)

    assert page.evaluate("typeof window.__xss") == "undefined"
    assert dialogs == []
    assert page.locator("script:not([src]):not([type])").count() == 0
    assert page.locator("img").count() == 0


def _css_string(text: str) -> str:
    """``text`` as a CSS string literal (for an attribute selector)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
