"""Each CLI adapter against its fake: the command line it builds, what it reads from
the real output format, and how the agent's own failures are reported."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from agent_helpers import FAKES, FakeAgents, Progress

from orchestra.agents.base import AgentFailure
from orchestra.domain.errors import InvalidInput

SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string"}}}

# -- all three --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cli", "scenario"), [("claude", "no_result"), ("codex", "no_message"), ("gemini", "no_result")]
)
async def test_output_without_its_end_is_bad_output(
    cli: str, scenario: str, fakes: FakeAgents, progress: Progress
) -> None:
    """A stream cut before its final line is a failure, never an empty answer."""
    failure = await fakes.failure(cli, scenario, progress)
    assert failure.reason == "bad_output"


@pytest.mark.parametrize(
    ("cli", "version"),
    [("claude", "2.1.59 (Claude Code)"), ("codex", "codex-cli 0.98.0"), ("gemini", "0.30.0")],
)
async def test_check_reports_the_version(cli: str, version: str, fakes: FakeAgents) -> None:
    check = await fakes.adapter(cli).check()
    assert check.ok
    assert check.detail.startswith(version)


# -- claude ------------------------------------------------------------------------------


async def test_claude_success_records_content_usage_cost_and_session(
    fakes: FakeAgents, progress: Progress
) -> None:
    result = await fakes.adapter("claude").run(fakes.request(), progress)
    assert result.content.startswith("# Plan\n\n1. Read the code.")
    assert result.tokens_in == 1200 + 0 + 128
    assert result.tokens_out == 449
    assert result.cost_usd == pytest.approx(0.15)
    assert result.duration_ms == 12135
    assert result.session_id == "0b7c9f1e-5a2d-4c1e-9f00-6d1c2b3a4e5f"
    assert result.meta["num_turns"] == 2
    assert result.structured is None
    assert fakes.args()["argv"] == ["-p", "--output-format", "stream-json", "--verbose"]


async def test_claude_stream_with_tool_use_reports_progress(
    fakes: FakeAgents, progress: Progress
) -> None:
    fakes.scenario("tool_use")
    result = await fakes.adapter("claude").run(fakes.request(), progress)
    assert result.content.startswith("# Plan")
    assert progress.kinds("tool") == ["Bash ls -la src"]
    assert "Let me look at the files first." in progress.kinds("text")
    assert all("\n" not in text for _, text in progress.events)


async def test_claude_options_become_flags(fakes: FakeAgents, progress: Progress) -> None:
    adapter = fakes.adapter(
        "claude",
        model="opus",
        permission_mode="plan",
        allowed_tools=["Read", "Grep", "Bash(git log:*)"],
        max_turns=7,
        append_system_prompt="Be brief.",
        extra_args=["--disallowedTools=Edit"],
    )
    result = await adapter.run(fakes.request(output_schema=SCHEMA), progress)
    argv = fakes.args()["argv"]
    assert argv[:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    pairs = {argv[i]: argv[i + 1] for i in range(len(argv) - 1)}
    assert pairs["--model"] == "opus"
    assert pairs["--permission-mode"] == "plan"
    assert pairs["--max-turns"] == "7"
    assert pairs["--append-system-prompt"] == "Be brief."
    assert json.loads(pairs["--json-schema"]) == SCHEMA
    assert "--allowedTools=Read,Grep,Bash(git log:*)" in argv
    assert argv[-1] == "--disallowedTools=Edit"
    assert result.structured == {"verdict": "approve", "summary": "Looks right.", "issues": []}


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("error_max_turns", "error_max_turns: Reached maximum number of turns (1)"),
        ("api_error", "api_error: the model API answered 529: API Error: 529"),
        ("error_during_execution", "error_during_execution: aborted"),
    ],
)
async def test_claude_errors_become_agent_failures(
    scenario: str, expected: str, fakes: FakeAgents, progress: Progress
) -> None:
    failure = await fakes.failure("claude", scenario, progress)
    assert failure.reason == "agent_error"
    assert expected in failure.message
    assert failure.meta["exit_code"] == 1


def test_unknown_or_malformed_options_are_refused(fakes: FakeAgents) -> None:
    with pytest.raises(InvalidInput, match="modle"):
        fakes.adapter("claude", modle="opus")
    with pytest.raises(InvalidInput, match="allowed_tools"):
        fakes.adapter("claude", allowed_tools=3)


# -- codex -------------------------------------------------------------------------------


async def test_codex_success_takes_the_last_agent_message(
    fakes: FakeAgents, progress: Progress
) -> None:
    result = await fakes.adapter("codex", sandbox="read-only", model="gpt-5-codex").run(
        fakes.request(), progress
    )
    assert result.content == "Plan:\n1. Inspect the module.\n2. Patch it.\n3. Run the tests."
    assert result.tokens_in == 2400
    assert result.tokens_out == 310
    assert result.meta["cached_input_tokens"] == 1024
    assert result.cost_usd is None
    assert result.session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert progress.kinds("command") == ["bash -lc 'ls src'"]
    argv = fakes.args()["argv"]
    assert argv[0] == "exec" and {"--json", "--skip-git-repo-check"} <= set(argv)
    assert argv[-1] == "-"
    pairs = {argv[i]: argv[i + 1] for i in range(len(argv) - 1)}
    assert pairs["-C"] == str(fakes.workspace)
    assert pairs["--sandbox"] == "read-only"
    assert pairs["--model"] == "gpt-5-codex"


async def test_codex_output_schema_goes_through_a_file(
    fakes: FakeAgents, progress: Progress
) -> None:
    result = await fakes.adapter("codex").run(fakes.request(output_schema=SCHEMA), progress)
    argv = fakes.args()["argv"]
    schema_file = Path(argv[argv.index("--output-schema") + 1])
    assert not schema_file.is_relative_to(fakes.workspace)
    assert not schema_file.exists()  # cleaned up after the run
    assert result.structured == {
        "verdict": "approve_with_changes",
        "summary": "Mostly fine.",
        "issues": [],
    }


async def test_codex_failed_turn_is_an_agent_failure(fakes: FakeAgents, progress: Progress) -> None:
    failure = await fakes.failure("codex", "error", progress)
    assert failure.reason == "agent_error"
    assert "stream disconnected before completion" in failure.message


async def test_codex_recovered_error_is_not_a_failure(
    fakes: FakeAgents, progress: Progress
) -> None:
    fakes.scenario("recovered_error")
    result = await fakes.adapter("codex").run(fakes.request(), progress)
    assert result.content.startswith("Plan:")


# -- gemini ------------------------------------------------------------------------------


async def test_gemini_success_joins_assistant_deltas(fakes: FakeAgents, progress: Progress) -> None:
    adapter = fakes.adapter("gemini", model="gemini-2.5-flash", approval_mode="plan")
    result = await adapter.run(fakes.request("Plan the change, please."), progress)
    assert result.content == "# Plan\n\n1. Read the code.\n2. Change it.\n"
    assert result.tokens_in == 4800
    assert result.tokens_out == 320
    assert result.duration_ms == 7345
    assert result.session_id == "c0ffee00-1111-4222-8333-444455556666"
    assert result.meta["model"] == "gemini-2.5-flash"
    assert result.meta["tool_calls"] == 1
    assert progress.kinds("tool") == ["read_file README.md"]
    assert "Plan the change" not in " ".join(progress.kinds("text"))  # the user echo is no answer
    argv = fakes.args()["argv"]
    assert argv[:2] == ["--output-format", "stream-json"]
    pairs = {argv[i]: argv[i + 1] for i in range(len(argv) - 1)}
    assert pairs["--approval-mode"] == "plan"


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (41, "authentication failed"),
        (42, "rejected its input"),
        (44, "sandbox"),
        (52, "configuration"),
        (53, "maximum number of turns"),
        (54, "tool call failed"),
        (55, "does not trust this workspace"),
        (130, "was cancelled"),
    ],
)
async def test_gemini_exit_codes_have_clear_reasons(
    code: int, words: str, fakes: FakeAgents, progress: Progress
) -> None:
    failure = await fakes.failure("gemini", f"exit_{code}", progress)
    assert failure.reason == "exit_code"
    assert words in failure.message
    assert f"exit code {code}" in failure.message
    assert failure.meta["exit_code"] == code
    assert "Loaded cached credentials." in failure.stderr_tail


async def test_gemini_error_result_keeps_its_message(fakes: FakeAgents, progress: Progress) -> None:
    failure = await fakes.failure("gemini", "error_result", progress)
    assert "maximum number of turns" in failure.message
    assert "Reached max session turns" in failure.message
    assert failure.meta["cause"] == "turn_limit"


async def test_gemini_refuses_a_prompt_over_its_stdin_limit(
    fakes: FakeAgents, progress: Progress
) -> None:
    with pytest.raises(AgentFailure) as caught:
        await fakes.adapter("gemini").run(fakes.request("x" * 8_000_001), progress)
    failure = caught.value
    assert "8000000" in failure.message
    assert not fakes.args_file.exists()


# -- implementing: the fakes edit files as the real CLIs do --------------------------------


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
async def test_implement_scenario_edits_the_working_directory(
    cli: str, fakes: FakeAgents, progress: Progress
) -> None:
    """Each run really writes the file (a later one appends, so iterations differ) and
    the adapter still returns the agent's final text."""
    fakes.scenario("implement")
    adapter = fakes.adapter(cli)
    first = await adapter.run(fakes.request("Implement step 1.\nDetails."), progress)
    written = fakes.workspace / "IMPLEMENTED.md"
    digest = hashlib.sha256(b"Implement step 1.\nDetails.").hexdigest()
    assert written.read_text() == f"# Implemented\n\n- {digest} Implement step 1.\n"
    assert first.content == "Created IMPLEMENTED.md as the plan asks."

    second = await adapter.run(fakes.request("Address the comments."), progress)
    again = hashlib.sha256(b"Address the comments.").hexdigest()
    assert written.read_text().endswith(f"Implement step 1.\n- {again} Address the comments.\n")
    assert second.content == "Updated IMPLEMENTED.md as the plan asks."


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
async def test_implement_scenario_writes_the_file_it_is_told(
    cli: str, fakes: FakeAgents, progress: Progress
) -> None:
    fakes.scenario("implement")
    fakes.monkeypatch.setenv("FAKE_IMPLEMENT_FILE", "src/pkg/new module.py")
    result = await fakes.adapter(cli).run(fakes.request(), progress)
    assert (fakes.workspace / "src" / "pkg" / "new module.py").is_file()
    assert not (fakes.workspace / "IMPLEMENTED.md").exists()
    assert result.content == "Created src/pkg/new module.py as the plan asks."


@pytest.mark.parametrize(
    ("cli", "argv"),
    [
        ("claude", ["-p", "--output-format", "stream-json", "--verbose"]),
        ("codex", ["exec", "--json", "--skip-git-repo-check", "-"]),
        ("gemini", ["--output-format", "stream-json"]),
    ],
)
def test_implement_scenario_prints_the_real_file_edit_events(
    cli: str, argv: list[str], tmp_path: Path
) -> None:
    """On stdout, the event each real program prints for a file it writes, naming the
    absolute path (claude: ``Write`` tool_use then its tool_result; codex: a completed
    ``file_change`` item; gemini: ``write_file`` tool_use then tool_result)."""
    env = {**os.environ, "FAKE_AGENT_SCENARIO": "implement"}
    for name in ("FAKE_IMPLEMENT_FILE", "FAKE_AGENT_PROMPT_FILE", "FAKE_AGENT_ARGS_FILE"):
        env.pop(name, None)
    done = subprocess.run(
        [str(FAKES / cli), *argv],
        input=b"Do it.",
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=30,
        check=True,
    )
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    path = str((tmp_path / "IMPLEMENTED.md").resolve())
    content = (tmp_path / "IMPLEMENTED.md").read_text()
    if cli == "claude":
        uses = [
            block
            for e in events
            if e["type"] == "assistant"
            for block in e["message"]["content"]
            if block["type"] == "tool_use"
        ]
        assert uses[-1]["name"] == "Write"
        assert uses[-1]["input"] == {"file_path": path, "content": content}
        results = [
            block for e in events if e["type"] == "user" for block in e["message"]["content"]
        ]
        assert results[-1]["tool_use_id"] == uses[-1]["id"]
        assert results[-1]["content"] == f"File created successfully at: {path}"
        assert events[-1]["type"] == "result"
    elif cli == "codex":
        changes = [
            e["item"]
            for e in events
            if e["type"] == "item.completed" and e["item"]["type"] == "file_change"
        ]
        assert changes == [
            {
                "id": "item_3",
                "type": "file_change",
                "changes": [{"path": path, "kind": "add"}],
                "status": "completed",
            }
        ]
        assert events[-1]["type"] == "turn.completed"
    else:
        use = next(e for e in events if e.get("tool_name") == "write_file")
        assert use["type"] == "tool_use"
        assert use["parameters"] == {"file_path": path, "content": content}
        result = next(e for e in events if e.get("tool_id") == use["tool_id"] and e is not use)
        assert result["type"] == "tool_result" and result["status"] == "success"
        assert events[-1]["type"] == "result"
