"""The ``orchestra`` command against a real server process (``--server``/``--token``),
on both databases: the interactive run over HTTP, and the same exit codes as
in local mode, mapped from the API's error responses."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.domain.models import History, Workflow
from orchestra.domain.statuses import CheckpointStatus, WorkflowStatus
from orchestra.workflows.git_worktree import create_worktree, git
from tests.acceptance.server import Api, ServerProcess, free_port, module_server
from tests.acceptance.test_cli_local import (
    MARKER,
    as_json,
    cli_env,
    command,
    editor_script,
    error_of,
    implement_start,
    ok,
    orchestra,
    watch_while,
    workflow_id_of,
)
from tests.conftest import BACKENDS
from tests.support.git_repo import git_repo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    yield from module_server(request, tmp_path_factory)


def remote(
    server: ServerProcess, tmp_path: Path, *args: str, who: str | None = "ana"
) -> subprocess.CompletedProcess[str]:
    """``orchestra ARGS`` with the server and ``who``'s token from the environment."""
    extra = {"ORCHESTRA_SERVER": server.base_url}
    if who is not None:
        extra["ORCHESTRA_TOKEN"] = server.tokens[who]
    return orchestra(tmp_path, None, *args, env=cli_env(tmp_path, **extra))


def test_remote_run_end_to_end(server: ServerProcess, tmp_path: Path) -> None:
    answers = "1\ny\n\n" + "1\nn\nall good\n"  # approve an edited plan, approve the reviews
    env = cli_env(tmp_path, EDITOR=str(editor_script(tmp_path)))
    result = subprocess.run(
        command(
            tmp_path,
            None,
            [
                "run",
                "Add a --json flag",
                "--server",
                server.base_url,
                "--token",
                server.tokens["ana"],
            ],
        ),
        input=answers,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    ok(result)
    workflow_id = workflow_id_of(result.stdout)
    assert "Consolidated view" in result.stdout

    history = History.model_validate(
        as_json(remote(server, tmp_path, "show", workflow_id, "--json"))
    )
    assert history.workflow.status is WorkflowStatus.COMPLETED
    assert history.workflow.created_by == "ana"
    assert [c.resolution.resolved_by for c in history.checkpoints if c.resolution] == ["ana", "ana"]
    reviewer_prompts = [r.prompt for r in history.agent_runs if r.job == "reviewer"]
    assert reviewer_prompts and all(MARKER in p for p in reviewer_prompts)


async def test_remote_commands_and_exit_codes(server: ServerProcess, tmp_path: Path) -> None:
    async with Api(server.base_url, server.tokens["ana"]) as api:
        created = await api.create_workflow(name="remote-cli")
        cp = await api.wait_for_checkpoint(created["id"], "plan_ready_for_review")
    workflow_id = created["id"]

    inbox = as_json(remote(server, tmp_path, "inbox", "--json"))
    assert cp["id"] in [c["id"] for c in inbox["items"]]
    listed = as_json(remote(server, tmp_path, "list", "--json"))
    assert workflow_id in [Workflow.model_validate(w).id for w in listed["items"]]
    assert "remote-cli" in ok(remote(server, tmp_path, "show", workflow_id)).stdout
    assert "remote-cli" in ok(remote(server, tmp_path, "inbox")).stdout

    unknown = remote(server, tmp_path, "resolve", cp["id"], "--action", "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr
    assert remote(server, tmp_path, "resolve", "missing", "--action", "approve").returncode == 3
    as_viewer = remote(server, tmp_path, "resolve", cp["id"], "--action", "approve", who="vic")
    assert as_viewer.returncode == 1
    anonymous = remote(server, tmp_path, "inbox", who=None)
    assert anonymous.returncode == 1 and "--token" in anonymous.stderr

    resolved = as_json(
        remote(server, tmp_path, "resolve", cp["id"], "--action", "approve", "--json")
    )
    assert resolved["status"] == CheckpointStatus.APPROVED.value
    assert resolved["resolution"]["resolved_by"] == "ana"
    again = remote(server, tmp_path, "resolve", cp["id"], "--action", "cancel")
    assert again.returncode == 4 and "resolved by ana" in again.stderr

    assert remote(server, tmp_path, "retry", workflow_id).returncode == 4

    async def cancel_it() -> None:
        ok(remote(server, tmp_path, "cancel", workflow_id))

    env = cli_env(tmp_path, ORCHESTRA_SERVER=server.base_url, ORCHESTRA_TOKEN=server.tokens["ana"])
    events = await watch_while(
        command(tmp_path, None, ["watch", workflow_id, "--json"]), env, cancel_it
    )
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    assert events[-1]["data"]["to"] == WorkflowStatus.CANCELLED.value
    assert remote(server, tmp_path, "cancel", workflow_id).returncode == 4


async def test_remote_errors_keep_the_api_code(server: ServerProcess, tmp_path: Path) -> None:
    """A remote 404 and a remote conflict end as they do locally (exit 3 and 4, the
    code in the message) and, with --json, print the API's own error body."""
    async with Api(server.base_url, server.tokens["ana"]) as api:
        created = await api.create_workflow(name="codes")
        cp = await api.wait_for_checkpoint(created["id"], "plan_ready_for_review")
        await api.post(f"/api/checkpoints/{cp['id']}/resolve", {"action": "approve"})
        answer = await api.client.post(
            f"/api/checkpoints/{cp['id']}/resolve", json={"action": "cancel"}
        )
        assert answer.status_code == 409
        api_conflict = answer.json()["error"]
        answer = await api.client.get("/api/checkpoints/no-such-checkpoint")
        assert answer.status_code == 404
        api_missing = answer.json()["error"]

    missing = remote(server, tmp_path, "resolve", "no-such-checkpoint", "-a", "approve", "--json")
    assert missing.returncode == 3 and missing.stdout == ""
    assert error_of(missing) == api_missing
    assert api_missing["code"] == "not_found"
    human = remote(server, tmp_path, "show", "no-such-workflow")
    assert human.returncode == 3 and "(not_found)" in human.stderr

    again = remote(server, tmp_path, "resolve", cp["id"], "--action", "cancel", "--json")
    assert again.returncode == 4 and again.stdout == ""
    assert error_of(again) == api_conflict
    assert api_conflict["code"] == "already_resolved"
    assert api_conflict["details"]["resolution"]["resolved_by"] == "ana"
    human = remote(server, tmp_path, "resolve", cp["id"], "--action", "cancel")
    assert human.returncode == 4 and "(already_resolved)" in human.stderr
    assert "resolved by ana" in human.stderr


def test_unreachable_server_exits_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = orchestra(tmp_path, None, "list", env=cli_env(tmp_path, ORCHESTRA_SERVER=url))
    assert result.returncode == 1 and "cannot reach the server" in result.stderr


def test_remote_implement_to_a_commit_and_worktrees(server: ServerProcess, tmp_path: Path) -> None:
    """``run --type plan_implement`` over HTTP: the code review, approve, commit (the
    server's worker does the git work); ``worktrees`` lists, ``--prune`` needs an admin."""
    ws = git_repo(tmp_path / "ws")
    orphan = create_worktree(ws, "left behind", "c3" * 16)
    answers = "1\nn\n\ncommit\nn\n\n"  # approve the code; commit as is
    extra = {"ORCHESTRA_SERVER": server.base_url, "ORCHESTRA_TOKEN": server.tokens["ana"]}
    result = orchestra(
        tmp_path,
        None,
        *implement_start(tmp_path, ws),
        input=answers,
        env=cli_env(tmp_path, **extra),
    )
    ok(result)
    assert "Code under review" in result.stdout and "Committed " in result.stdout
    shown = as_json(remote(server, tmp_path, "show", workflow_id_of(result.stdout), "--json"))
    wf = History.model_validate(shown).workflow
    assert wf.status is WorkflowStatus.COMPLETED and wf.result is not None
    assert git(ws, "rev-parse", wf.result["branch"]).strip() == wf.result["commit"]

    listed = as_json(remote(server, tmp_path, "worktrees", str(ws), "--json"))
    assert [(w["branch"], w["workflow_id"]) for w in listed] == [(orphan.branch, None)]
    refused = remote(server, tmp_path, "worktrees", str(ws), "--prune")
    assert refused.returncode == 1 and orphan.path.exists()  # a reviewer may not remove files
    pruned = ok(remote(server, tmp_path, "worktrees", str(ws), "--prune", who="root")).stdout
    assert "Removed 1 worktree(s)" in pruned and not orphan.path.exists()
    outside = remote(server, tmp_path, "worktrees", "/etc")
    assert outside.returncode == 2 and "workspace" in outside.stderr
