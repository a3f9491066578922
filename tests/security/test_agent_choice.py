"""Agents are the operator's choice (issue 12, items 1, 2, 6's caps and 7), attacked
through a real server on both databases: the API, the web form and the remote CLI.

Each attack is answered 422 (or refused at start-up), writes no workflow, runs no
program and sends no request anywhere.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.server import (
    Api,
    ServerProcess,
    free_port,
    module_server_fixture,
    start_server,
)
from tests.acceptance.test_cli_local import cli_env, orchestra

pytestmark = pytest.mark.slow

#: The server's cap on agent timeouts (``max_agent_timeout_s``), lowered from 3600.
CAP_S = 900
#: No ORCHESTRA_ALLOWED_ROOTS: the defaults (the home and data directories) apply.
server = module_server_fixture(
    env={"ORCHESTRA_ALLOWED_ROOTS": "", "ORCHESTRA_MAX_AGENT_TIMEOUT_S": str(CAP_S)}
)

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def rce(marker: Path) -> dict[str, Any]:
    """The payload that ran ``id`` on the server: codex with a chosen program and args."""
    return {
        "adapter": "codex",
        "options": {"path": "npm", "extra_args": ["-c", f"id > {marker}", "--tag"]},
    }


class Receiver:
    """A local HTTP endpoint that records every request it gets (the exfiltration target)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(("POST", self.path, dict(self.headers)))
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b'{"error": {"message": "internal details"}}')

            do_GET = do_POST

            def log_message(self, *_: Any) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.stop()


def exfiltration(port: int) -> dict[str, Any]:
    return {
        "adapter": "openai",
        "options": {
            "base_url": f"http://127.0.0.1:{port}",
            "api_key_env": "ORCHESTRA_DATABASE_URL",
            "model": "x",
        },
    }


async def _workflow_ids(api: Api) -> set[str]:
    page = await api.get("/api/workflows", params={"limit": 500})
    return {wf["id"] for wf in page["items"]}


async def _refused(api: Api, body: dict[str, Any], field: str) -> dict[str, Any]:
    """POST a workflow; assert a 422 naming ``field`` and listing the configured agents,
    and that no workflow was written."""
    before = await _workflow_ids(api)
    r = await api.client.post(
        "/api/workflows", json={"name": "attack", "prompt": "Plan it", **body}
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    assert field in error["message"], error
    assert await _workflow_ids(api) == before
    return dict(error)


async def _worker_caught_up(api: Api) -> None:
    """Wait until the server's worker has run a workflow created now: work written
    before it (had an attack written any; ``_refused`` checks it did not) was handed to
    the worker first, so its agent has been started by then."""
    wf = await api.create_workflow()
    await api.wait_for_checkpoint(wf["id"], "plan_ready_for_review")


# -- 1. no client-chosen program, arguments, permission mode or sandbox -----------


async def test_the_rce_payload_is_refused_as_planner_and_as_reviewer(
    server: ServerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "x"
    async with Api(server.base_url, server.tokens["ana"]) as ana:
        planner = await _refused(ana, {"agents": {"planner": rce(marker)}}, "agents.planner")
        assert "demo" in planner["message"] and "configured agent" in planner["message"]
        assert "demo" in planner["details"]["configured"]
        await _refused(ana, {"agents": {"reviewers": ["demo", rce(marker)]}}, "agents.reviewers[1]")
        await _worker_caught_up(ana)
    assert not marker.exists()


@pytest.mark.parametrize(
    "smuggled",
    [
        {"adapter": "claude", "options": {"permission_mode": "bypassPermissions"}},
        {"adapter": "codex", "options": {"sandbox": "danger-full-access"}},
        {"adapter": "demo", "options": {"delay_s": 86_400}},
        {"adapter": "demo", "timeout_s": 86_400},
        "codex",  # an installed adapter that is not a configured agent
        "no-such-agent",
        ["demo"],
    ],
    ids=["permission_mode", "sandbox", "delay", "timeout", "bare-adapter", "unknown", "list"],
)
async def test_adapters_options_and_unknown_names_are_refused(
    server: ServerProcess, smuggled: Any
) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as ana:
        await _refused(ana, {"agents": {"planner": smuggled}}, "agents.planner")
        await _refused(ana, {"agents": {"reviewers": [smuggled]}}, "agents.reviewers[0]")


async def test_configured_names_are_accepted(server: ServerProcess) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as ana:
        wf = await ana.create_workflow(agents={"planner": "demo", "reviewers": ["demo-slow"]})
    assert wf["agents"]["planner"]["name"] == "demo"
    assert [r["name"] for r in wf["agents"]["reviewers"]] == ["demo-slow"]


# -- 2. no client-chosen URL or key variable -----------------------------------------


async def test_the_key_exfiltration_is_refused_and_nothing_is_sent(
    server: ServerProcess, receiver: Receiver
) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as ana:
        await _refused(ana, {"agents": {"planner": exfiltration(receiver.port)}}, "planner")
        await _refused(
            ana, {"agents": {"reviewers": [exfiltration(receiver.port)]}}, "reviewers[0]"
        )
        await _worker_caught_up(ana)
    assert receiver.requests == []


# -- the same attacks through the web form and the remote CLI -----------------------


async def _form_session(server: ServerProcess, client: httpx.AsyncClient) -> str:
    """Log in through the login form; return the new-workflow form's CSRF token."""
    login = await client.get("/login")
    token = CSRF.search(login.text)
    assert token, login.text[:300]
    r = await client.post("/login", data={"csrf": token.group(1), "token": server.tokens["ana"]})
    assert r.status_code in (302, 303), r.text[:300]
    form = await client.get("/workflows/new")
    assert form.status_code == 200
    csrf = CSRF.search(form.text)
    assert csrf
    return csrf.group(1)


@pytest.mark.parametrize(
    "planner", ["codex", '{"adapter": "codex", "options": {"path": "npm"}}', "demo:delay_s=5"]
)
async def test_the_web_form_takes_configured_names_only(
    server: ServerProcess, planner: str
) -> None:
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser,
        Api(server.base_url, server.tokens["ana"]) as ana,
    ):
        csrf = await _form_session(server, browser)
        before = await _workflow_ids(ana)
        r = await browser.post(
            "/workflows/new",
            data={
                "csrf": csrf,
                "name": "attack",
                "prompt": "Plan it",
                "planner": planner,
                "reviewers": ["demo"],
                "max_iterations": "3",
            },
        )
        assert r.status_code == 422, r.text[:300]
        assert "configured agent" in r.text
        assert await _workflow_ids(ana) == before


def test_the_remote_cli_takes_configured_names_only(server: ServerProcess, tmp_path: Path) -> None:
    env = cli_env(tmp_path, ORCHESTRA_SERVER=server.base_url, ORCHESTRA_TOKEN=server.tokens["ana"])
    marker = tmp_path / "x"
    inline = f"codex:path=npm,extra_args=-c id > {marker}"
    refused = orchestra(tmp_path, None, "run", "Plan it", "--planner", inline, env=env)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "configured agent" in refused.stderr and "agents file" in refused.stderr
    unknown = orchestra(tmp_path, None, "run", "Plan it", "--reviewer", "codex", env=env)
    assert unknown.returncode != 0
    assert "must be the name of a configured agent" in unknown.stderr
    assert "No workflow was created" in unknown.stderr or "created" not in unknown.stdout
    assert not marker.exists()


# -- the agents file is checked at start-up -----------------------------------------


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        (
            '[agents.gpt]\nadapter = "openai"\n[agents.gpt.options]\nmodel = "x"\n'
            'api_key_env = "ORCHESTRA_X"\n',
            "ORCHESTRA_X",
        ),
        (
            '[agents.gpt]\nadapter = "openai"\n[agents.gpt.options]\nmodel = "x"\n'
            'api_key_env = "DATABASE_URL"\n',
            "DATABASE_URL",
        ),
        ('[agents.slow]\nadapter = "demo"\ntimeout_s = 7200\n', "agents.slow.timeout_s"),
        ("[jobs]\nplanner_timeout_s = 4000\n", "jobs.planner_timeout_s"),
        ('[agents.slow]\nadapter = "demo"\n[agents.slow.options]\ndelay_s = 601\n', "delay_s"),
        ('[agents.c]\nadapter = "claude"\n[agents.c.options]\nmodel = ["x"]\n', "'model'"),
        ('[agents.d]\nadapter = "demo"\n[agents.d.options]\nfail = "sometimes"\n', "'fail'"),
    ],
    ids=["orchestra-key", "database-url-key", "timeout", "role-timeout", "delay", "type", "fail"],
)
def test_a_bad_agents_file_stops_start_up(tmp_path: Path, toml: str, says: str) -> None:
    data_dir = tmp_path / "srv"
    data_dir.mkdir()
    (data_dir / "orchestra.toml").write_text(toml)
    url = f"sqlite:///{tmp_path / 'orchestra.db'}"
    with pytest.raises(RuntimeError, match="server exited") as refused:
        start_server(url, data_dir).stop()
    assert says in str(refused.value)


# -- 3. the retry's timeout is capped by max_agent_timeout_s -------------------------


async def test_the_retry_timeout_is_capped_by_the_configured_maximum(
    server: ServerProcess,
) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as ana:
        wf = await ana.create_workflow(agents={"planner": "demo-failing"})
        cp = await ana.wait_for_checkpoint(wf["id"], "agent_problem")
        retry = next(a for a in cp["actions"] if a["name"] == "retry")
        assert retry["inputs"][0]["maximum"] == CAP_S  # the contract shows the real cap
        path = f"/api/checkpoints/{cp['id']}/resolve"
        r = await ana.client.post(path, json={"action": "retry", "inputs": {"timeout_s": 901}})
        assert r.status_code == 422, r.text
        assert f"between 1 and {CAP_S}" in r.json()["error"]["message"]
        assert (await ana.get(f"/api/checkpoints/{cp['id']}"))["status"] == "pending"
        await ana.post(path, {"action": "retry", "inputs": {"timeout_s": CAP_S}})


# -- 4. workspaces: the home and data directories, not the system's -------------------


@pytest.mark.parametrize("where", ["/", "/etc", "~/.ssh", "/usr/bin", "~/.aws"])
async def test_system_and_secret_workspaces_are_refused(server: ServerProcess, where: str) -> None:
    ssh = Path("~/.ssh").expanduser()
    had = sorted(ssh.iterdir()) if ssh.is_dir() else None
    async with Api(server.base_url, server.tokens["ana"]) as ana:
        error = await _refused(ana, {"workspace_path": where}, where)
    assert "ORCHESTRA_ALLOWED_ROOTS" in error["message"] and "allowed_roots" in error["message"]
    assert (sorted(ssh.iterdir()) if ssh.is_dir() else None) == had


async def test_a_symlink_is_checked_where_it_leads(server: ServerProcess) -> None:
    data_dir = server.log_path.parent
    link = data_dir / "looks-local"
    if not link.exists():
        link.symlink_to("/etc")
    inside = data_dir / "project"
    inside.mkdir(exist_ok=True)
    async with Api(server.base_url, server.tokens["ana"]) as ana:
        await _refused(ana, {"workspace_path": str(link)}, "looks-local")
        wf = await ana.create_workflow(workspace_path=str(inside))  # the data directory: fine
    assert wf["workspace_path"] == str(inside.resolve())
