"""Implement & Review over HTTP only, against a real server process, on both
databases: a git repository in a temporary folder, from a plan to a commit on the
workflow's branch, with the diff and findings as data, line comments, and bad
input answered with a 4xx that says what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.workflows.git_worktree import create_worktree, git, list_worktrees
from tests.acceptance.server import Api, ServerProcess, module_server_fixture
from tests.support.git_repo import git_repo

pytestmark = pytest.mark.slow

server = module_server_fixture()

CODE_READY = "code_ready_for_review"


async def test_implement_over_http(server: ServerProcess, tmp_path: Path) -> None:
    ws = git_repo(tmp_path / "ws")
    async with Api(server.base_url, server.tokens["ana"]) as api:
        wf = await api.create_workflow(
            name="demo change",
            type="plan_implement",
            workspace_path=str(ws),
            options={"plan": "Write the demo file."},
        )
        wid = wf["id"]
        cp = await api.wait_for_checkpoint(wid, CODE_READY)
        code = await api.get(f"/api/checkpoints/{cp['id']}/code")
        assert code["branch"] == f"orchestra/demo-change-{wid[:8]}"
        assert [f["path"] for f in code["files"]] == ["ORCHESTRA_DEMO.md"]
        assert code["files"][0]["patch"].startswith("diff --git")
        assert {(f["file"], f["line"]) for f in code["findings"]} == {("ORCHESTRA_DEMO.md", 1)}
        request_changes = next(a for a in cp["actions"] if a["name"] == "request_changes")
        assert request_changes["takes_comments"] is True

        comment = {"file": "ORCHESTRA_DEMO.md", "line": 1, "body": "Use a better title."}
        await api.post(
            f"/api/checkpoints/{cp['id']}/resolve",
            {"action": "request_changes", "comments": [comment]},
        )
        cp2 = await api.wait_for_checkpoint(wid, CODE_READY)
        assert cp2["id"] != cp["id"]
        history = await api.get(f"/api/workflows/{wid}/history")
        first = next(c for c in history["checkpoints"] if c["id"] == cp["id"])
        assert first["resolution"]["comments"] == [comment]
        prompts = [r["prompt"] for r in history["agent_runs"] if r["step_name"] == "implement"]
        assert "- `ORCHESTRA_DEMO.md` line 1:\n\nUse a better title.\n" in prompts[-1]

        await api.post(f"/api/checkpoints/{cp2['id']}/resolve", {"action": "approve"})
        confirm = await api.wait_for_checkpoint(wid, "confirm_commit")
        await api.post(
            f"/api/checkpoints/{confirm['id']}/resolve",
            {"action": "commit", "edited_content": "Demo file\n"},
        )
        done = await api.wait_for_status(wid, "completed")
        commit = done["result"]["commit"]
        assert git(ws, "rev-parse", done["result"]["branch"]).strip() == commit
        assert git(ws, "log", "-1", "--format=%s", commit).strip() == "Demo file"
        assert list_worktrees(ws) == []
        runs = {
            r["step_name"]: r
            for r in (await api.get(f"/api/workflows/{wid}/history"))["agent_runs"]
        }
        assert runs["finish"]["meta"]["commit"] == commit  # the commit the decision produced


async def test_bad_implement_requests_are_4xx_and_write_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    ws = git_repo(tmp_path / "ws")
    async with Api(server.base_url, server.tokens["ana"]) as api:
        before = (await api.get("/api/workflows", params={"limit": 500}))["items"]
        cases = [
            ({"workspace_path": str(plain)}, "not a git repository"),
            ({"workspace_path": str(ws), "options": {"plan": 3}}, "options.plan"),
            ({"workspace_path": str(ws), "options": {"command": ["sh"]}}, "options.command"),
            ({"workspace_path": str(ws), "agents": {"implementer": "sh -c id"}}, "configured"),
            ({}, "needs a workspace_path"),
        ]
        for body, says in cases:
            r = await api.client.post(
                "/api/workflows",
                json={"name": "x", "prompt": "y", "type": "plan_implement", **body},
            )
            assert r.status_code == 422, (body, r.text)
            assert says in r.json()["error"]["message"], (body, r.json())
        after = (await api.get("/api/workflows", params={"limit": 500}))["items"]
        assert after == before
        assert not (plain / ".orchestra").exists()

        wf = await api.create_workflow(
            name="c", type="plan_implement", workspace_path=str(ws), options={"plan": "Do it."}
        )
        cp = await api.wait_for_checkpoint(wf["id"], CODE_READY)
        for comments, field in (
            ([{"file": "a", "line": 0, "body": "x"}], "line"),
            ([{"file": "a", "line": 1, "body": ""}], "body"),
            ([{"file": "a", "line": 1}], "body"),
        ):
            r = await api.client.post(
                f"/api/checkpoints/{cp['id']}/resolve",
                json={"action": "request_changes", "comments": comments},
            )
            assert r.status_code == 422 and field in r.text, r.text
        r = await api.client.post(
            f"/api/checkpoints/{cp['id']}/resolve",
            json={"action": "discard", "comments": [{"file": "a", "line": 1, "body": "x"}]},
        )
        assert r.status_code == 422 and "takes no line comments" in r.json()["error"]["message"]
        assert (await api.get(f"/api/checkpoints/{cp['id']}"))["status"] == "pending"
        r = await api.client.get(f"/api/checkpoints/{'0' * 32}/code")
        assert r.status_code == 404


async def test_worktrees_are_listed_and_left_behind_ones_pruned_by_an_admin(
    server: ServerProcess, tmp_path: Path
) -> None:
    ws = git_repo(tmp_path / "ws")
    orphan = create_worktree(ws, "left behind", "c3" * 16)  # no workflow knows it
    async with (
        Api(server.base_url, server.tokens["ana"]) as api,
        Api(server.base_url, server.tokens["root"]) as admin,
    ):
        wf = await api.create_workflow(
            name="live", type="plan_implement", workspace_path=str(ws), options={"plan": "Do."}
        )
        await api.wait_for_checkpoint(wf["id"], CODE_READY)
        listed = await api.get("/api/worktrees", params={"workspace_path": str(ws)})
        owners = {w["branch"]: (w["workflow_id"], w["workflow_status"]) for w in listed}
        assert owners == {
            orphan.branch: (None, None),
            f"orchestra/live-{wf['id'][:8]}": (wf["id"], "awaiting_checkpoint"),
        }
        r = await api.client.post("/api/worktrees/prune", json={"workspace_path": str(ws)})
        assert r.status_code == 403  # removing files is an admin's call
        left = await admin.post("/api/worktrees/prune", {"workspace_path": str(ws)})
        assert [w["workflow_id"] for w in left] == [wf["id"]]
        assert not orphan.path.exists()
        assert orphan.branch in git(ws, "branch", "--format=%(refname:short)").split()
        plain = tmp_path / "plain"
        plain.mkdir()
        r = await admin.client.post("/api/worktrees/prune", json={"workspace_path": str(plain)})
        assert r.status_code == 422 and "not a git repository" in r.json()["error"]["message"]
        r = await api.client.get("/api/worktrees", params={"workspace_path": "/etc"})
        assert r.status_code == 422 and "workspace" in r.json()["error"]["message"]
