"""Agent configuration from TOML: defaults, job references, early refusal of typos,
and the reachability check behind ``orchestra agents``."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_helpers import FAKES

from orchestra.agents.config import (
    AgentsConfig,
    AgentSpec,
    check_agents,
    load_agents_config,
    parse_agents_config,
)
from orchestra.domain.errors import InvalidInput

SAMPLE = """
[agents.claude-opus]
adapter = "claude"
timeout_s = 900
[agents.claude-opus.options]
model = "opus"
allowed_tools = ["Read", "Grep"]

[agents.local-llm]
adapter = "openai"
[agents.local-llm.options]
base_url = "http://127.0.0.1:11434/v1"
model = "qwen3-coder"

[jobs]
planner = "claude-opus"
reviewers = ["codex", "gemini", "local-llm"]
reviewer_timeout_s = 240
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(text)
    return path


def test_without_a_file_the_demo_agent_does_everything(tmp_path: Path) -> None:
    for config in (load_agents_config(None), load_agents_config(tmp_path / "absent.toml")):
        assert config.planner == "demo"
        assert config.reviewers == ["demo", "demo", "demo"]
        assert config.agents == {"demo": AgentSpec(name="demo", adapter="demo")}
        assert config.timeout_for("demo", "planner") == 600
        assert config.timeout_for("demo", "reviewer") == 300


def test_sample_file(tmp_path: Path) -> None:
    config = load_agents_config(write(tmp_path, SAMPLE))
    assert isinstance(config, AgentsConfig)
    assert config.planner == "claude-opus"
    assert config.reviewers == ["codex", "gemini", "local-llm"]
    opus = config.spec("claude-opus")
    assert opus.adapter == "claude"
    assert opus.options == {"model": "opus", "allowed_tools": ["Read", "Grep"]}
    # Jobs may name adapters directly: they run with default options.
    assert config.spec("codex") == AgentSpec(name="codex", adapter="codex")
    assert config.timeout_for("claude-opus", "planner") == 900
    assert config.timeout_for("codex", "reviewer") == 240
    assert config.planner_timeout_s == 600


def test_the_jobs_table_by_its_old_name_is_read_the_same_and_both_are_refused(
    tmp_path: Path,
) -> None:
    old = SAMPLE.replace("[jobs]", "[roles]")
    assert old != SAMPLE
    assert load_agents_config(write(tmp_path, old)) == load_agents_config(write(tmp_path, SAMPLE))
    with pytest.raises(InvalidInput, match=r"\[roles\] is its old name"):
        load_agents_config(write(tmp_path, SAMPLE + '\n[roles]\nplanner = "codex"\n'))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[agents.x]\nadapter = "cluade"\n', "unknown adapter 'cluade'"),
        ('[jobs]\nplanner = "nobody"\n', "neither a configured agent"),
        ('[agents.x]\nadapter = "claude"\nmodel = "opus"\n', "[agents.NAME.options]"),
        ('[agents.x]\nadapter = "claude"\n[agents.x.options]\nmodle = "opus"\n', "modle"),
        ('[agents.x]\nadapter = "openai"\n', "needs a `model` option"),
        ("[jobs]\nreviewers = []\n", "reviewers"),
        ("[jobs]\nplanner_timeout_s = -1\n", "planner_timeout_s"),
        ("[agents.x\n", "not valid TOML"),
    ],
)
def test_mistakes_are_refused_with_a_clear_message(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_agents_config(write(tmp_path, text))
    assert words in caught.value.message
    assert "agents.toml" in caught.value.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('api_key_env = "ORCHESTRA_DATABASE_URL"', "ORCHESTRA_DATABASE_URL"),
        ('api_key_env = "orchestra_token"', "orchestra_token"),
        ('api_key_env = "DATABASE_URL"', "DATABASE_URL"),
        ('api_key_env = "A KEY; rm"', "environment variable name"),
        ("max_attempts = true", "max_attempts"),
    ],
)
def test_an_http_agent_never_reads_orchestras_own_secrets(
    tmp_path: Path, text: str, words: str
) -> None:
    toml = f'[agents.gpt]\nadapter = "openai"\n[agents.gpt.options]\nmodel = "m"\n{text}\n'
    with pytest.raises(InvalidInput) as caught:
        load_agents_config(write(tmp_path, toml))
    assert words in caught.value.message and "'gpt'" in caught.value.message


def test_timeouts_are_capped_by_the_maximum(tmp_path: Path) -> None:
    """Above max_agent_timeout_s is refused; unset role timeouts never exceed it."""
    slow = write(tmp_path, '[agents.slow]\nadapter = "demo"\ntimeout_s = 200\n')
    with pytest.raises(InvalidInput, match=r"agents\.slow\.timeout_s = 200 is above"):
        load_agents_config(slow, max_timeout_s=100)
    config = load_agents_config(write(tmp_path, ""), max_timeout_s=100)
    assert (config.planner_timeout_s, config.reviewer_timeout_s, config.max_timeout_s) == (
        100,
        100,
        100,
    )
    assert load_agents_config(None, max_timeout_s=100).planner_timeout_s == 100


def test_unknown_agent_lookup_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="configured agents: demo"):
        load_agents_config(None).spec("claude")


async def test_check_agents_reports_each_agent(tmp_path: Path) -> None:
    config = parse_agents_config(
        f"""
[agents.claude]
adapter = "claude"
[agents.claude.options]
path = "{FAKES / "claude"}"

[agents.ghost]
adapter = "codex"
[agents.ghost.options]
path = "{tmp_path / "no-codex-here"}"

[jobs]
planner = "claude"
reviewers = ["demo", "ghost"]
""",
        tmp_path / "inline.toml",
    )
    checks = dict(await check_agents(config))
    assert sorted(checks) == ["claude", "demo", "ghost"]
    assert checks["claude"].ok
    assert "Claude Code" in checks["claude"].detail
    assert checks["demo"].ok
    assert not checks["ghost"].ok
    assert "no-codex-here" in checks["ghost"].detail


def test_the_settings_may_share_the_file_and_a_typo_is_still_refused(tmp_path: Path) -> None:
    """``orchestra.toml`` holds both: the server's settings (``port``, ``[[notify]]``)
    are left to the settings, which check them; any other unknown key is refused."""
    from orchestra.config import Settings
    from orchestra.runtime import open_runtime

    shared = (
        'port = 4000\n[agents.demo]\nadapter = "demo"\n'
        '[[notify]]\nname = "ops"\nurl = "https://x.example"\nsecret = "k"\n'
    )
    config = parse_agents_config(shared, tmp_path / "o.toml", other_keys=set(Settings.model_fields))
    assert set(config.agents) == {"demo"}
    with pytest.raises(InvalidInput, match="agnets"):
        parse_agents_config(
            shared + "[agnets.x]\n", tmp_path / "o.toml", other_keys=set(Settings.model_fields)
        )
    (tmp_path / "orchestra.toml").write_text(shared)
    runtime = open_runtime(Settings(data_dir=tmp_path, config_file=tmp_path / "orchestra.toml"))
    try:
        assert set(runtime.service.agents.agents) == {"demo"}
    finally:
        runtime.close()
