"""The REAL Claude Code, Codex and Gemini CLIs, through Orchestra's adapters, against
a local model endpoint (tests/fakes/model_endpoint.py) the session starts once.

The binaries are the ones pinned in agents-cli/ (``make test`` runs ``npm ci`` there).
When they are missing these tests skip, except in CI, where they fail. Each agent is
configured as a person would: an agents file parsed by ``parse_agents_config``, with
its own ``home`` and an ``[agents.NAME.env]`` table pointing the CLI at the endpoint.

The hand-written fakes (tests/fakes/claude, codex, gemini) stay for what the real
CLIs cannot be made to do on demand: cut-off output, 300 kB JSONL lines, crashes
mid-stream, grandchildren that ignore SIGTERM, a silent exit without a result line.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Progress, _load
from tests.support.engine import decide, pending, runs
from tests.support.waiting import eventually

from orchestra.agents.base import AgentFailure, AgentRequest, AgentResult
from orchestra.agents.config import parse_agents_config
from orchestra.agents.gemini import escape_at
from orchestra.agents.registry import create_adapter
from orchestra.domain.statuses import AgentRunStatus, WorkflowStatus
from orchestra.engine.runner import Worker
from orchestra.service import Orchestra
from orchestra.store.db import Database
from orchestra.workflows import plan_review
from orchestra.workflows.prompts import reviewer_prompt
from orchestra.workflows.reviews import REVIEW_SCHEMA, parse_review

model_endpoint = _load("model_endpoint")

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "agents-cli" / "node_modules" / ".bin"
CLIS = ("claude", "codex", "gemini")
_tags = count(1)


def _binary(cli: str) -> Path:
    path = BIN / cli
    if not path.exists() or shutil.which("node") is None:
        why = f"{path} is not installed (run `make agent-clis`) or node is missing"
        if os.environ.get("CI"):
            pytest.fail(f"the real agent CLIs are required in CI: {why}")
        pytest.skip(why)
    return path


@pytest.fixture(scope="session")
def endpoint() -> Iterator[Any]:
    """One model endpoint for the whole session: the CLIs take 1-3 s to start already."""
    server = model_endpoint.ModelEndpoint().start()
    try:
        yield server
    finally:
        server.stop()


class RealAgents:
    """Builds agents on the real CLIs, each with its own home, via an agents file."""

    def __init__(self, endpoint: Any, tmp: Path) -> None:
        self.endpoint = endpoint
        self.tmp = tmp
        self.workspace = tmp / "workspace"
        self.workspace.mkdir()
        (self.workspace / "README.md").write_text("SECRET-README-CONTENT\n")

    def config_toml(self, cli: str, name: str, scenario: str, **options: Any) -> tuple[str, str]:
        """The TOML of one agent and the endpoint path prefix its requests use."""
        prefix = f"{scenario}-{cli}{next(_tags)}"
        base = self.endpoint.base(prefix)
        home = self.tmp / f"home-{name}"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        env: dict[str, Any] = {"TMPDIR": str(home / "tmp")}
        if cli == "claude":
            env |= {"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": f"sk-ant-{name}"}
            options.setdefault("model", "claude-sonnet-4-5")
        elif cli == "codex":
            (home / ".codex").mkdir(parents=True, exist_ok=True)
            (home / ".codex" / "config.toml").write_text(
                'model = "gpt-5-codex"\n'
                "[model_providers.fake]\n"
                'name = "Fake (loopback)"\n'
                f'base_url = "{base}/v1"\n'
                'env_key = "FAKE_OPENAI_API_KEY"\n'
                'wire_api = "responses"\n'
                "stream_idle_timeout_ms = 20000\n"
            )
            env |= {"FAKE_OPENAI_API_KEY": f"sk-openai-{name}"}
            options.setdefault("model_provider", "fake")
        else:
            env |= {"GOOGLE_GEMINI_BASE_URL": base, "GEMINI_API_KEY": f"gemini-{name}"}
            options.setdefault("model", "gemini-2.5-pro")
        options = {"path": str(_binary(cli)), "home": str(home), "kill_grace_s": 1, **options}
        lines = [f'[agents.{name}]\nadapter = "{cli}"\n[agents.{name}.options]']
        lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
        lines.append(f"[agents.{name}.env]")
        for key, value in env.items():
            if isinstance(value, dict):
                lines.append(f'{key} = {{ from_env = "{value["from_env"]}" }}')
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n", prefix

    def agent(self, cli: str, scenario: str = "ok", **options: Any) -> tuple[Any, str, Path]:
        """(adapter, endpoint prefix, home) of one agent configured in an agents file."""
        name = f"{cli}-agent-{next(_tags)}"
        text, prefix = self.config_toml(cli, name, scenario, **options)
        config = parse_agents_config(text, self.tmp / "orchestra.toml")
        spec = config.spec(name)
        return create_adapter(spec.adapter, spec.options), prefix, self.tmp / f"home-{name}"

    def request(self, prompt: str, **fields: Any) -> AgentRequest:
        fields.setdefault("timeout_s", 60.0)
        return AgentRequest(
            prompt=prompt, job=fields.pop("job", "planner"), workspace=self.workspace, **fields
        )

    def calls(self, prefix: str) -> list[dict[str, Any]]:
        """The model calls (POSTs) a CLI made under ``prefix``."""
        return [r for r in self.endpoint.log(prefix) if r["method"] == "POST"]


@pytest.fixture
def real(endpoint: Any, tmp_path: Path) -> RealAgents:
    return RealAgents(endpoint, tmp_path)


def _prompt_texts(cli: str, body: dict[str, Any]) -> list[str]:
    """Every text a model call carries for the user, as the CLI sent it."""
    texts: list[str] = []
    if cli == "claude":
        for message in body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            for block in content if isinstance(content, list) else []:
                if block.get("type") == "text":
                    texts.append(block["text"])
    elif cli == "codex":
        for item in body.get("input", []):
            for part in item.get("content") or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    else:
        for content in body.get("contents", []):
            texts += [part["text"] for part in content.get("parts", []) if "text" in part]
    return texts


def _processes_with_home(home: Path) -> list[int]:
    """Live processes whose environment has ``HOME=home``: the agent and its children."""
    marker = f"HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ.split(b"\0") and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


# -- plan ------------------------------------------------------------------------------


@pytest.mark.parametrize("cli", CLIS)
async def test_plan_comes_back_with_tokens_and_session(real: RealAgents, cli: str) -> None:
    options: dict[str, Any] = {}
    if cli == "claude":
        # The README's planner: plan mode, and only read-only tools offered.
        options = {"permission_mode": "plan", "tools": ["Read", "Grep", "Glob"]}
    adapter, prefix, home = real.agent(cli, **options)
    progress = Progress()
    result = await adapter.run(real.request("Plan adding a --verbose flag."), progress)
    assert isinstance(result, AgentResult)
    assert result.content.strip() == model_endpoint.ANSWER
    assert result.tokens_in and result.tokens_out
    assert result.session_id
    calls = real.calls(prefix)
    assert calls, "the CLI never reached the endpoint"
    # Its own home, not ours: the CLI wrote its state there.
    assert any(home.iterdir())
    if cli == "claude":
        offered = {tool["name"] for tool in calls[0]["body"].get("tools", [])}
        assert {"Read", "Grep", "Glob"} <= offered
        assert not offered & {"Bash", "Edit", "Write", "NotebookEdit"}
        # Non-essential traffic is off: no HEAD /api/hello and friends.
        assert all(r["method"] == "POST" for r in real.endpoint.log(prefix))
    if cli == "gemini":
        settings = json.loads((home / ".gemini" / "settings.json").read_text())
        assert settings["general"]["maxAttempts"] == 2
        assert settings["privacy"]["usageStatisticsEnabled"] is False


async def test_claude_plan_mode_answers_with_the_plan_file_not_a_pointer(
    real: RealAgents,
) -> None:
    """Plan mode with every tool: the model writes ~/.claude/plans/<slug>.md and ends
    with "I wrote the plan to …"; the adapter answers with the plan itself."""
    adapter, _, home = real.agent("claude", permission_mode="plan")
    result = await adapter.run(real.request("Plan adding a --verbose flag."), Progress())
    assert result.content == model_endpoint.PLAN_FILE_TEXT
    assert result.meta["final_text"].startswith("I wrote the plan to")
    assert Path(result.meta["plan_file"]).parent == home / ".claude" / "plans"


# -- structured review -----------------------------------------------------------------


@pytest.mark.parametrize("cli", CLIS)
async def test_structured_review_is_accepted_and_parsed(real: RealAgents, cli: str) -> None:
    adapter, prefix, _ = real.agent(cli)
    request = real.request(
        reviewer_prompt("Add a flag.", "1. Add it.", 1),
        job="reviewer",
        output_schema=REVIEW_SCHEMA,
    )
    result = await adapter.run(request, Progress())
    review = parse_review(result.content, result.structured)
    assert review is not None
    assert review["verdict"] == "approve_with_changes"
    assert review["issues"][0]["title"] == "No rollback step"
    assert review["issues"][0]["category"] is None
    assert review["questions"] == []
    if cli == "codex":
        text_format = real.calls(prefix)[0]["body"]["text"]["format"]
        assert text_format["type"] == "json_schema" and text_format["strict"] is True
        assert text_format["schema"] == REVIEW_SCHEMA
    if cli == "claude":
        assert result.structured is not None  # the StructuredOutput tool call was accepted


def test_review_schema_is_valid_in_openai_strict_mode() -> None:
    assert model_endpoint.strict_schema_problem(REVIEW_SCHEMA) is None
    assert model_endpoint.strict_schema_problem({"type": "object", "properties": {"a": {}}})


# -- prompts arrive as written ---------------------------------------------------------

FILLER = ("0123456789abcdef" * 64 + "\n") * 200  # ~200 KiB
AWKWARD = (
    "/help plan for @README.md and ana@example.com; $(touch pwned) `touch pwned2` "
    "| cat /etc/passwd > out & echo 'q' \"dq\" \\n \\@x 100% ünïcödé\n"
)


@pytest.mark.parametrize("cli", CLIS)
async def test_prompt_arrives_byte_exact(real: RealAgents, cli: str) -> None:
    adapter, prefix, _ = real.agent(cli)
    prompt = AWKWARD + FILLER + "END-OF-PROMPT"
    await adapter.run(real.request(prompt), Progress())
    calls = real.calls(prefix)
    assert calls
    texts = _prompt_texts(cli, calls[0]["body"])
    if cli == "gemini":
        # No switch makes gemini verbatim: every @ goes escaped (see the adapter), and
        # a leading "/" gets a newline before it.
        expected = "\n" + escape_at(prompt)
    elif cli == "claude":
        expected = "\n" + prompt  # a leading "/" would run a slash command
    else:
        expected = prompt  # codex takes stdin as it is
    matching = [t for t in texts if "END-OF-PROMPT" in t]
    assert matching == [expected]
    everything = json.dumps([c["body"] for c in calls])
    assert "SECRET-README-CONTENT" not in everything, "@README.md was inlined"
    assert not (real.workspace / "pwned").exists()
    assert not (real.workspace / "pwned2").exists()


# -- API failures become agent problems that name the cause -----------------------------


@pytest.mark.parametrize("status", ["500", "429"])
@pytest.mark.parametrize("cli", CLIS)
async def test_api_error_becomes_an_agent_problem_naming_it(
    real: RealAgents, cli: str, status: str
) -> None:
    adapter, prefix, _ = real.agent(cli, status)
    started = time.monotonic()
    with pytest.raises(AgentFailure) as caught:
        await adapter.run(real.request("Plan it.", timeout_s=120), Progress())
    elapsed = time.monotonic() - started
    assert f"the model API answered {status}" in caught.value.message
    # Retries are bounded: an outage shows long before the timeout (generous bound).
    assert elapsed < 60
    # One retry at most (codex: request and stream retries, 2 x 2).
    assert 1 <= len(real.calls(prefix)) <= 4


@pytest.mark.parametrize("cli", CLIS)
async def test_a_hanging_api_times_out_and_no_process_survives(real: RealAgents, cli: str) -> None:
    adapter, prefix, home = real.agent(cli, "hang")
    with pytest.raises(AgentFailure) as caught:
        # gemini takes ~3 s to start; the others ask the model within a second or two
        await adapter.run(
            real.request("Plan it.", timeout_s=8 if cli == "gemini" else 5), Progress()
        )
    assert caught.value.reason == "timeout"
    assert real.calls(prefix), "the CLI was stopped before it even asked the model"
    await eventually(
        lambda: not _processes_with_home(home), what="the CLI's processes gone", timeout_s=5
    )


# -- per-agent environment -------------------------------------------------------------


async def test_each_agent_gets_only_its_own_env(
    real: RealAgents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two claude agents in one file, one key from the server's environment by name,
    one literal: each CLI sends its own key to its own base URL, and Orchestra's own
    variables reach neither."""
    monkeypatch.setenv("TEAM_A_KEY", "sk-ant-from-server-env")
    monkeypatch.setenv("ORCHESTRA_SECRET_FOR_TEST", "must-not-leak")
    text_a, prefix_a = real.config_toml("claude", "alpha", "ok")
    text_a = text_a.replace(
        'ANTHROPIC_API_KEY = "sk-ant-alpha"', 'ANTHROPIC_API_KEY = { from_env = "TEAM_A_KEY" }'
    )
    text_b, prefix_b = real.config_toml("claude", "beta", "ok")
    config = parse_agents_config(text_a + text_b, real.tmp / "orchestra.toml")
    alpha = create_adapter("claude", config.spec("alpha").options)
    beta = create_adapter("claude", config.spec("beta").options)
    await asyncio.gather(
        alpha.run(real.request("Plan A."), Progress()),
        beta.run(real.request("Plan B."), Progress()),
    )
    keys_a = {r["headers"].get("x-api-key") for r in real.calls(prefix_a)}
    keys_b = {r["headers"].get("x-api-key") for r in real.calls(prefix_b)}
    assert keys_a == {"sk-ant-from-server-env"}
    assert keys_b == {"sk-ant-beta"}
    # The stored options hold the reference, never the secret itself.
    assert config.spec("alpha").options["env"]["ANTHROPIC_API_KEY"] == {"from_env": "TEAM_A_KEY"}
    env_a = alpha.environment()  # type: ignore[attr-defined]
    assert "ORCHESTRA_SECRET_FOR_TEST" not in env_a
    assert env_a["HOME"] == str(real.tmp / "home-alpha")
    assert "sk-ant-beta" not in env_a.values()


# -- orchestra agents --------------------------------------------------------------------


def test_orchestra_agents_lists_the_clis_on_path_and_the_toml_to_add(tmp_path: Path) -> None:
    for cli in CLIS:
        _binary(cli)
    (tmp_path / "orchestra.toml").write_text(
        f'[agents.thinker]\nadapter = "claude"\n[agents.thinker.options]\npath = "{BIN}/claude"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    env |= {
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        "HOME": str(tmp_path),
        "COLUMNS": "250",
        "NO_COLOR": "1",
        "ORCHESTRA_CONFIG": str(tmp_path / "orchestra.toml"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "orchestra.cli.main", "--data-dir", str(tmp_path), "agents"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    found = out[out.index("Agent CLIs on PATH") :]
    rows = {
        cells[0]: cells
        for line in found.splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 4
    }
    assert rows["claude"][1] == "2.1.328" and rows["claude"][3] == "thinker"
    assert rows["codex"][1] == "codex-cli 0.169.0" and rows["codex"][3] == "—"
    assert rows["gemini"][1] == "0.61.0" and rows["gemini"][3] == "—"
    assert '[agents.codex]\nadapter = "codex"' in out
    assert '[agents.gemini]\nadapter = "gemini"' in out
    assert "[agents.claude]" not in out  # configured already, as "thinker"


# -- the mixed workflow ----------------------------------------------------------------


async def test_mixed_workflow_with_the_real_clis_through_both_checkpoints(
    real: RealAgents, db: Database, worker: Worker
) -> None:
    """claude plans (the README's planner), codex and gemini review; every agent is
    configured in the agents file, and the workflow names them by name only; one
    revision, in which the planner resumes its own session."""
    planner, _ = real.config_toml(
        "claude",
        "planner",
        "ok",
        permission_mode="plan",
        tools=["Read", "Grep", "Glob"],
        resume=True,
    )
    codex, codex_prefix = real.config_toml("codex", "rev-codex", "ok")
    gemini, _ = real.config_toml("gemini", "rev-gemini", "ok")
    jobs = '[jobs]\nplanner = "planner"\nreviewers = ["rev-codex", "rev-gemini"]\n'
    config = parse_agents_config(planner + codex + gemini + jobs, real.tmp / "orchestra.toml")
    service = Orchestra(db, agents=config, allowed_roots=[real.tmp])
    wf = await service.create_workflow(
        name="Real CLIs", prompt="Add a --json flag.", workspace_path=str(real.workspace)
    )
    await worker.run_until_idle()
    plan_cp = await pending(service, wf.id, plan_review.PLAN_READY)
    assert (plan_cp.editable_content or "").strip() == model_endpoint.ANSWER
    await decide(service, worker, plan_cp, "approve")
    review_cp = await pending(service, wf.id, plan_review.REVIEWS_READY)
    assert review_cp.consolidation is not None
    assert {v.agent: v.verdict for v in review_cp.consolidation.verdicts} == {
        "reviewer-1 (rev-codex)": "approve_with_changes",
        "reviewer-2 (rev-gemini)": "approve_with_changes",
    }
    # codex got the strict schema, and the API accepted it
    assert real.calls(codex_prefix)[0]["body"]["text"]["format"]["strict"] is True
    # A revision: the planner (resume = true) continues its own session.
    await decide(service, worker, review_cp, "revise", notes="Add a rollback step.")
    (first,) = await runs(service, wf.id, job="planner", iteration=1)
    (second,) = await runs(service, wf.id, job="planner", iteration=2)
    assert first.meta and second.meta
    assert second.meta["resumed_session"] == first.meta["session_id"]
    assert second.meta["session_id"] == first.meta["session_id"]
    plan_cp2 = await pending(service, wf.id, plan_review.PLAN_READY)
    await decide(service, worker, plan_cp2, "approve")
    review_cp2 = await pending(service, wf.id, plan_review.REVIEWS_READY)
    done = await decide(service, worker, review_cp2, "approve")
    assert done.status is WorkflowStatus.COMPLETED
    usage = {
        r.agent: (r.status, bool(r.tokens_in)) for r in await runs(service, wf.id, iteration=2)
    }
    assert usage == {
        "planner": (AgentRunStatus.COMPLETED, True),
        "reviewer-1": (AgentRunStatus.COMPLETED, True),
        "reviewer-2": (AgentRunStatus.COMPLETED, True),
    }


# -- resuming the agent's own session ------------------------------------------------------


@pytest.mark.parametrize("cli", ["claude", "codex"])
async def test_resume_continues_the_agents_session(real: RealAgents, cli: str) -> None:
    adapter, prefix, _ = real.agent(cli, resume=True)
    first = await adapter.run(real.request("FIRST-PROMPT plan it."), Progress())
    assert first.session_id
    second = await adapter.run(
        real.request("SECOND-PROMPT revise it.", resume_session=first.session_id), Progress()
    )
    assert second.meta["resumed_session"] == first.session_id
    assert second.session_id == first.session_id
    # The CLI sent the first exchange along: the agent kept its context.
    last = json.dumps(real.calls(prefix)[-1]["body"])
    assert "FIRST-PROMPT" in last and "SECOND-PROMPT" in last


@pytest.mark.parametrize("cli", ["claude", "codex"])
async def test_a_gone_session_falls_back_to_a_fresh_run_with_a_note(
    real: RealAgents, cli: str
) -> None:
    adapter, _, _ = real.agent(cli, resume=True)
    gone = "0000aaaa-2222-4333-8444-555555555555"
    result = await adapter.run(real.request("Revise it.", resume_session=gone), Progress())
    assert result.content.strip() == model_endpoint.ANSWER
    assert gone in result.meta["resume_note"] and "fresh session" in result.meta["resume_note"]
    assert result.session_id != gone
    assert "resumed_session" not in result.meta
