"""The code review checkpoint's page over HTTP, in process: the diff it renders, and the
resolve form's line comments (good ones recorded and shown; bad ones a 4xx, nothing
resolved). Both databases; the checkpoint is Plan & Review's with a real ``git diff``
(tests/browser/code_change.py) until the Implement & Review workflow is on main."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.browser.code_change import HOSTILE_NAME, code_change, code_workflow
from tests.support.engine import snapshot
from tests.support.git_repo import git_repo as repo

from orchestra.app import create_app
from orchestra.config import Settings
from orchestra.domain.code import CodeChange, LineKind, parse_patch
from orchestra.domain.models import Checkpoint, LineComment
from orchestra.domain.roles import Role
from orchestra.runtime import Runtime, open_runtime
from orchestra.store.tokens import create_token

Client = httpx.AsyncClient
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def change(tmp_path: Path) -> Iterator[CodeChange]:
    made = code_change(tmp_path / "repo")
    with code_workflow(made):
        yield made


@pytest.fixture(params=[True], ids=["no-auth"])
async def local(
    request: pytest.FixtureRequest, db_url: str, tmp_path: Path, change: CodeChange
) -> AsyncIterator[tuple[Runtime, Client]]:
    """A runtime and a client of its app (``no_auth`` unless parametrized otherwise)."""
    settings = Settings(data_dir=tmp_path, database_url=db_url, no_auth=request.param)
    runtime = open_runtime(settings)
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield runtime, client
    finally:
        runtime.close()


async def _waiting(runtime: Runtime) -> Checkpoint:
    wf = await runtime.service.create_workflow(
        name="flag", prompt="Add a flag", type="plan_review_code"
    )
    await runtime.service.engine.worker.run_until_idle()
    cp = (await runtime.service.get_workflow(wf.id)).pending_checkpoint
    assert cp is not None and CodeChange.of(cp) is not None
    return cp


async def _form(client: Client, cp: Checkpoint) -> dict[str, Any]:
    page = await client.get(f"/workflows/{cp.workflow_id}")
    match = CSRF.search(page.text)
    assert match
    return {"csrf": match.group(1), "action": "approve", "edited_content": cp.editable_content}


async def _post(client: Client, cp: Checkpoint, form: dict[str, Any], **headers: str) -> Any:
    return await client.post(f"/checkpoints/{cp.id}/resolve", data=form, headers=headers)


JSON = {"Accept": "application/json"}
ONE = {"comment_file": ["app.py"], "comment_line": ["16"], "comment_body": ["x"]}


async def test_the_page_renders_the_diff_with_findings_and_comment_buttons(
    local: tuple[Runtime, Client], change: CodeChange
) -> None:
    runtime, client = local
    cp = await _waiting(runtime)
    html = (await client.get(f"/workflows/{cp.workflow_id}")).text
    assert "checks failed" in html and "<code>pytest -q</code>" in html and "exit code 1" in html
    for n in range(1, len(change.files) + 1):
        assert f'<details class="code-file" id="code-{cp.id}-{n}" open>' in html
    assert "binary file" in html  # logo.bin
    assert re.search(r"\+2</span> <span class=\"removed\">−1</span>", html)  # app.py
    # The finding on app.py:16 sits right under that line; the one off the diff is listed first.
    row = html.index('<tr class="diff-add" data-line="16">')
    assert html.index("Name the flag", row) < html.index("</tr>\n", html.index("</tr>", row) + 1)
    assert html.index("Off the diff") < html.index('<details class="code-file"')
    assert html.index("No tests for the change") < html.index('<details class="code-file"')
    lines = [ln for f in change.files for ln in parse_patch(f.patch)]
    shown = [ln for ln in lines if ln.kind is not LineKind.HUNK]
    assert html.count("data-comment ") == len(shown)  # a comment button on every diff line
    assert 'name="comment_file"' in html and 'name="comment_body"' in html  # the fallback
    assert '"code": {' not in html  # not dumped again as raw context
    assert f'data-file="{HOSTILE_NAME.replace("<", "&lt;").replace(">", "&gt;")}"' in html


async def test_line_comments_from_the_form_are_recorded_and_shown(
    local: tuple[Runtime, Client],
) -> None:
    runtime, client = local
    cp = await _waiting(runtime)
    form = await _form(client, cp)
    form |= {
        # two from comment rows, and the fallback's empty box (dropped)
        "comment_file": ["app.py", HOSTILE_NAME, "app.py"],
        "comment_line": ["16", "2", ""],
        "comment_body": ["Call it --json\r\nplease", "<b>no</b>", "  "],
    }
    done = await client.post(f"/checkpoints/{cp.id}/resolve", data=form)
    assert done.status_code == 303
    assert done.headers["location"] == f"/workflows/{cp.workflow_id}#checkpoint-{cp.id}"
    resolved = await runtime.service.get_checkpoint(cp.id)
    assert resolved.resolution is not None
    assert resolved.resolution.comments == [
        LineComment(file="app.py", line=16, body="Call it --json\nplease"),
        LineComment(file=HOSTILE_NAME, line=2, body="<b>no</b>"),
    ]
    page = (await client.get(f"/workflows/{cp.workflow_id}")).text
    assert "2 line comments" in page and "app.py:16" in page
    assert "&lt;b&gt;no&lt;/b&gt;" in page and "<b>no</b>" not in page


@pytest.mark.parametrize(
    ("comments", "says"),
    [
        ({"comment_file": ["app.py"], "comment_line": ["0"], "comment_body": ["x"]}, "start at 1"),
        ({"comment_file": ["app.py"], "comment_line": ["ten"], "comment_body": ["x"]}, "whole"),
        ({"comment_file": [""], "comment_line": ["3"], "comment_body": ["x"]}, "which file"),
        ({"comment_file": ["a", "b"], "comment_line": ["1"], "comment_body": ["x"]}, "incomplete"),
        ({"comment_file": ["app.py"], "comment_body": ["x"]}, "incomplete"),
        ({**ONE, "action": "cancel"}, "takes no line comments"),  # the engine's refusal
        ({**ONE, "csrf": "forged"}, "security token"),
    ],
)
async def test_bad_line_comments_or_form_are_a_4xx_and_resolve_nothing(
    local: tuple[Runtime, Client], comments: dict[str, list[str]], says: str
) -> None:
    runtime, client = local
    cp = await _waiting(runtime)
    form = await _form(client, cp) | comments
    before = await snapshot(runtime.db)
    status = 403 if form["csrf"] == "forged" else 422
    answer = await _post(client, cp, form)
    assert answer.status_code == status and says in answer.text
    assert "text/html" in answer.headers["content-type"]
    as_json = await _post(client, cp, form, **JSON)
    assert as_json.status_code == status and says in as_json.json()["error"]["message"]
    assert await snapshot(runtime.db) == before


async def test_the_script_gets_json_and_a_replay_the_same_answer(
    local: tuple[Runtime, Client],
) -> None:
    runtime, client = local
    cp = await _waiting(runtime)
    form = await _form(client, cp) | {
        "comment_file": "app.py",
        "comment_line": "10",
        "comment_body": "why ten?",
    }
    first = await _post(client, cp, form, **JSON, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 200, first.text
    assert first.json()["resolution"]["comments"] == [
        {"file": "app.py", "line": 10, "body": "why ten?"}
    ]
    again = await _post(client, cp, form, **JSON, **{"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.json() == first.json()
    other = await _post(client, cp, form, **JSON)
    assert other.status_code == 409 and other.json()["error"]["details"]["resolution"]


async def test_tokens_and_cost_per_stage(local: tuple[Runtime, Client]) -> None:
    runtime, client = local
    cp = await _waiting(runtime)
    html = (await client.get(f"/workflows/{cp.workflow_id}")).text
    table = html[html.index('<table class="stage-costs"') :]
    table = table[: table.index("</table>")]
    assert re.findall(r'data-stage="([^"]+)"', table) == ["plan"]


@pytest.mark.parametrize("local", [False], ids=["auth"], indirect=True)
async def test_a_viewer_may_read_the_diff_but_not_resolve(local: tuple[Runtime, Client]) -> None:
    runtime, client = local
    cp = await _waiting(runtime)
    viewer = await create_token(runtime.db, name="vera", role=Role.VIEWER)
    login = CSRF.search((await client.get("/login")).text)
    assert login
    signed = await client.post("/login", data={"csrf": login.group(1), "token": viewer})
    assert signed.status_code == 303
    form = await _form(client, cp)
    page = (await client.get(f"/workflows/{cp.workflow_id}")).text
    assert 'table class="code-diff"' in page and "data-comment " not in page
    before = await snapshot(runtime.db)
    one = {"comment_file": "app.py", "comment_line": "16", "comment_body": "x"}
    refused = await _post(client, cp, form | one)
    assert refused.status_code == 403 and "may not resolve" in refused.text
    assert await snapshot(runtime.db) == before


async def test_the_new_workflow_form_starts_implement_and_review(
    local: tuple[Runtime, Client], tmp_path: Path
) -> None:
    runtime, client = local
    form_page = (await client.get("/workflows/new")).text
    assert '<option value="plan_implement"' in form_page and 'id="implementer"' in form_page
    token = CSRF.search(form_page)
    assert token
    base = {
        "csrf": token.group(1),
        "name": "Flag",
        "prompt": "Add a flag",
        "planner": "demo",
        "reviewers": ["demo"],
        "implementer": "demo",
        "max_iterations": "2",
    }
    plain = tmp_path / "plain"
    plain.mkdir()
    not_git = await client.post(
        "/workflows/new", data=base | {"type": "plan_implement", "workspace_path": str(plain)}
    )
    assert not_git.status_code == 422 and 'id="workspace_path-error"' in not_git.text
    assert '<option value="plan_implement" selected>' in not_git.text  # kept as chosen
    nowhere = await client.post("/workflows/new", data=base | {"type": "plan_implement"})
    assert nowhere.status_code == 422 and "workspace_path" in nowhere.text
    unknown = await client.post("/workflows/new", data=base | {"type": "nope"})
    assert unknown.status_code == 422 and 'id="type-error"' in unknown.text
    assert (await runtime.service.list_workflows()).items == []

    ws = repo(tmp_path / "ws")
    made = await client.post(
        "/workflows/new", data=base | {"type": "plan_implement", "workspace_path": str(ws)}
    )
    assert made.status_code == 303, made.text
    wf = await runtime.service.get_workflow(made.headers["location"].rsplit("/", 1)[1])
    assert wf.type == "plan_implement" and wf.agents["implementer"]["name"] == "demo"
    # Plan & Review ignores the implementer field (it has no such job).
    review = await client.post("/workflows/new", data=base | {"type": "plan_review"})
    assert review.status_code == 303
