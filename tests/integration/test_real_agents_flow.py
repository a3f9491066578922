"""Plan & Review with the real adapters, driven by the fake CLIs and the fake model
server, on both databases (issue 4: structured reviews, failures as decisions, plans
on disk, the mixed workflow).

Each fake CLI runs behind a small wrapper program with its own scenario file, so
one agent of a workflow can misbehave while the others answer (the fakes read one
``FAKE_AGENT_SCENARIO``; ``ORCHESTRA_*`` would be scrubbed from the child's
environment anyway).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestra.agents.config import parse_agents_config
from orchestra.domain.models import Checkpoint
from orchestra.domain.statuses import AgentRunStatus, WorkflowStatus
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.workflows import plan_review
from orchestra.workflows.plan_files import sync_plan, workflow_slug
from orchestra.workflows.reviews import REVIEW_SCHEMA
from tests.agents.agent_helpers import FAKES, fakelib, model_server, process_alive
from tests.support.engine import decide, demo, pending, runs, use_agents
from tests.support.waiting import eventually

#: The fake model server answers with a JSON review when the prompt carries this, and
#: the task is part of every reviewer's prompt.
TASK = "Add a --json flag to `orchestra list`. REVIEW_JSON"
CLAUDE_PLAN = "# Plan\n\n1. Read the code.\n2. Change it.\n3. Test it.\n"
GEMINI_TEXT = "# Plan\n\n1. Read the code.\n2. Change it.\n"
PLAN_READY = plan_review.PLAN_READY
REVIEWS_READY = plan_review.REVIEWS_READY
AGENT_PROBLEM = plan_review.AGENT_PROBLEM


@dataclass
class FakeCli:
    """A fake CLI behind a wrapper with its own scenario and argument files."""

    kind: str
    home: Path

    @property
    def path(self) -> Path:
        return self.home / self.kind  # named like the real program, for the messages

    def scenario(self, name: str) -> None:
        (self.home / "scenario").write_text(name)

    def args(self) -> dict[str, Any]:
        return dict(json.loads((self.home / "args.json").read_text()))

    def entry(self, timeout_s: float | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.kind,
            "adapter": self.kind,
            "options": {"path": str(self.path), "kill_grace_s": 0.5},
        }
        if timeout_s is not None:
            entry["timeout_s"] = timeout_s
        return entry


@dataclass
class Setup:
    tmp: Path
    workspace: Path
    server: Any

    def cli(self, kind: str, scenario: str = "success", name: str | None = None) -> FakeCli:
        home = self.tmp / "bin" / (name or kind)
        home.mkdir(parents=True)
        cli = FakeCli(kind, home)
        cli.scenario(scenario)
        q = shlex.quote
        cli.path.write_text(
            "#!/bin/sh\n"
            f"FAKE_AGENT_SCENARIO=$(cat {q(str(home / 'scenario'))})\n"
            f"FAKE_AGENT_ARGS_FILE={q(str(home / 'args.json'))}\n"
            "export FAKE_AGENT_SCENARIO FAKE_AGENT_ARGS_FILE\n"
            f'exec {q(str(FAKES / kind))} "$@"\n'
        )
        cli.path.chmod(0o755)
        return cli

    def http(self, adapter: str, mode: str = "ok", **options: Any) -> dict[str, Any]:
        base = (
            self.server.openai_base(mode)
            if adapter == "openai"
            else self.server.anthropic_base(mode)
        )
        return {
            "name": adapter,
            "adapter": adapter,
            "options": {"base_url": base, "model": "fake-model", **options},
        }

    def posts(self) -> int:
        return sum(1 for r in self.server.requests if r["method"] == "POST")

    def plans_dir(self, workflow_id: str, name: str) -> Path:
        return self.workspace / ".orchestra" / "plans" / workflow_slug(workflow_id, name)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    monkeypatch.delenv("FAKE_AGENT_SCENARIO", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("FAKE_AGENT_PID_FILE", str(tmp_path / "pids.txt"))
    server = model_server.FakeModelServer().start()
    try:
        yield Setup(tmp_path, workspace, server)
    finally:
        server.stop()


async def _create(
    service: Orchestra,
    worker: Worker,
    setup: Setup,
    planner: dict[str, Any],
    reviewers: list[dict[str, Any]] | None = None,
    *,
    name: str = "Real agents",
    step: str = PLAN_READY,
) -> Checkpoint:
    wf = await service.create_workflow(
        name=name,
        prompt=TASK,
        workspace_path=str(setup.workspace),
        agents=use_agents(service, {"planner": planner, "reviewers": reviewers or [demo()]}),
    )
    await worker.run_until_idle()
    return await pending(service, wf.id, step)


# -- the mixed workflow ------------------------------------------------------------------


async def test_mixed_workflow_completes_with_structured_reviews_usage_and_plan_files(
    service: Orchestra, worker: Worker, setup: Setup
) -> None:
    claude, codex, gemini = setup.cli("claude"), setup.cli("codex"), setup.cli("gemini")
    # a 429 first: retried inside the adapter, never a checkpoint
    openai = setup.http("openai", "429-once", usd_per_mtok_in=2.0, usd_per_mtok_out=8.0)
    plan_cp = await _create(
        service, worker, setup, claude.entry(), [codex.entry(), gemini.entry(), openai]
    )
    wf_id = plan_cp.workflow_id
    plans = setup.plans_dir(wf_id, "Real agents")

    # the planner's answer is the plan, on the checkpoint and on disk
    assert plan_cp.editable_content == CLAUDE_PLAN
    assert [o.agent for o in plan_cp.agent_outputs] == ["planner (claude)"]

    async def plan_on_disk() -> bool:
        # the worker writes it right after the commit that made the checkpoint visible
        return (plans / "plan-v1.md").exists()

    await eventually(plan_on_disk, what="plan-v1.md in the workspace")
    assert (plans / "plan-v1.md").read_text() == CLAUDE_PLAN
    assert Path(claude.args()["cwd"]).resolve() == setup.workspace.resolve()

    # the person's edit goes to every reviewer and replaces plan v1 on disk
    edited = CLAUDE_PLAN + "4. Document the flag.\n"
    wf = await decide(service, worker, plan_cp, "approve", edited_content=edited)
    assert (plans / "plan-v1.md").read_text() == edited
    review_cp = await pending(service, wf.id, REVIEWS_READY)
    reviewer_runs = await runs(service, wf_id, job="reviewer")
    assert len(reviewer_runs) == 3
    assert all("4. Document the flag." in (r.prompt or "") for r in reviewer_runs)

    # structured where the agent gave a review (schema flag or instruction), plain text else
    assert "--output-schema" in codex.args()["argv"]
    consolidation = review_cp.consolidation
    assert consolidation is not None
    assert {v.agent: v.verdict for v in consolidation.verdicts} == {
        "reviewer-1 (codex)": "approve_with_changes",
        "reviewer-2 (gemini)": None,
        "reviewer-3 (openai)": "approve",
    }
    assert consolidation.agreement.startswith("Reviewers differ")
    outputs = {o.agent: o for o in review_cp.agent_outputs}
    assert outputs["reviewer-2 (gemini)"].content == GEMINI_TEXT
    assert outputs["reviewer-2 (gemini)"].structured is None
    assert outputs["reviewer-1 (codex)"].structured is not None
    assert "## Review by reviewer-2 (gemini)" in (review_cp.editable_content or "")

    # content, tokens and cost of every run, as each agent reported them
    usage = {
        r.agent: (r.tokens_in, r.tokens_out, r.cost_usd)
        for r in await runs(service, wf_id, iteration=1)
    }
    assert usage == {
        "planner": (1200 + 128, 449, pytest.approx(0.15)),
        "reviewer-1": (2400, 310, None),
        "reviewer-2": (4800, 320, None),
        "reviewer-3": (42, 7, pytest.approx((42 * 2.0 + 7 * 8.0) / 1e6)),
    }
    assert all(r.status is AgentRunStatus.COMPLETED for r in reviewer_runs)
    # what else claude reported is kept on its run: session id and turns
    (planner1,) = await runs(service, wf_id, job="planner", iteration=1)
    assert planner1.meta is not None
    assert planner1.meta["session_id"] and planner1.meta["num_turns"] == 2

    # second iteration: the consolidated feedback reaches the planner; plan v2 on disk
    wf = await decide(service, worker, review_cp, "revise", notes="Keep it small.")
    (planner2,) = await runs(service, wf_id, job="planner", iteration=2)
    assert "approve_with_changes" in (planner2.prompt or "")
    assert "Keep it small." in (planner2.prompt or "")
    plan_cp2 = await pending(service, wf_id, PLAN_READY)
    wf = await decide(service, worker, plan_cp2, "approve")
    review_cp2 = await pending(service, wf_id, REVIEWS_READY)
    wf = await decide(service, worker, review_cp2, "approve")
    assert wf.status is WorkflowStatus.COMPLETED
    assert wf.result is not None and wf.result["plan"] == CLAUDE_PLAN
    assert sorted(p.name for p in plans.iterdir()) == [
        "plan-final.md",
        "plan-v1.md",
        "plan-v2.md",
    ]
    assert (plans / "plan-v1.md").read_text() == edited
    assert (plans / "plan-v2.md").read_text() == CLAUDE_PLAN
    assert (plans / "plan-final.md").read_text() == CLAUDE_PLAN
    assert setup.posts() == 3  # the openai reviewer: the 429 and its retry, then iteration 2


async def test_a_plan_file_that_cannot_be_written_is_logged_and_the_workflow_goes_on(
    service: Orchestra, worker: Worker, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="orchestra.engine.runner")
    (setup.workspace / ".orchestra").write_text("a file where the plans folder should go")
    plan_cp = await _create(service, worker, setup, setup.cli("claude").entry())
    assert plan_cp.editable_content == CLAUDE_PLAN
    expected = f"workflow {plan_cp.workflow_id}: after-commit hook failed"

    async def logged() -> bool:
        return any(expected in r.getMessage() for r in caplog.records)

    await eventually(logged, what=f"the log line {expected!r}")
    wf = await decide(service, worker, plan_cp, "approve")
    await pending(service, wf.id, REVIEWS_READY)


def test_an_up_to_date_plan_file_is_not_rewritten(tmp_path: Path) -> None:
    first = sync_plan(tmp_path, "3f2a9c1e-0000", "Add login", 1, "# Plan\n")
    assert first is not None
    inode = first.stat().st_ino
    assert sync_plan(tmp_path, "3f2a9c1e-0000", "Add login", 1, "# Plan\n") is None
    assert first.stat().st_ino == inode  # a rewrite would replace the file
    assert sync_plan(tmp_path, "3f2a9c1e-0000", "Add login", 1, "# Plan v2\n") == first
    assert first.read_text() == "# Plan v2\n"


# -- cancel stops the agent ----------------------------------------------------------------


async def test_cancel_during_a_real_agent_run_kills_its_process_group(
    service: Orchestra, worker: Worker, setup: Setup
) -> None:
    claude = setup.cli("claude", "grandchild")
    pid_file = setup.tmp / "pids.txt"
    wf = await service.create_workflow(
        name="cancel me",
        prompt=TASK,
        workspace_path=str(setup.workspace),
        agents=use_agents(service, {"planner": claude.entry(), "reviewers": [demo()]}),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    pids: list[int] = []
    try:

        async def agent_running() -> bool:
            if not pid_file.exists():
                return False
            pids[:] = [int(p) for p in pid_file.read_text().split()]
            return all(process_alive(p) for p in pids)

        await eventually(agent_running, what="the fake claude and its child to run")
        assert len(pids) == 2
        await service.cancel(wf.id, actor="ana")

        async def all_gone() -> bool:
            return not any(process_alive(p) for p in pids) and not worker._active

        # the worker loses its lease at its next heartbeat and stops the whole group
        await eventually(all_gone, what="the agent's process group to be killed")
    finally:
        stop.set()
        await running
        for pid in pids:
            if process_alive(pid):  # never leave a process behind, even on failure
                os.kill(pid, signal.SIGKILL)
    (run,) = await runs(service, wf.id)
    assert run.status is AgentRunStatus.CANCELLED
    assert (await service.get_workflow(wf.id)).status is WorkflowStatus.CANCELLED


# -- failures become decisions -------------------------------------------------------------

NOISE_TAIL = fakelib.LAST_NOISE_LINE


@pytest.mark.parametrize(
    ("kind", "trouble", "error", "stderr"),
    [
        ("claude", "error_max_turns", "agent_error: claude stopped with error_max_turns", None),
        ("codex", "exit_noise", "exit_code: codex exited with code 3: " + NOISE_TAIL, NOISE_TAIL),
        ("gemini", "exit_41", "exit_code: authentication failed", "exiting with 41 on purpose"),
        ("gemini", "missing", "not_installed: gemini:", None),
        ("openai", "500-always", "http_error: ", None),
        ("anthropic", "401", "http_error: ", None),
    ],
    ids=[
        "claude-is-error",
        "codex-exit-stderr",
        "gemini-exit-code",
        "missing",
        "openai",
        "anthropic",
    ],
)
async def test_each_adapter_kind_fails_into_an_agent_problem(
    service: Orchestra,
    worker: Worker,
    setup: Setup,
    kind: str,
    trouble: str,
    error: str,
    stderr: str | None,
) -> None:
    if kind in ("openai", "anthropic"):
        planner = setup.http(kind, trouble, max_attempts=2, retry_base_s=0)
    else:
        planner = setup.cli(kind, trouble).entry()
        if trouble == "missing":
            planner["options"]["path"] = str(setup.tmp / "nowhere" / kind)
    problem = await _create(service, worker, setup, planner, step=AGENT_PROBLEM)
    (failure,) = problem.context["failures"]
    assert failure["label"] == f"planner ({kind})"
    assert failure["error"].startswith(error), failure["error"]
    assert f"planner ({kind}) failed: {failure['error']}" in problem.instructions
    (shown,) = problem.agent_outputs
    assert shown.status is AgentRunStatus.FAILED and shown.error == failure["error"]
    if stderr is not None:
        assert stderr in failure["stderr_tail"]
        assert shown.content.rstrip().endswith(failure["stderr_tail"].rstrip())
        assert stderr in shown.content
    if kind == "openai":
        assert "HTTP 500" in failure["error"] and "gave up after 2 attempts" in failure["error"]
        assert setup.posts() == 2  # transient: retried inside the adapter first
    if kind == "anthropic":
        assert "HTTP 401" in failure["error"] and setup.posts() == 1  # not transient
    assert [a.name for a in problem.actions] == ["retry", "manual_input", "cancel"]
    (run,) = await runs(service, problem.workflow_id)
    assert run.status is AgentRunStatus.FAILED and run.error == failure["error"]


async def test_retry_reruns_only_the_failed_reviewer_and_skip_continues_without_it(
    service: Orchestra, worker: Worker, setup: Setup
) -> None:
    claude, codex, gemini = (
        setup.cli("claude"),
        setup.cli("codex", "exit_noise"),
        setup.cli("gemini", "exit_41"),
    )
    reviewers = [claude.entry(), codex.entry(), gemini.entry(), setup.http("openai")]
    plan_cp = await _create(service, worker, setup, demo(), reviewers)
    wf = await decide(service, worker, plan_cp, "approve")
    problem = await pending(service, wf.id, AGENT_PROBLEM)
    assert sorted(f["agent"] for f in problem.context["failures"]) == ["reviewer-2", "reviewer-3"]
    # claude was asked for the review schema on its command line
    argv = claude.args()["argv"]
    assert json.loads(argv[argv.index("--json-schema") + 1]) == REVIEW_SCHEMA

    # codex is fixed, gemini is not: a retry runs exactly those two again
    codex.scenario("success")
    wf = await decide(service, worker, problem, "retry")
    problem2 = await pending(service, wf.id, AGENT_PROBLEM)
    assert [f["agent"] for f in problem2.context["failures"]] == ["reviewer-3"]
    assert setup.posts() == 1  # the openai reviewer did not run again
    attempts = sorted(
        (r.agent, r.attempt, r.status) for r in await runs(service, wf.id, job="reviewer")
    )
    assert attempts == [
        ("reviewer-1", 1, AgentRunStatus.COMPLETED),
        ("reviewer-2", 1, AgentRunStatus.FAILED),
        ("reviewer-2", 2, AgentRunStatus.COMPLETED),
        ("reviewer-3", 1, AgentRunStatus.FAILED),
        ("reviewer-3", 2, AgentRunStatus.FAILED),
        ("reviewer-4", 1, AgentRunStatus.COMPLETED),
    ]

    wf = await decide(service, worker, problem2, "skip_agent")
    review_cp = await pending(service, wf.id, REVIEWS_READY)
    assert review_cp.consolidation is not None
    assert {v.agent: v.verdict for v in review_cp.consolidation.verdicts} == {
        "reviewer-1 (claude)": "approve",
        "reviewer-2 (codex)": "approve_with_changes",
        "reviewer-4 (openai)": "approve",
    }
    skipped = await runs(service, wf.id, agent="reviewer-3")
    assert [r.status for r in skipped] == [AgentRunStatus.SKIPPED] * 2


async def test_timeout_kills_the_group_and_retry_waits_longer(
    service: Orchestra, worker: Worker, setup: Setup
) -> None:
    claude = setup.cli("claude", "hang_ignore_term")
    pid_file = setup.tmp / "pids.txt"
    problem = await _create(service, worker, setup, claude.entry(timeout_s=0.5), step=AGENT_PROBLEM)
    (failure,) = problem.context["failures"]
    assert failure["error"] == "timeout: claude gave no complete answer within 0.5s and was stopped"
    pids = [int(p) for p in pid_file.read_text().split()]
    assert not any(process_alive(p) for p in pids)  # deaf to SIGTERM, killed anyway

    # a plain retry after a timeout doubles it
    wf = await decide(service, worker, problem, "retry")
    problem2 = await pending(service, wf.id, AGENT_PROBLEM)
    assert "within 1s" in problem2.context["failures"][0]["error"]
    # a longer timeout given with the retry is used; now the agent answers
    claude.scenario("success")
    wf = await decide(service, worker, problem2, "retry", inputs={"timeout_s": 30})
    plan_cp = await pending(service, wf.id, PLAN_READY)
    assert plan_cp.editable_content == CLAUDE_PLAN
    assert [(r.attempt, r.status) for r in await runs(service, wf.id)] == [
        (1, AgentRunStatus.FAILED),
        (2, AgentRunStatus.FAILED),
        (3, AgentRunStatus.COMPLETED),
    ]


async def test_manual_input_replaces_a_failed_planner_and_is_written_as_the_plan(
    service: Orchestra, worker: Worker, setup: Setup
) -> None:
    codex = setup.cli("codex", "error")
    problem = await _create(service, worker, setup, codex.entry(), step=AGENT_PROBLEM)
    assert problem.context["failures"][0]["error"] == (
        "agent_error: codex failed: stream disconnected before completion"
    )
    mine = "# My plan\n\n1. Do it by hand.\n"
    wf = await decide(service, worker, problem, "manual_input", edited_content=mine)
    plan_cp = await pending(service, wf.id, PLAN_READY)
    assert plan_cp.editable_content == mine
    assert (setup.plans_dir(wf.id, "Real agents") / "plan-v1.md").read_text() == mine


async def test_cancel_at_an_agent_problem_ends_the_workflow(
    service: Orchestra, worker: Worker, setup: Setup
) -> None:
    problem = await _create(
        service, worker, setup, setup.http("anthropic", "401"), step=AGENT_PROBLEM
    )
    wf = await decide(service, worker, problem, "cancel")
    assert wf.status is WorkflowStatus.CANCELLED
    assert not setup.plans_dir(wf.id, "Real agents").exists()


# -- the documented configuration --------------------------------------------------------


def test_the_sample_agents_config_in_the_docs_loads() -> None:
    """The README's sample config (docs/agents.md until merged) is a working config."""
    root = Path(__file__).resolve().parents[2]
    blocks = [
        (doc, block)
        for doc in (root / "docs" / "agents.md", root / "README.md")
        if doc.exists()
        for block in re.findall(r"```toml\n(.*?)```", doc.read_text(), re.DOTALL)
        if "[jobs]" in block
    ]
    assert blocks, "no sample agents config found in the docs"
    doc, block = blocks[0]
    config = parse_agents_config(block, doc)
    assert {spec.adapter for spec in config.agents.values()} == {
        "claude",
        "codex",
        "gemini",
        "openai",
        "anthropic",
    }
    assert config.planner == "claude"
    assert config.timeout_for("claude", "planner") == 900
