"""Starting Implement & Review from the CLI: the start options, refused in bad
combinations before anything is opened (exit 2), and what the remote backend sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestra.cli.main import app
from orchestra.cli.remote import RemoteBackend
from orchestra.cli.render import worktrees_table
from orchestra.domain.code import WorktreeInfo
from orchestra.domain.errors import InvalidInput


def _cli(tmp_path: Path, *args: str) -> Any:
    env = {"ORCHESTRA_CONFIG": str(tmp_path / "orchestra.toml"), "COLUMNS": "200"}
    return CliRunner().invoke(app, ["--data-dir", str(tmp_path), *args], env=env)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "x", "--implementer", "demo"], "only for --type plan_implement"),
        (["run", "x", "--code-reviewer", "demo", "--keep-worktree"], "--code-reviewer, --keep"),
        (["run", "x", "--type", "plan_implement"], "needs --workspace"),
        (["run", "--resume", "abc", "--implementer", "demo"], "--resume continues a workflow"),
        (["run", "--resume", "abc", "--type", "plan_implement"], "--type"),
        (["run", "x", "--type", "plan_implement", "--implementer", "claude:x=1"], "agents file"),
        (["run", "x", "--type", "plan_implement", "--plan-file", "/nonexistent/p.md"], "cannot"),
        (["implement", "abc", "--code-reviewer", "a=b"], "agents file"),
    ],
)
def test_bad_combinations_exit_2_and_open_nothing(
    tmp_path: Path, args: list[str], says: str
) -> None:
    result = _cli(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()), result.output
    assert not (tmp_path / "orchestra.db").exists()


@pytest.mark.parametrize(
    ("content", "says"), [(b"  \n", "is empty"), (b"\xff\xfe plan", "not UTF-8")]
)
def test_a_plan_file_must_be_text(tmp_path: Path, content: bytes, says: str) -> None:
    plan = tmp_path / "plan.md"
    plan.write_bytes(content)
    args = ["run", "x", "--type", "plan_implement", "--workspace", str(tmp_path)]
    result = _cli(tmp_path, *args, "--plan-file", str(plan))
    assert result.exit_code == 2 and says in result.output, result.output
    assert not (tmp_path / "orchestra.db").exists()


def _backend(answer: Any) -> RemoteBackend:
    backend = RemoteBackend("http://orchestra.test", "t0ken")
    backend.client = httpx.AsyncClient(
        base_url=backend.where,
        headers=backend.client.headers,
        transport=httpx.MockTransport(answer),
    )
    return backend


async def test_the_remote_backend_sends_type_options_and_from_workflow() -> None:
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(422, json={"error": {"code": "invalid_input", "message": "no"}})

    backend = _backend(answer)
    try:
        with pytest.raises(InvalidInput):
            await backend.create_workflow(
                name="n",
                prompt="p",
                workspace_path=None,
                agents={"implementer": "demo"},
                max_iterations=2,
                type="plan_implement",
                options={"plan": "Do it.", "keep_worktree": True},
                from_workflow="abc",
            )
    finally:
        await backend.aclose()
    assert sent == [
        {
            "name": "n",
            "type": "plan_implement",
            "prompt": "p",
            "max_iterations": 2,
            "agents": {"implementer": "demo"},
            "options": {"plan": "Do it.", "keep_worktree": True},
            "from_workflow": "abc",
        }
    ]


async def test_the_remote_backend_lists_and_prunes_worktrees() -> None:
    seen: list[tuple[str, str, bytes]] = []
    left = [WorktreeInfo(path="/r/.orchestra/worktrees/a-1", branch="orchestra/a-1")]

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), request.content))
        return httpx.Response(200, json=[w.model_dump(mode="json") for w in left])

    backend = _backend(answer)
    try:
        assert await backend.worktrees("/r", prune=False) == left
        assert await backend.worktrees("/r", prune=True) == left
    finally:
        await backend.aclose()
    assert seen == [
        ("GET", "http://orchestra.test/api/worktrees?workspace_path=%2Fr", b""),
        ("POST", "http://orchestra.test/api/worktrees/prune", b'{"workspace_path":"/r"}'),
    ]


def test_the_worktrees_table_fits_80_columns_and_names_the_left_behind() -> None:
    repo = "/home/someone/projects/a-rather-long-repository-name"
    items = [
        WorktreeInfo(
            path=f"{repo}/.orchestra/worktrees/add-a-json-flag-to-the-list-command-0123abcd",
            branch="orchestra/add-a-json-flag-to-the-list-command-0123abcd",
            workflow_id="0123abcd" + "e" * 24,
            workflow_status="awaiting_checkpoint",
        ),
        WorktreeInfo(path=f"{repo}/.orchestra/worktrees/[bold]x[/]-c3c3c3c3", branch=None),
    ]
    table = worktrees_table(repo, items)
    out = Console(width=80, record=True, color_system=None)
    out.print(table)
    assert max(len(line) for line in out.export_text().splitlines()) <= 80
    rows = [[str(cell) for cell in column.cells] for column in table.columns]
    assert list(zip(*rows, strict=True)) == [
        (
            ".orchestra/worktrees/add-a-json-flag-to-the-list-command-0123abcd",
            "orchestra/add-a-json-flag-to-the-list-command-0123abcd",
            "0123abcd",
            "awaiting_checkpoint",
        ),
        (".orchestra/worktrees/[bold]x[/]-c3c3c3c3", "—", "—", "left behind"),  # text, not markup
    ]
