"""The pages over HTTP, in process (no browser): what they render, refuse and protect.

They run on both databases (the ``db_url`` fixture). The browser tests beside
this file cover what only a browser can show (live updates, the editor, XSS).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.engine import demo, use_agents

from orchestra.app import create_app
from orchestra.config import Settings
from orchestra.domain.roles import Role
from orchestra.domain.statuses import AgentRunStatus, WorkflowStatus
from orchestra.runtime import Runtime, open_runtime
from orchestra.store.tokens import create_token

Client = httpx.AsyncClient
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def make_runtime(db_url: str, tmp_path: Path) -> Callable[..., Runtime]:
    opened: list[Runtime] = []

    def make(*, no_auth: bool = True) -> Runtime:
        runtime = open_runtime(Settings(data_dir=tmp_path, database_url=db_url, no_auth=no_auth))
        opened.append(runtime)
        return runtime

    yield make  # type: ignore[misc]
    for runtime in opened:
        runtime.close()


async def _client(runtime: Runtime) -> Client:
    app = create_app(runtime, run_worker=False)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", follow_redirects=False
    )


@pytest.fixture
async def local(make_runtime: Callable[..., Runtime]) -> AsyncIterator[tuple[Runtime, Client]]:
    runtime = make_runtime()
    async with await _client(runtime) as client:
        yield runtime, client


async def _csrf(client: Client, path: str) -> str:
    page = await client.get(path)
    match = CSRF.search(page.text)
    assert match, page.text[:500]
    return match.group(1)


async def _at_first_checkpoint(runtime: Runtime, **kwargs: Any) -> str:
    wf = await runtime.service.create_workflow(
        name=kwargs.pop("name", "flag"), prompt=kwargs.pop("prompt", "Add a flag"), **kwargs
    )
    await runtime.service.engine.worker.run_until_idle()
    return wf.id


async def test_list_shows_workflows_with_waiting_decisions_and_filters(
    local: tuple[Runtime, Client],
) -> None:
    runtime, client = local
    waiting = await _at_first_checkpoint(runtime, name="Waiting one")
    page = await client.get("/")
    assert page.status_code == 200
    assert (
        "Waiting one" in page.text and f'href="/workflows/{waiting}#decide">1 decision' in page.text
    )
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    done = await client.get("/", params={"status": WorkflowStatus.COMPLETED.value})
    assert "Waiting one" not in done.text and "No workflows with this status" in done.text
    bad = await client.get("/", params={"status": "nonsense"})
    assert bad.status_code == 422 and "unknown status" in bad.text


async def test_partial_answers_the_live_regions_as_json(local: tuple[Runtime, Client]) -> None:
    runtime, client = local
    wf_id = await _at_first_checkpoint(runtime)
    listing = await client.get("/?partial=1", headers={"Accept": "application/json"})
    assert set(listing.json()["regions"]) == {"list", "inbox_count"}
    page = await client.get(f"/workflows/{wf_id}?partial=1")
    body = page.json()
    assert set(body["regions"]) == {
        "header",
        "decision",
        "runs",
        "versions",
        "timeline",
    }
    assert body["last_event_id"] > 0
    assert 'data-checkpoint-id="' in body["regions"]["decision"]


async def test_the_form_creates_nothing_on_bad_input(
    local: tuple[Runtime, Client], tmp_path: Path
) -> None:
    runtime, client = local
    token = await _csrf(client, "/workflows/new")
    no_csrf = await client.post("/workflows/new", data={"name": "x", "prompt": "y"})
    assert no_csrf.status_code == 403
    base = {"csrf": token, "planner": "demo", "reviewers": ["demo", ""], "max_iterations": "3"}
    empty = await client.post("/workflows/new", data={**base, "name": " ", "prompt": "y"})
    assert empty.status_code == 422
    assert 'id="name-error"' in empty.text and 'aria-invalid="true"' in empty.text
    nowhere = await client.post(
        "/workflows/new",
        data={
            **base,
            "name": "n",
            "prompt": "p",
            "workspace_path": str(tmp_path / "does-not-exist"),
        },
    )
    assert nowhere.status_code == 422 and 'id="workspace_path-error"' in nowhere.text
    assert "does not exist" in nowhere.text
    assert 'value="n"' in nowhere.text  # what the person typed is kept
    assert re.search(r'<input id="workspace_path"[^>]*autofocus', nowhere.text)
    no_reviewer = await client.post(
        "/workflows/new", data={**base, "reviewers": ["", ""], "name": "n", "prompt": "p"}
    )
    assert 'id="reviewers-error"' in no_reviewer.text
    assert (await runtime.service.list_workflows()).items == []

    made = await client.post(
        "/workflows/new",
        data={**base, "reviewers": ["demo", "demo"], "name": "Made", "prompt": "Plan it"},
    )
    assert made.status_code == 303
    wf_id = made.headers["location"].rsplit("/", 1)[1]
    wf = await runtime.service.get_workflow(wf_id)
    assert (wf.name, wf.created_by, len(wf.agents["reviewers"])) == ("Made", "local", 2)


async def test_agent_html_is_escaped_in_the_page(local: tuple[Runtime, Client]) -> None:
    runtime, client = local
    wf_id = await _at_first_checkpoint(runtime, prompt="Plan <script>window.__xss=1</script>")
    page = await client.get(f"/workflows/{wf_id}")
    assert "<script>window.__xss" not in page.text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page.text


async def test_errors_are_pages_not_blanks(local: tuple[Runtime, Client]) -> None:
    _, client = local
    missing = await client.get("/workflows/nope")
    assert missing.status_code == 404
    assert "text/html" in missing.headers["content-type"] and "no workflow with id" in missing.text
    as_json = await client.get("/workflows/nope?partial=1", headers={"Accept": "application/json"})
    assert as_json.json()["error"]["code"] == "not_found"


async def test_login_sets_a_session_and_roles_limit_what_is_offered(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(no_auth=False)
    viewer = await create_token(runtime.db, name="vera", role=Role.VIEWER)
    async with await _client(runtime) as client:
        wf_id = await _at_first_checkpoint(runtime)
        first = await client.get("/inbox")
        assert first.status_code == 303 and first.headers["location"] == "/login?next=%2Finbox"
        token = await _csrf(client, "/login")
        wrong = await client.post("/login", data={"csrf": token, "token": "orc_nope"})
        assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
        forged = await client.post("/login", data={"csrf": "forged", "token": viewer})
        assert forged.status_code == 403

        ok = await client.post("/login", data={"csrf": token, "token": viewer, "next": "/inbox"})
        assert ok.status_code == 303 and ok.headers["location"] == "/inbox"
        cookies = {c.split("=", 1)[0]: c.lower() for c in ok.headers.get_list("set-cookie")}
        assert "httponly" in cookies["orchestra_session"]
        assert "samesite=strict" in cookies["orchestra_session"]
        assert "max-age=43200" in cookies["orchestra_session"]
        assert viewer.lower() not in " ".join(cookies.values())  # a session, not the token
        assert "orchestra_token" not in cookies

        page = await client.get(f"/workflows/{wf_id}")
        assert page.status_code == 200 and "vera" in page.text
        assert "data-action=" not in page.text and "deciding needs the reviewer role" in page.text
        assert 'href="/workflows/new"' not in page.text
        refused = await client.get("/workflows/new")
        assert refused.status_code == 403 and "may not create" in refused.text

        rotated = await _csrf(client, "/login")  # the login page's CSRF cookie is new
        assert rotated != token
        outside = await client.post(
            "/login", data={"csrf": rotated, "token": viewer, "next": "//evil.test/x"}
        )
        assert outside.headers["location"] == "/"


async def test_the_list_pages(local: tuple[Runtime, Client]) -> None:
    runtime, client = local
    for n in range(27):
        await runtime.service.create_workflow(name=f"wf-{n:02d}", prompt="p")
    first = await client.get("/")
    names = re.findall(r'class="wf-name">(wf-\d\d)<', first.text)
    assert len(names) == 25 and names[0] == "wf-26"  # newest first
    older = re.search(r'href="(/\?cursor=[^"]+)" rel="next"', first.text)
    assert older
    second = await client.get(older.group(1).replace("&amp;", "&"))
    rest = re.findall(r'class="wf-name">(wf-\d\d)<', second.text)
    assert sorted(names + rest) == [f"wf-{n:02d}" for n in range(27)]
    assert 'rel="next"' not in second.text and "← Newest" in second.text


async def test_a_failed_agent_renders_from_the_contract(local: tuple[Runtime, Client]) -> None:
    runtime, client = local
    wf_id = await _at_first_checkpoint(
        runtime, agents=use_agents(runtime.service, {"planner": demo(fail="error")})
    )
    page = await client.get(f"/workflows/{wf_id}")
    cp = (await runtime.service.get_workflow(wf_id)).pending_checkpoint
    assert cp is not None
    assert f'<h2 id="cp-title-{cp.id}">{cp.title}</h2>' in page.text
    for action in cp.actions:
        assert f'data-action="{action.name}"' in page.text
    manual = next(a for a in cp.actions if a.requires_content)
    button = re.search(rf'<button[^>]*data-action="{manual.name}"[^>]*>', page.text)
    assert button and "data-requires-content" in button.group(0)
    assert "the demo agent was configured to fail" in page.text
    assert f'data-status="{AgentRunStatus.FAILED.value}"' in page.text


async def test_a_page_starts_its_live_updates_where_the_running_hub_is(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the event hub running, a page takes its starting point from the hub (no
    database read; on PostgreSQL that read waits for the transactions in flight),
    and that point has every event up to it: the page's reads come after it."""
    runtime = make_runtime()
    wf_id = await _at_first_checkpoint(runtime)
    app = create_app(runtime, run_worker=False)
    hub = app.state.hub
    await hub.start()
    try:
        settled_end = await runtime.service.last_event_id()
        assert hub.position() == settled_end > 0

        async def no_database(*_: Any) -> int:
            raise AssertionError("the page asked the database for the log's end")

        monkeypatch.setattr(runtime.service, "last_event_id", no_database)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            listing = await client.get("/?partial=1", headers={"Accept": "application/json"})
            assert listing.json()["last_event_id"] == settled_end
            assert wf_id in listing.json()["regions"]["list"]
    finally:
        await hub.stop()
