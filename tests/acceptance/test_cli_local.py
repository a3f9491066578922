"""The ``orchestra`` command as a real process, on the local database (SQLite and
PostgreSQL): the interactive run driven through stdin and ``$EDITOR``, the
listing and deciding commands with their exit codes, Ctrl-C and ``--resume``,
database upgrade and tokens."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import typer

from orchestra.cli.main import app
from orchestra.domain.code import CodeChange, as_context
from orchestra.domain.models import (
    Checkpoint,
    CheckpointAction,
    Decision,
    History,
    LineComment,
    Page,
    Workflow,
)
from orchestra.domain.statuses import (
    ActionStyle,
    AgentRunStatus,
    CheckpointStatus,
    WorkflowStatus,
)
from orchestra.engine.definition import (
    CheckpointStep,
    CheckpointView,
    Next,
    StepContext,
    WorkflowDefinition,
    WorkflowState,
    registered,
)
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.workflows.git_worktree import create_worktree, git, list_worktrees
from tests.acceptance.server import free_port, wait_healthy
from tests.support.engine import use_agents
from tests.support.git_repo import git_repo
from tests.support.waiting import eventually
from tests.unit.test_cli_code_view import edited_app, real_change

pytestmark = pytest.mark.slow

MARKER = "EDITOR-WAS-HERE-7f3a"
TIMEOUT_S = 120


# -- helpers (the remote tests import these) -----------------------------------


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no ORCHESTRA_* from the caller, wide plain output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    env.pop("VISUAL", None)
    env.pop("EDITOR", None)
    env.update(
        {"COLUMNS": "200", "NO_COLOR": "1", "ORCHESTRA_CONFIG": str(data_dir / "orchestra.toml")}
    )
    env.update(extra)
    return env


def command(data_dir: Path, db_url: str | None, args: Sequence[str]) -> list[str]:
    base = [sys.executable, "-m", "orchestra.cli.main", "--data-dir", str(data_dir)]
    if db_url is not None:
        base += ["--database-url", db_url]
    return [*base, *args]


def orchestra(
    data_dir: Path,
    db_url: str | None,
    *args: str,
    input: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``orchestra ARGS`` to completion (bounded) and return what it did."""
    return subprocess.run(
        command(data_dir, db_url, args),
        input=input,
        capture_output=True,
        text=True,
        env=env or cli_env(data_dir),
        timeout=TIMEOUT_S,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


def error_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The error a ``--json`` command printed: the API's shape, the last line of stderr."""
    error: dict[str, Any] = json.loads(result.stderr.strip().splitlines()[-1])["error"]
    return error


def editor_script(tmp_path: Path) -> Path:
    """An $EDITOR that appends the marker line to the file it is given."""
    script = tmp_path / "append-marker"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "{MARKER}" >> "$1"\n')
    script.chmod(0o755)
    return script


def workflow_id_of(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("Workflow ID: "):
            return line.split()[2]
    raise AssertionError(f"no workflow id printed:\n{stdout}")


async def watch_while(
    argv: list[str], env: dict[str, str], act: Callable[[], Awaitable[None]]
) -> list[dict[str, Any]]:
    """Start ``orchestra watch … --json``; once it is following, ``act``; return its events."""
    watcher = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert watcher.stdout is not None and watcher.stderr is not None
        first_line = watcher.stdout.readline()  # it is following: the replay has begun
        await act()
        watcher.wait(timeout=30)  # its output is small: the pipes cannot fill up
        # Not communicate(): readline()'s buffer may already hold more of the output.
        out, err = watcher.stdout.read(), watcher.stderr.read()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    return [json.loads(line) for line in [first_line, *out.splitlines()]]


def show(data_dir: Path, db_url: str | None, workflow_id: str, *extra: str) -> History:
    return History.model_validate(
        as_json(orchestra(data_dir, db_url, "show", workflow_id, "--json", *extra))
    )


# -- help ------------------------------------------------------------------------


def _command_paths() -> list[list[str]]:
    """Every command and subcommand of the ``orchestra`` app, read from the app."""

    def walk(command: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


COMMANDS = _command_paths()


def test_every_command_has_help(tmp_path: Path) -> None:
    assert {"run", "resolve", "token create"} <= {" ".join(p) for p in COMMANDS}  # walked
    # All at once: each is a separate process, and none touches a database.
    procs = [
        subprocess.Popen(
            command(tmp_path, None, [*path, "--help"]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(tmp_path),
        )
        for path in COMMANDS
    ]
    try:
        outputs = [proc.communicate(timeout=TIMEOUT_S) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for path, proc, (out, err) in zip(COMMANDS, procs, outputs, strict=True):
        assert proc.returncode == 0 and "Usage:" in out, (path, out, err)
    main_help = outputs[0][0]
    assert "Exit codes" in main_help and "3 not found" in main_help
    assert not (tmp_path / "orchestra.db").exists()


async def test_resolve_gives_the_inputs_an_action_takes(
    service: Orchestra, worker: Worker, db_url: str, tmp_path: Path
) -> None:
    """A retry's longer timeout, given as ``--input timeout_s=…``; bad ones exit 2."""
    failing = {"planner": {"adapter": "demo", "options": {"fail": "error"}}}
    wf = await service.create_workflow(
        name="cli", prompt="Plan it", agents=use_agents(service, failing)
    )
    await worker.run_until_idle()
    cp = (await service.get_workflow(wf.id)).pending_checkpoint
    assert cp is not None and cp.step_name == "agent_problem"

    def resolve(*given: str) -> subprocess.CompletedProcess[str]:
        inputs = [arg for value in given for arg in ("--input", value)]
        return orchestra(tmp_path, db_url, "resolve", cp.id, "--action", "retry", *inputs)

    for bad, says in (
        ("timeout_s", "NAME=NUMBER"),
        ("timeout_s=soon", "NAME=NUMBER"),
        ("timeout_s=0", "between 1 and 3600"),
        ("timeout=30", "takes no input 'timeout'"),
    ):
        refused = resolve(bad)
        assert refused.returncode == 2, refused.stderr
        assert says in refused.stderr
    assert (await service.get_checkpoint(cp.id)).status is CheckpointStatus.PENDING
    ok(resolve("timeout_s=45"))
    stored = await service.get_checkpoint(cp.id)
    assert stored.resolution is not None and stored.resolution.inputs == {"timeout_s": 45.0}


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert orchestra(tmp_path, None, "run").returncode == 2  # no prompt, no --resume
    assert orchestra(tmp_path, None, "list", "--status", "nonsense").returncode == 2
    assert (
        orchestra(tmp_path, None, "token", "create", "--name", "x", "--role", "god").returncode == 2
    )
    result = orchestra(tmp_path, None, "run", "plan it", "--planner", "no-such-adapter")
    assert result.returncode == 2
    assert "no-such-adapter" in result.stderr
    assert as_json(orchestra(tmp_path, None, "list", "--json"))["items"] == []  # nothing created


# -- the interactive run ---------------------------------------------------------


def test_run_end_to_end_with_editor_and_notes(db_url: str, tmp_path: Path) -> None:
    """Approve an edited plan, revise with notes, approve the next plan, approve the reviews."""
    answers = "".join(
        [
            "1\ny\n\n",  # plan_ready_for_review: approve, edit first (the marker), no notes
            "revise\nn\nNOTES-FOR-THE-PLANNER\n",  # reviews: send feedback back, with notes
            "1\nn\n\n",  # plan v2: approve as is
            "1\nn\n\n",  # reviews v2: approve → completed
        ]
    )
    env = cli_env(tmp_path, EDITOR=str(editor_script(tmp_path)))
    result = ok(
        orchestra(
            tmp_path,
            db_url,
            "run",
            "Add a --json flag to list",
            "--name",
            "flag",
            input=answers,
            env=env,
        )
    )
    assert "Plan ready for review" in result.stdout
    assert "Consolidated view" in result.stdout and "Verdicts" in result.stdout
    assert f"+{MARKER}" in result.stdout  # the diff of the edit was shown
    workflow_id = workflow_id_of(result.stdout)

    history = show(tmp_path, db_url, workflow_id)
    assert history.workflow.status is WorkflowStatus.COMPLETED
    assert history.workflow.name == "flag"
    assert history.workflow.iteration == 2
    first, second = history.checkpoints[0], history.checkpoints[1]
    assert first.status is CheckpointStatus.EDITED
    assert first.resolution is not None and first.resolution.resolved_by == getpass.getuser()
    assert MARKER in (first.resolution.edited_content or "")
    assert second.resolution is not None and second.resolution.action == "revise"
    assert second.resolution.notes == "NOTES-FOR-THE-PLANNER"
    # What the person typed reached the next agents' prompts.
    reviewers_v1 = [r for r in history.agent_runs if r.job == "reviewer" and r.iteration == 1]
    assert len(reviewers_v1) == 3 and all(MARKER in r.prompt for r in reviewers_v1)
    planner_v2 = [r for r in history.agent_runs if r.job == "planner" and r.iteration == 2]
    assert len(planner_v2) == 1 and "NOTES-FOR-THE-PLANNER" in planner_v2[0].prompt
    assert history.workflow.result is not None


def test_run_asks_for_a_retrys_timeout(db_url: str, tmp_path: Path) -> None:
    """At an agent problem, the run asks for the retry's optional timeout (refusing what
    is not a number within bounds) and sends it with the decision."""
    (tmp_path / "orchestra.toml").write_text(
        '[agents.broken]\nadapter = "demo"\n[agents.broken.options]\nfail = "error"\n'
    )
    answers = "retry\nsoon\n90\n\ncancel\ny\n\n"  # then it fails again: cancel, confirmed
    result = ok(orchestra(tmp_path, db_url, "run", "Plan it", "--planner", "broken", input=answers))
    assert "optional input timeout_s: Timeout (seconds), between 1 and 3600" in result.stdout
    assert "Answer with a number between 1 and 3600, or Enter to skip." in result.stdout
    history = show(tmp_path, db_url, workflow_id_of(result.stdout))
    assert history.workflow.status is WorkflowStatus.CANCELLED
    first = history.checkpoints[0].resolution
    assert first is not None and (first.action, first.inputs) == ("retry", {"timeout_s": 90.0})


def test_run_stops_cleanly_when_input_ends(db_url: str, tmp_path: Path) -> None:
    result = orchestra(tmp_path, db_url, "run", "Plan something", input="")
    assert result.returncode == 1
    workflow_id = workflow_id_of(result.stdout)
    assert f"run --resume {workflow_id}" in result.stderr
    wf = Workflow.model_validate(as_json(orchestra(tmp_path, db_url, "list", "--json"))["items"][0])
    assert wf.id == workflow_id and wf.status is WorkflowStatus.AWAITING_CHECKPOINT


async def test_ctrl_c_then_resume_continues_the_same_workflow(
    service: Orchestra, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "orchestra.toml").write_text(
        '[agents.demo-slow]\nadapter = "demo"\n[agents.demo-slow.options]\ndelay_s = 5\n'
    )
    proc = subprocess.Popen(
        command(
            tmp_path,
            db_url,
            ["run", "A slow plan", "--planner", "demo-slow", "--reviewer", "demo"],
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(tmp_path),
    )
    try:
        workflow_id = await _wait_for_running_planner(service, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert f"run --resume {workflow_id}" in err
    interrupted = await service.history(workflow_id)
    assert not interrupted.workflow.status.is_terminal  # still there, to be continued
    assert interrupted.checkpoints == []  # the planner was cut short

    # Resume: the planner runs again (attempt 2) and the first checkpoint is shown;
    # cancel there to finish the test quickly.
    result = ok(
        orchestra(tmp_path, db_url, "run", "--resume", workflow_id, input="cancel\ny\nstop\n")
    )
    assert "Plan ready for review" in result.stdout
    history = await service.history(workflow_id)
    assert history.workflow.status is WorkflowStatus.CANCELLED
    planner_runs = [r for r in history.agent_runs if r.job == "planner"]
    assert [r.attempt for r in planner_runs] == [1, 2]
    assert planner_runs[0].status is AgentRunStatus.INTERRUPTED
    assert planner_runs[1].status is AgentRunStatus.COMPLETED
    assert [c.step_name for c in history.checkpoints] == ["plan_ready_for_review"]


async def _wait_for_running_planner(service: Orchestra, proc: subprocess.Popen[str]) -> str:
    """The run's workflow id, once its planner is running (fails if the run exits)."""

    async def running_planner() -> str | None:
        assert proc.poll() is None, proc.communicate()
        page = await service.list_workflows()
        if page.items:
            runs = (await service.history(page.items[0].id)).agent_runs
            if any(r.status is AgentRunStatus.RUNNING for r in runs):
                return page.items[0].id
        return None

    return await eventually(running_planner, what="the planner to run", timeout_s=60)


# -- deciding outside the run ------------------------------------------------------


async def _waiting_workflow(service: Orchestra, worker: Worker, name: str = "cli") -> Workflow:
    wf = await service.create_workflow(name=name, prompt="Add a --json flag to list")
    await worker.run_until_idle()
    return await service.get_workflow(wf.id)


async def test_inbox_resolve_and_exit_codes(
    service: Orchestra, worker: Worker, db_url: str, tmp_path: Path
) -> None:
    wf = await _waiting_workflow(service, worker)
    cp = wf.pending_checkpoint
    assert cp is not None

    inbox = as_json(orchestra(tmp_path, db_url, "inbox", "--json"))
    assert [item["id"] for item in inbox["items"]] == [cp.id]
    assert inbox["items"][0]["step_name"] == "plan_ready_for_review"
    table = ok(orchestra(tmp_path, db_url, "inbox")).stdout
    assert cp.id[:8] in table and cp.id not in table and "cli" in table  # short ids
    narrow = orchestra(tmp_path, db_url, "inbox", env=cli_env(tmp_path, COLUMNS="80"))
    assert all(len(line) <= 80 for line in ok(narrow).stdout.splitlines()), narrow.stdout
    # A short id is taken back wherever an id is: show, resolve.
    shown = ok(orchestra(tmp_path, db_url, "show", wf.id[:6])).stdout
    assert f"orchestra resolve {cp.id[:8]}" in shown
    unknown_prefix = orchestra(tmp_path, db_url, "show", "ffff0000")
    assert unknown_prefix.returncode == 3, unknown_prefix.stderr

    unknown = orchestra(tmp_path, db_url, "resolve", cp.id, "--action", "nope")
    assert unknown.returncode == 2
    assert "not offered" in unknown.stderr and "approve" in unknown.stderr
    assert (await service.get_checkpoint(cp.id)).status is CheckpointStatus.PENDING

    missing = orchestra(tmp_path, db_url, "resolve", "no-such-checkpoint", "--action", "approve")
    assert missing.returncode == 3 and "(not_found)" in missing.stderr

    resolved = as_json(
        orchestra(
            tmp_path,
            db_url,
            "resolve",
            cp.id,
            "--action",
            "approve",
            "--notes",
            "ship it",
            "--json",
        )
    )
    assert resolved["status"] == CheckpointStatus.APPROVED.value
    stored = await service.get_checkpoint(cp.id)
    assert stored.resolution is not None
    assert (stored.resolution.action, stored.resolution.notes) == ("approve", "ship it")
    assert stored.resolution.resolved_by == getpass.getuser()

    again = orchestra(tmp_path, db_url, "resolve", cp.id, "--action", "cancel")
    assert again.returncode == 4
    assert f"resolved by {getpass.getuser()}" in again.stderr and "approve" in again.stderr
    assert "(already_resolved)" in again.stderr
    assert (await service.get_checkpoint(cp.id)).resolution == stored.resolution
    # With --json, scripts get the error as the API shapes it: code, message, details.
    again_json = orchestra(tmp_path, db_url, "resolve", cp.id, "--action", "cancel", "--json")
    assert again_json.returncode == 4 and again_json.stdout == ""
    conflict = error_of(again_json)
    assert conflict["code"] == "already_resolved"
    assert conflict["details"]["resolution"]["resolved_by"] == getpass.getuser()

    assert as_json(orchestra(tmp_path, db_url, "inbox", "--json"))["items"] == []


async def test_resolve_with_editor_and_content_file_reach_the_planner(
    service: Orchestra, worker: Worker, db_url: str, tmp_path: Path
) -> None:
    wf = await _waiting_workflow(service, worker)
    assert wf.pending_checkpoint is not None
    await service.resolve(wf.pending_checkpoint.id, Decision(action="approve"), actor="ana")
    await worker.run_until_idle()
    reviews = (await service.get_workflow(wf.id)).pending_checkpoint
    assert reviews is not None and reviews.step_name == "reviews_ready_for_consolidation"

    env = cli_env(tmp_path, EDITOR=str(editor_script(tmp_path)))
    ok(
        orchestra(
            tmp_path,
            db_url,
            "resolve",
            reviews.id,
            "--action",
            "edit_planner_prompt",
            "--edit",
            env=env,
        )
    )
    await worker.run_until_idle()
    prompt_cp = (await service.get_workflow(wf.id)).pending_checkpoint
    assert prompt_cp is not None and prompt_cp.step_name == "edit_planner_prompt"
    assert MARKER in (prompt_cp.editable_content or "")  # the edited feedback is in the prompt

    custom = tmp_path / "prompt.md"
    custom.write_text("Write the plan again, in three steps. CUSTOM-PROMPT-MARKER\n")
    ok(
        orchestra(
            tmp_path,
            db_url,
            "resolve",
            prompt_cp.id,
            "--action",
            "send_to_planner",
            "--content-file",
            str(custom),
        )
    )
    await worker.run_until_idle()
    history = await service.history(wf.id)
    planner_v2 = [r for r in history.agent_runs if r.job == "planner" and r.iteration == 2]
    assert [r.prompt for r in planner_v2] == [custom.read_text()]


async def test_list_show_cancel_retry_watch(
    service: Orchestra, worker: Worker, db_url: str, tmp_path: Path
) -> None:
    first = await _waiting_workflow(service, worker, "first")
    second = await _waiting_workflow(service, worker, "second")

    page = as_json(orchestra(tmp_path, db_url, "list", "--json"))
    assert [w["name"] for w in page["items"]] == ["second", "first"]  # newest first
    assert page == Page[Workflow].model_validate(page).model_dump(mode="json")
    waiting = WorkflowStatus.AWAITING_CHECKPOINT.value
    assert (
        len(as_json(orchestra(tmp_path, db_url, "list", "--status", waiting, "--json"))["items"])
        == 2
    )
    assert ok(orchestra(tmp_path, db_url, "list")).stdout.count(waiting) == 2

    human = ok(orchestra(tmp_path, db_url, "show", first.id)).stdout
    assert "Timeline" in human and "Plan ready for review" in human and "Actions" in human
    assert orchestra(tmp_path, db_url, "show", "no-such-workflow").returncode == 3

    retry = orchestra(tmp_path, db_url, "retry", first.id)
    assert retry.returncode == 4 and "only a failed workflow" in retry.stderr

    cancelled = as_json(orchestra(tmp_path, db_url, "cancel", first.id, "--json"))
    assert cancelled["status"] == WorkflowStatus.CANCELLED.value
    history = await service.history(first.id)
    assert history.checkpoints[0].status is CheckpointStatus.SUPERSEDED
    assert orchestra(tmp_path, db_url, "cancel", first.id).returncode == 4

    # watch follows the second workflow live until it ends.
    assert second.pending_checkpoint is not None
    cp_id = second.pending_checkpoint.id

    async def cancel_it() -> None:
        await service.resolve(cp_id, Decision(action="cancel"), actor="ana")

    events = await watch_while(
        command(tmp_path, db_url, ["watch", second.id, "--json"]), cli_env(tmp_path), cancel_it
    )
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    assert ids == [e.id for e in (await service.history(second.id)).events]
    assert events[-1]["data"]["to"] == WorkflowStatus.CANCELLED.value

    # watching a workflow that has ended prints its events and returns at once
    replay = ok(orchestra(tmp_path, db_url, "watch", second.id))
    assert WorkflowStatus.CANCELLED.value in replay.stdout


# -- administration ------------------------------------------------------------


def test_db_upgrade(db_url: str, tmp_path: Path) -> None:
    assert "latest schema" in ok(orchestra(tmp_path, db_url, "db", "upgrade")).stdout
    fresh = tmp_path / "fresh"
    ok(orchestra(fresh, None, "db", "upgrade"))
    assert (fresh / "orchestra.db").exists()
    assert as_json(orchestra(fresh, None, "list", "--json"))["items"] == []


def test_tokens(db_url: str, tmp_path: Path) -> None:
    created = ok(
        orchestra(tmp_path, db_url, "token", "create", "--name", "ci-bot", "--role", "reviewer")
    )
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("orc_")
    listed = as_json(orchestra(tmp_path, db_url, "token", "list", "--json"))
    assert [(t["name"], t["role"], t["revoked_at"]) for t in listed] == [
        ("ci-bot", "reviewer", None)
    ]
    assert token not in json.dumps(listed)
    assert (
        orchestra(
            tmp_path, db_url, "token", "create", "--name", "ci-bot", "--role", "admin"
        ).returncode
        == 2
    )

    ok(orchestra(tmp_path, db_url, "token", "revoke", "ci-bot"))
    listed = as_json(orchestra(tmp_path, db_url, "token", "list", "--json"))
    assert listed[0]["revoked_at"] is not None
    assert orchestra(tmp_path, db_url, "token", "revoke", "nobody").returncode == 3


def test_agents_lists_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "orchestra.toml").write_text(
        '[agents.slow]\nadapter = "demo"\n[agents.slow.options]\ndelay_s = 1\n\n'
        '[jobs]\nplanner = "slow"\nreviewers = ["demo"]\n'
    )
    rows = as_json(orchestra(tmp_path, None, "agents", "--json"))
    by_name = {r["name"]: r for r in rows}
    assert by_name["slow"]["jobs"] == ["planner"] and by_name["slow"]["reachable"] is True
    assert by_name["demo"]["jobs"] == ["reviewer"]
    assert "slow" in ok(orchestra(tmp_path, None, "agents")).stdout


# -- serve and worker ------------------------------------------------------------


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    """Send ``sig`` and collect the output (bounded); SIGKILL if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_answers_and_refuses_open_binding_without_auth(db_url: str, tmp_path: Path) -> None:
    refused = orchestra(tmp_path, db_url, "serve", "--host", "0.0.0.0", "--no-auth")
    assert refused.returncode == 2 and "token create" in refused.stderr

    port = free_port()
    proc = subprocess.Popen(
        command(tmp_path, db_url, ["serve", "--port", str(port), "--no-auth", "--no-worker"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(tmp_path),
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        health = wait_healthy(base_url, proc, lambda: _output_if_exited(proc), timeout_s=60)
    finally:
        _stop(proc, signal.SIGINT)
    assert health["database"]["ok"] is True
    assert health["database"]["kind"] == ("sqlite" if db_url.startswith("sqlite") else "postgresql")
    assert proc.returncode == 130  # Ctrl-C: a graceful shutdown, then "interrupted"


def _output_if_exited(proc: subprocess.Popen[str]) -> object:
    """What the process wrote, if it has exited (reading a running one's would block)."""
    return proc.communicate() if proc.poll() is not None else "(still running)"


async def test_worker_drives_workflows_until_stopped(
    service: Orchestra, db_url: str, tmp_path: Path
) -> None:
    wf = await service.create_workflow(name="for the worker", prompt="Plan it")
    proc = subprocess.Popen(
        command(tmp_path, db_url, ["worker", "--concurrency", "2"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(tmp_path),
    )
    try:

        async def at_checkpoint() -> bool:
            assert proc.poll() is None, proc.communicate()
            return (await service.get_workflow(wf.id)).pending_checkpoint is not None

        await eventually(at_checkpoint, what="the worker to reach the checkpoint", timeout_s=60)
    finally:
        _, err = _stop(proc)
    assert proc.returncode == 0, err


# -- line comments at a code review checkpoint ------------------------------------

#: A one-checkpoint workflow showing the code change in the JSON file this variable
#: names, so the test and the CLI processes render the same checkpoint (until the
#: Implement & Review workflow can be driven here end to end).
CODE_ENV = "CLI_TEST_CODE_CHANGE"
CODE_TYPE = "cli_test_code_review"


def _code_definition() -> WorkflowDefinition[WorkflowState]:
    def view(ctx: StepContext[WorkflowState]) -> CheckpointView:
        change = CodeChange.model_validate_json(Path(os.environ[CODE_ENV]).read_text())
        return CheckpointView(
            instructions="Review the code.",
            context={"code": as_context(change)},
            editable_content="Keep it small.",
        )

    step = CheckpointStep[WorkflowState](
        name="code_ready_for_review",
        title="Code ready for review",
        actions=[
            CheckpointAction(name="approve", label="Approve", style=ActionStyle.PRIMARY),
            CheckpointAction(name="request_changes", label="Request changes", takes_comments=True),
        ],
        view=view,
        on_resolve=lambda ctx, resolution: Next(step=None, result={"action": resolution.action}),
        editable_label="Feedback for the implementer",
    )
    return WorkflowDefinition(
        type=CODE_TYPE,
        title="Code review (test)",
        state=WorkflowState,
        first_step=step.name,
        steps={step.name: step},
    )


CODE_DEFINITION = _code_definition()
#: ``orchestra`` with the test workflow registered, as an installed one would be.
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from orchestra.engine.definition import register_definition; "
    "from tests.acceptance.test_cli_local import CODE_DEFINITION; "
    "register_definition(CODE_DEFINITION); "
    "from orchestra.cli.main import app; app(prog_name='orchestra')"
)
ROOT = Path(__file__).resolve().parents[2]


def orchestra_with_code(
    data_dir: Path, db_url: str, *args: str, input: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    argv = command(data_dir, db_url, args)
    return subprocess.run(
        [sys.executable, "-c", _BOOT, str(ROOT), *argv[3:]],
        input=input,
        capture_output=True,
        text=True,
        env=cli_env(data_dir, **env),
        timeout=TIMEOUT_S,
        check=False,
    )


async def _code_checkpoint(
    service: Orchestra, worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Workflow, Checkpoint, dict[str, str]]:
    """A workflow waiting at the code checkpoint, and the env the CLI needs for it."""
    (tmp_path / "git").mkdir()
    change = real_change(tmp_path / "git", {"app.py": edited_app(), "a:12:b.py": "one\n"})
    code_file = tmp_path / "code.json"
    code_file.write_text(change.model_dump_json())
    monkeypatch.setenv(CODE_ENV, str(code_file))
    wf = await service.create_workflow(name="code", prompt="Review it", type=CODE_TYPE)
    await worker.run_until_idle()
    cp = (await service.get_workflow(wf.id)).pending_checkpoint
    assert cp is not None and CodeChange.of(cp) == change
    return wf, cp, {CODE_ENV: str(code_file)}


async def test_resolve_sends_line_comments_and_refuses_bad_ones(
    service: Orchestra, worker: Worker, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with registered(CODE_DEFINITION):
        wf, cp, env = await _code_checkpoint(service, worker, tmp_path, monkeypatch)

        def resolve(action: str, *comments: str) -> subprocess.CompletedProcess[str]:
            given = [arg for c in comments for arg in ("--comment", c)]
            return orchestra_with_code(
                tmp_path, db_url, "resolve", cp.id, "--action", action, *given, **env
            )

        for action, bad, says in (
            ("request_changes", "app.py", "is not PATH:LINE:TEXT"),
            ("request_changes", "app.py:5:", "the comment text is empty"),
            ("request_changes", "app.py:1:before the hunk", "line 1 of app.py is not in the diff"),
            ("request_changes", "nope.py:5:x", "nope.py is not a file of the change"),
            ("approve", "app.py:5:x", "action 'approve' takes no line comments"),
        ):
            refused = resolve(action, "app.py:5:fine", bad)
            assert refused.returncode == 2, (bad, refused.stdout, refused.stderr)
            assert says in refused.stderr
        too_many = resolve("request_changes", *["app.py:5:again"] * 501)
        assert too_many.returncode == 2 and "at most 500" in too_many.stderr
        assert (await service.get_checkpoint(cp.id)).status is CheckpointStatus.PENDING

        ok(resolve("request_changes", "app.py:5:Use a constant", "a:12:b.py:1:colons: fine"))
        stored = await service.get_checkpoint(cp.id)
        assert stored.resolution is not None
        assert stored.resolution.comments == [
            LineComment(file="app.py", line=5, body="Use a constant"),
            LineComment(file="a:12:b.py", line=1, body="colons: fine"),
        ]
        assert (await service.get_workflow(wf.id)).result == {"action": "request_changes"}
        timeline = ok(orchestra_with_code(tmp_path, db_url, "show", wf.id, **env)).stdout
        assert "2 line comment(s)" in timeline


async def test_run_shows_the_diff_and_takes_comments_from_the_editor(
    service: Orchestra, worker: Worker, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``orchestra run --resume`` at the code checkpoint: the diff with line numbers,
    then comments written under a diff line in $EDITOR reach the resolution."""
    editor = tmp_path / "comment-editor"
    editor.write_text(
        "#!/bin/sh\nsed -i '/line five, changed$/a > Use a constant here.\\n> Please.' \"$1\"\n"
    )
    editor.chmod(0o755)
    with registered(CODE_DEFINITION):
        wf, cp, env = await _code_checkpoint(service, worker, tmp_path, monkeypatch)
        answers = "request_changes\nn\ny\nsee comments\n"  # no feedback edit; comment; notes
        result = ok(
            orchestra_with_code(
                tmp_path, db_url, "run", "--resume", wf.id, input=answers, EDITOR=str(editor), **env
            )
        )
    assert "Code under review" in result.stdout
    assert "app.py  +2 −2" in result.stdout
    assert "1 line comment(s)." in result.stdout
    stored = await service.get_checkpoint(cp.id)
    assert stored.resolution is not None and stored.resolution.notes == "see comments"
    assert stored.resolution.comments == [
        LineComment(file="app.py", line=5, body="Use a constant here.\nPlease.")
    ]


# -- Implement & Review through the real process ------------------------------------
# (The stand-in workflow above stays for what needs a crafted diff: a path with
# colons, a changed line amid unchanged ones; these drive the real plan_implement.)

DEMO_FILE = "ORCHESTRA_DEMO.md"


def implement_start(tmp_path: Path, ws: Path, *extra: str) -> list[str]:
    """``run`` arguments starting plan_implement on ``ws`` from a plan file (no planning)."""
    plan = tmp_path / "plan.md"
    plan.write_text("Write the demo file.\n")
    return ["run", "Write the demo file", "--type", "plan_implement", "--workspace", str(ws),
            "--plan-file", str(plan), *extra]  # fmt: skip


def test_implement_from_a_plan_to_a_commit_with_a_line_comment(db_url: str, tmp_path: Path) -> None:
    """run → the code review (the diff shown) → resolve request_changes with a line
    comment → the next implementer run's prompt holds it → run --resume: approve,
    commit → the branch has the commit, the worktree is gone."""
    ws = git_repo(tmp_path / "ws")
    first = orchestra(tmp_path, db_url, *implement_start(tmp_path, ws), input="")
    assert first.returncode == 1, first.stderr  # input ended at the code review
    assert "Code under review" in first.stdout and f"{DEMO_FILE}  +7 −0" in first.stdout
    wid = workflow_id_of(first.stdout)
    cp = show(tmp_path, db_url, wid).workflow.pending_checkpoint
    assert cp is not None and cp.step_name == "code_ready_for_review"

    listed = as_json(orchestra(tmp_path, db_url, "worktrees", str(ws), "--json"))
    assert [(w["workflow_id"], w["workflow_status"]) for w in listed] == [
        (wid, "awaiting_checkpoint")
    ]
    table = ok(orchestra(tmp_path, db_url, "worktrees", str(ws))).stdout
    assert wid[:8] in table and ".orchestra/worktrees/" in table and str(ws) + "/" not in table

    def resolve(action: str, *comments: str) -> subprocess.CompletedProcess[str]:
        given = [arg for c in comments for arg in ("--comment", c)]
        return orchestra(tmp_path, db_url, "resolve", cp.id, "--action", action, *given)

    for action, bad, says in (
        ("request_changes", "nope.py:1:x", "nope.py is not a file of the change"),
        ("request_changes", f"{DEMO_FILE}:99:x", f"line 99 of {DEMO_FILE} is not in the diff"),
        ("approve", f"{DEMO_FILE}:1:x", "action 'approve' takes no line comments"),
    ):
        refused = resolve(action, bad)
        assert refused.returncode == 2 and says in refused.stderr, (bad, refused.stderr)
    assert show(tmp_path, db_url, wid).checkpoints[-1].status is CheckpointStatus.PENDING

    ok(resolve("request_changes", f"{DEMO_FILE}:1:Use a better title: say what it is."))
    answers = "1\nn\n\ncommit\nn\n\n"  # code review v2: approve; confirm: commit as is
    done = ok(orchestra(tmp_path, db_url, "run", "--resume", wid, input=answers))
    assert "Committed " in done.stdout

    history = show(tmp_path, db_url, wid)
    wf = history.workflow
    assert wf.status is WorkflowStatus.COMPLETED and wf.result is not None
    implements = [r for r in history.agent_runs if r.step_name == "implement"]
    assert len(implements) == 2
    comment = f"- `{DEMO_FILE}` line 1:\n\nUse a better title: say what it is.\n"
    assert comment not in implements[0].prompt and comment in implements[1].prompt
    first_cp = history.checkpoints[0]
    assert first_cp.resolution is not None and first_cp.resolution.comments == [
        LineComment(file=DEMO_FILE, line=1, body="Use a better title: say what it is.")
    ]
    commit, branch = wf.result["commit"], wf.result["branch"]
    assert branch == f"orchestra/write-the-demo-file-{wid[:8]}"
    assert git(ws, "rev-parse", branch).strip() == commit
    assert git(ws, "show", "--name-only", "--format=", commit).split() == [DEMO_FILE]
    assert list_worktrees(ws) == []
    assert as_json(orchestra(tmp_path, db_url, "worktrees", str(ws), "--json")) == []


def test_implement_continues_a_plan_review_and_worktrees_prune(db_url: str, tmp_path: Path) -> None:
    """``orchestra implement ID`` takes a completed Plan & Review's plan, name and
    workspace; a left-behind worktree is pruned, the live one stays; discard ends it."""
    ws = git_repo(tmp_path / "ws")
    args = ["run", "Plan the demo", "--name", "demo plan", "--workspace", str(ws)]
    planned = ok(orchestra(tmp_path, db_url, *args, input="1\nn\n\n1\nn\n\n"))
    plan_id = workflow_id_of(planned.stdout)
    assert orchestra(tmp_path, db_url, "implement", "no-such-workflow").returncode == 3

    orphan = create_worktree(ws, "left behind", "c3" * 16)
    started = orchestra(tmp_path, db_url, "implement", plan_id, "--keep-worktree", input="")
    assert started.returncode == 1, started.stderr  # input ended at the code review
    wid = workflow_id_of(started.stdout)
    history = show(tmp_path, db_url, wid)
    wf = history.workflow
    assert (wf.type, wf.name, wf.workspace_path) == ("plan_implement", "demo plan", str(ws))
    plan = show(tmp_path, db_url, plan_id).workflow.result
    assert plan is not None and plan["plan"] in history.agent_runs[0].prompt
    assert [r.step_name for r in history.agent_runs][:1] == ["implement"]  # no planning
    unfinished = orchestra(tmp_path, db_url, "implement", wid, input="")
    assert unfinished.returncode == 2 and "only a completed workflow" in unfinished.stderr

    table = ok(orchestra(tmp_path, db_url, "worktrees", str(ws))).stdout
    assert "left behind" in table and wid[:8] in table
    pruned = ok(orchestra(tmp_path, db_url, "worktrees", str(ws), "--prune")).stdout
    assert "Removed 1 worktree(s)" in pruned and "left behind" not in pruned
    assert not orphan.path.exists() and list_worktrees(ws) != []

    ok(orchestra(tmp_path, db_url, "run", "--resume", wid, input="discard\ny\n\n"))
    wf = show(tmp_path, db_url, wid).workflow
    assert wf.status is WorkflowStatus.COMPLETED and wf.result is not None
    assert wf.result["discarded"] is True
    assert list_worktrees(ws) == []


async def test_inbox_watch_shows_the_inbox_again_when_a_checkpoint_arrives_or_is_resolved(
    service: Orchestra, worker: Worker, db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "watch.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            command(tmp_path, db_url, ["inbox", "--watch"]),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=cli_env(tmp_path),
            start_new_session=True,
        )
    try:
        await eventually(lambda: "Nothing waits for you." in out.read_text(), what="inbox")
        wf = await _waiting_workflow(service, worker, name="watched")
        cp = wf.pending_checkpoint
        assert cp is not None
        await eventually(lambda: cp.id[:8] in out.read_text(), what="the new checkpoint")
        await service.resolve(cp.id, Decision(action="cancel"), actor="ana")
        await eventually(
            lambda: out.read_text().count("Nothing waits for you.") == 2,
            what=f"the inbox empty again:\n{out.read_text()}",
        )
        assert proc.poll() is None  # still watching
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)


async def test_resolve_several_checkpoints_reports_each_outcome(
    service: Orchestra, worker: Worker, db_url: str, tmp_path: Path
) -> None:
    one = (await _waiting_workflow(service, worker, name="one")).pending_checkpoint
    two = (await _waiting_workflow(service, worker, name="two")).pending_checkpoint
    three = (await _waiting_workflow(service, worker, name="three")).pending_checkpoint
    assert one is not None and two is not None and three is not None
    await service.resolve(two.id, Decision(action="cancel"), actor="bo")  # elsewhere, first
    ids = [one.id[:8], two.id, three.id[:6]]
    done = orchestra(tmp_path, db_url, "resolve", *ids, "--action", "approve", "--json")
    assert done.returncode == 4, done.stderr  # not every one was resolved here
    outcomes = [item["outcome"] for item in json.loads(done.stdout)["items"]]
    assert outcomes == ["resolved", "already_resolved", "resolved"]
    for cp in (one, three):
        got = await service.get_checkpoint(cp.id)
        assert got.resolution is not None and got.resolution.action == "approve"
    mixed = orchestra(tmp_path, db_url, "resolve", one.id, two.id, "--action", "x", "--edit")
    assert mixed.returncode == 2 and "for one checkpoint" in mixed.stderr
