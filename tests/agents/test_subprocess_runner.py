"""The shared runner of CLI agents, proven through the fake claude, codex and gemini:
prompts travel byte-exact on stdin, big output arrives intact, and no process of
the group outlives a timeout or a cancellation."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
from agent_helpers import FAKES, FakeAgents, Progress, fakelib, process_alive
from tests.support.waiting import eventually

from orchestra.agents.base import AgentFailure
from orchestra.agents.subprocess_runner import (
    STDERR_TAIL_BYTES,
    clip,
    locate_program,
    run_process,
    scrubbed_env,
)

CLIS = ["claude", "codex", "gemini"]


def hostile_prompt(marker: Path) -> str:
    """A prompt a shell would execute in several ways, plus 200 KiB of text."""
    return (
        f"$(touch {marker})\n"
        f"`touch {marker}`\n"
        f"'; touch {marker}; echo '\n"
        f'"; touch {marker}; echo "\n'
        f"| touch {marker} & touch {marker} && echo $HOME > {marker}\n"
        "unicode: héllo wörld — ✓ 日本語\r\n"
        "-p --help --output-format text\n" + "lorem ipsum dolor sit amet\n" * 7900
    )


@pytest.mark.parametrize("cli", CLIS)
async def test_prompt_reaches_the_agent_byte_exact_and_runs_nothing(
    cli: str, fakes: FakeAgents, progress: Progress
) -> None:
    marker = Path(f"/tmp/orchestra-test-{uuid.uuid4().hex}")
    prompt = hostile_prompt(marker)
    assert len(prompt.encode()) > 200 * 1024
    fakes.scenario("echo_prompt")

    result = await fakes.adapter(cli).run(fakes.request(prompt), progress)

    sent = prompt.encode("utf-8")
    assert fakes.prompt_file.read_bytes() == sent
    assert f"received {len(sent)} bytes" in result.content
    assert not marker.exists()
    args = fakes.args()
    assert all("touch" not in arg for arg in args["argv"])
    assert Path(args["cwd"]) == fakes.workspace.resolve()


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize(("scenario", "size"), [("long_line", 200 * 1024), ("huge", 1_500_000)])
async def test_long_lines_and_big_output_arrive_intact(
    cli: str, scenario: str, size: int, fakes: FakeAgents, progress: Progress
) -> None:
    """A JSONL line over asyncio's 64 KiB limit, and megabytes of output in all."""
    fakes.scenario(scenario)
    result = await fakes.adapter(cli).run(fakes.request(), progress)
    assert result.content.endswith(fakelib.big_text(size))
    assert result.meta["stdout_bytes"] > (1024 * 1024 if scenario == "huge" else size)
    assert all(len(text) <= 200 for _, text in progress.events)


@pytest.mark.parametrize("cli", CLIS)
async def test_timeout_stops_the_whole_process_group(
    cli: str, fakes: FakeAgents, progress: Progress
) -> None:
    failure = await fakes.failure(cli, "grandchild", progress, timeout_s=2.0)
    assert failure.reason == "timeout"
    pids = fakes.pids()
    assert len(pids) == 2
    await eventually(lambda: not any(map(process_alive, pids)), what="the agent's processes gone")


async def test_an_agent_ignoring_sigterm_is_killed(fakes: FakeAgents, progress: Progress) -> None:
    fakes.scenario("hang_ignore_term")
    adapter = fakes.adapter("claude", kill_grace_s=0.3)
    with pytest.raises(AgentFailure) as caught:
        await adapter.run(fakes.request(timeout_s=2.0), progress)
    failure = caught.value
    assert failure.reason == "timeout"
    pids = fakes.pids()
    await eventually(lambda: not any(map(process_alive, pids)), what="the agent's processes gone")


@pytest.mark.parametrize("cli", CLIS)
async def test_cancelling_the_task_kills_the_process_group(
    cli: str, fakes: FakeAgents, progress: Progress
) -> None:
    fakes.scenario("grandchild")
    task = asyncio.create_task(fakes.adapter(cli).run(fakes.request(timeout_s=2.0), progress))
    await eventually(fakes.pid_file.exists, what="the fake agent's pid file")
    pids = fakes.pids()
    assert all(process_alive(pid) for pid in pids)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: not any(map(process_alive, pids)), what="the agent's processes gone")


async def test_progress_arrives_while_the_agent_still_runs(
    fakes: FakeAgents, progress: Progress
) -> None:
    fakes.scenario("progress_then_hang")
    task = asyncio.create_task(fakes.adapter("claude").run(fakes.request(timeout_s=120), progress))
    try:
        await eventually(
            lambda: ("text", "Working on it") in progress.events, what="the progress line"
        )
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_grandchild_left_behind_does_not_hold_up_a_finished_run(
    fakes: FakeAgents, progress: Progress
) -> None:
    """The agent exits but its child keeps stdout open: the answer still comes back
    (instead of a timeout) and the child is stopped."""
    fakes.scenario("grandchild_exit")
    result = await fakes.adapter("claude").run(fakes.request(timeout_s=60), progress)
    assert result.content.startswith("# Plan")
    await eventually(
        lambda: not any(map(process_alive, fakes.pids())), what="the left-behind child gone"
    )


@pytest.mark.parametrize("cli", CLIS)
async def test_non_zero_exit_reports_the_stderr_tail(
    cli: str, fakes: FakeAgents, progress: Progress
) -> None:
    failure = await fakes.failure(cli, "exit_noise", progress)
    assert failure.reason == "exit_code"
    assert failure.meta["exit_code"] == 3
    assert failure.stderr_tail.rstrip().endswith(fakelib.LAST_NOISE_LINE)
    assert len(failure.stderr_tail.encode()) <= STDERR_TAIL_BYTES
    assert fakelib.LAST_NOISE_LINE in failure.message


@pytest.mark.parametrize("cli", CLIS)
async def test_a_missing_program_is_not_installed(
    cli: str, fakes: FakeAgents, progress: Progress, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(fakes.tmp))  # nothing called claude/codex/gemini there
    adapter = fakes.adapter(cli, path=None)
    with pytest.raises(AgentFailure) as caught:
        await adapter.run(fakes.request(), progress)
    failure = caught.value
    assert failure.reason == "not_installed"
    assert "`path` option" in failure.message
    check = await adapter.check()
    assert not check.ok
    assert "not installed" in check.detail


async def test_a_configured_path_that_does_not_exist_is_not_installed(
    fakes: FakeAgents, progress: Progress
) -> None:
    adapter = fakes.adapter("codex", path=str(fakes.tmp / "no-such-codex"))
    with pytest.raises(AgentFailure) as caught:
        await adapter.run(fakes.request(), progress)
    failure = caught.value
    assert failure.reason == "not_installed"
    assert "no-such-codex" in failure.message


async def test_a_missing_workspace_is_refused_before_starting(
    fakes: FakeAgents, progress: Progress
) -> None:
    request = fakes.request(workspace=fakes.tmp / "gone")
    with pytest.raises(AgentFailure) as caught:
        await fakes.adapter("gemini").run(request, progress)
    failure = caught.value
    assert failure.reason == "bad_workspace"
    assert not fakes.args_file.exists()


async def test_orchestra_secrets_and_claudecode_do_not_reach_the_agent(
    fakes: FakeAgents, progress: Progress, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRA_API_TOKEN", "secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret")
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("SOME_USER_SETTING", "kept")
    await fakes.adapter("claude").run(fakes.request(), progress)
    names = set(fakes.args()["env_names"])
    assert "SOME_USER_SETTING" in names
    assert not names & {"ORCHESTRA_API_TOKEN", "DATABASE_URL", "CLAUDECODE"}
    # only the run's marker (not a secret: how its processes are found at the end)
    assert {n for n in names if n.startswith("ORCHESTRA_")} == {"ORCHESTRA_AGENT_RUN"}


def test_scrubbed_env_drops_only_our_variables() -> None:
    env = scrubbed_env(
        {
            "ORCHESTRA_X": "1",
            "DATABASE_URL": "2",
            "CLAUDECODE": "3",
            "HOME": "/h",
            "XORCHESTRA_": "4",
        }
    )
    assert env == {"HOME": "/h", "XORCHESTRA_": "4"}


async def test_run_process_reports_stderr_of_a_misused_cli() -> None:
    """The real claude refuses stream-json without --verbose; the runner keeps its words."""
    lines: list[str] = []
    outcome = await run_process(
        [str(FAKES / "claude"), "-p", "--output-format", "stream-json"],
        stdin_data=b"hello",
        on_line=lines.append,
        timeout_s=30,
    )
    assert outcome.returncode == 1
    assert "requires --verbose" in outcome.stderr_tail
    assert lines == []


async def test_run_process_splits_lines_across_chunks(tmp_path: Path) -> None:
    script = tmp_path / "lines.py"
    script.write_text(
        "import sys\n"
        "sys.stdout.write('a' * 70000 + '\\n' + 'b\\r\\n' + '\\n' + 'tail-without-newline')\n"
    )
    lines: list[str] = []
    outcome = await run_process(
        [os.environ.get("PYTHON", "python3"), str(script)],
        stdin_data=b"",
        on_line=lines.append,
        timeout_s=30,
    )
    assert outcome.returncode == 0
    assert lines == ["a" * 70000, "b", "", "tail-without-newline"]


def test_locate_program_prefers_the_configured_path() -> None:
    assert locate_program("claude", str(FAKES / "claude")) == str(FAKES / "claude")
    with pytest.raises(AgentFailure) as caught:
        locate_program("definitely-not-an-agent-xyz", None)
    failure = caught.value
    assert failure.reason == "not_installed"
    assert "not installed or not on PATH" in failure.message


def test_clip_keeps_progress_short() -> None:
    assert clip("\n\n  first line  \nsecond") == "first line"
    assert len(clip("x" * 1000)) == 200
