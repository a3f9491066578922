"""Implement & Review with the fake ``claude`` and ``codex`` as the implementer (the
``implement`` scenario really writes a file in its working directory), configured
with ``resume = true``, on a git repository in a temporary folder: the file shows in
the code review's diff, and after request_changes the next run resumes the CLI's
own session (``--resume=<session>``, ``codex exec resume <thread>``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_helpers import FAKES, FakeAgents, fakelib
from tests.integration.test_plan_implement import decide, pending
from tests.support.engine import demo, use_agents
from tests.support.git_repo import git_repo as repo

from orchestra.domain.code import CodeChange
from orchestra.domain.models import Checkpoint, LineComment
from orchestra.domain.statuses import AgentRunStatus, WorkflowStatus
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.workflows.git_worktree import git

CLAUDE_SESSION = "0b7c9f1e-5a2d-4c1e-9f00-6d1c2b3a4e5f"  # what tests/fakes/claude prints
CODEX_THREAD = "0199a213-81c0-7800-8aa1-bbab2a035a53"  # what tests/fakes/codex prints


def _implementer(cli: str) -> dict[str, Any]:
    return {"adapter": cli, "options": {"path": str(FAKES / cli), "resume": True}}


async def start_with_fake(
    service: Orchestra, worker: Worker, ws: Path, cli: str, *, name: str = "fake change"
) -> Checkpoint:
    """A plan_implement workflow whose implementer is the fake ``cli``, at its first
    code review (the plan given as text; demo code reviewers)."""
    choice = use_agents(service, {"implementer": _implementer(cli), "code_reviewers": [demo()]})
    wf = await service.create_workflow(
        name=name,
        prompt="Implement it",
        type="plan_implement",
        workspace_path=str(ws),
        agents=choice,
        options={"plan": "Write the file the plan names."},
    )
    cp = await pending(service, worker, wf.id)
    assert cp.step_name == "code_ready_for_review", cp
    return cp


def _resumed(cli: str, argv: list[str]) -> str | None:
    """The session the fake was told to resume, or None."""
    if cli == "claude":
        found = [a.split("=", 1)[1] for a in argv if a.startswith("--resume=")]
        return found[0] if found else None
    if "resume" not in argv:
        return None
    assert argv[0] == "exec" and argv[-1] == "-"
    return argv[-2]  # codex exec … resume … SESSION -


@pytest.mark.slow
@pytest.mark.parametrize(("cli", "session"), [("claude", CLAUDE_SESSION), ("codex", CODEX_THREAD)])
async def test_a_fake_implementer_edits_the_worktree_and_resumes_its_session(
    cli: str,
    session: str,
    fakes: FakeAgents,
    service: Orchestra,
    worker: Worker,
    tmp_path: Path,
) -> None:
    fakes.scenario("implement")
    ws = repo(tmp_path / "ws")
    cp = await start_with_fake(service, worker, ws, cli)

    change = CodeChange.of(cp)
    assert change is not None
    assert [(f.path, f.added, f.removed) for f in change.files] == [(fakelib.IMPLEMENT_FILE, 3, 0)]
    assert "+# Implemented" in change.files[0].patch
    first = fakes.args()
    assert Path(first["cwd"]).resolve() == Path(change.worktree).resolve()
    assert _resumed(cli, first["argv"]) is None  # nothing to resume yet
    assert not (ws / fakelib.IMPLEMENT_FILE).exists()  # the person's checkout is untouched

    comment = LineComment(file=fakelib.IMPLEMENT_FILE, line=1, body="A better title, please.")
    cp2 = await decide(service, worker, cp, "request_changes", comments=[comment])
    assert cp2 is not None and cp2.step_name == "code_ready_for_review"
    assert _resumed(cli, fakes.args()["argv"]) == session
    assert "A better title, please." in fakes.prompt_file.read_text()

    history = await service.history(cp.workflow_id)
    implements = [r for r in history.agent_runs if r.step_name == "implement"]
    assert [r.status for r in implements] == [AgentRunStatus.COMPLETED] * 2
    assert implements[1].meta is not None and implements[1].meta.get("resumed_session") == session
    second = CodeChange.of(cp2)
    assert second is not None and second.files[0].added == 4  # the second run appended a line

    confirm = await decide(service, worker, cp2, "approve")
    assert confirm is not None and confirm.step_name == "confirm_commit"
    assert await decide(service, worker, confirm, "commit") is None
    wf = await service.get_workflow(cp.workflow_id)
    assert wf.status is WorkflowStatus.COMPLETED and wf.result is not None, wf.error
    committed = git(ws, "show", f"{wf.result['commit']}:{fakelib.IMPLEMENT_FILE}")
    assert committed.startswith(fakelib.IMPLEMENT_HEADER)
    assert committed.count("\n- ") == 2  # both runs' entries, as reviewed
