"""A hostile file name written by the implementer (issue 15) goes through the whole
Implement & Review workflow to a commit as a name: a shell substitution, a name that
reads as an option, one that reads as rich markup. Nothing executes (no PWNED file
anywhere), the diff names exactly that file, the commit holds it, and the real
``orchestra`` process shows it and takes a line comment on it literally."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.domain.code import CodeChange
from orchestra.domain.models import LineComment
from orchestra.domain.statuses import WorkflowStatus
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.workflows.git_worktree import git
from tests.acceptance.test_cli_local import ok, orchestra
from tests.integration.test_plan_implement import decide, pending
from tests.support.engine import demo, use_agents
from tests.support.git_repo import git_repo as repo

pytestmark = pytest.mark.slow

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "fakes" / "claude"
HOSTILE_NAMES = [
    "$(touch PWNED)`touch PWNED2`;x.md",
    "--output=PWNED3",  # as an option, git diff would write a file of that name
    "-rf x.md",
    "[bold]x[/]",
    "a:1:b $(touch PWNED4).md",  # ':<digits>:' inside the name, as --comment splits it
]


def _pwned(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("PWNED*")]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_a_hostile_file_name_is_only_ever_a_name(
    name: str,
    service: Orchestra,
    worker: Worker,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_AGENT_SCENARIO", "implement")
    monkeypatch.setenv("FAKE_IMPLEMENT_FILE", name)
    ws = repo(tmp_path / "ws")
    implementer = {"adapter": "claude", "options": {"path": str(FAKE_CLAUDE)}}
    wf = await service.create_workflow(
        name="hostile $(touch PWNED5) [bold]name[/]",
        prompt="Implement it",
        type="plan_implement",
        workspace_path=str(ws),
        agents=use_agents(service, {"implementer": implementer, "code_reviewers": [demo()]}),
        options={"plan": "Write the file."},
    )
    cp = await pending(service, worker, wf.id)
    change = CodeChange.of(cp)
    assert change is not None
    assert [f.path for f in change.files] == [name]

    shown = ok(orchestra(tmp_path, db_url, "show", wf.id)).stdout
    assert f"{name}  +3 −0" in shown  # the name as it is, not styled or split
    tree = ok(orchestra(tmp_path, db_url, "worktrees", str(ws))).stdout
    assert wf.id[:8] in tree

    comment = f"--comment={name}:1:Rename it."  # one argument: a leading '-' stays a value
    ok(orchestra(tmp_path, db_url, "resolve", cp.id, "-a", "request_changes", comment))
    await worker.run_until_idle()
    stored = await service.get_checkpoint(cp.id)
    assert stored.resolution is not None
    assert stored.resolution.comments == [LineComment(file=name, line=1, body="Rename it.")]
    cp2 = await pending(service, worker, wf.id)
    confirm = await decide(service, worker, cp2, "approve")
    assert confirm is not None and confirm.step_name == "confirm_commit"
    assert await decide(service, worker, confirm, "commit") is None

    done = await service.get_workflow(wf.id)
    assert done.status is WorkflowStatus.COMPLETED and done.result is not None, done.error
    listed = git(ws, "ls-tree", "-r", "-z", "--name-only", done.result["commit"])
    assert sorted(listed.split("\0")[:-1]) == sorted(["app.py", name])
    assert "Committed " in ok(orchestra(tmp_path, db_url, "show", wf.id)).stdout
    assert _pwned(tmp_path, Path.cwd()) == []
