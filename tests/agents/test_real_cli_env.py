"""The per-agent environment and home of the CLI agents, from the agents file only
(fast: no CLI runs; the real CLIs are exercised in test_real_clis.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestra.agents.base import AgentFailure
from orchestra.agents.config import parse_agents_config
from orchestra.agents.gemini import escape_at
from orchestra.agents.registry import create_adapter
from orchestra.domain.errors import InvalidInput


def _adapter(tmp_path: Path, toml: str, name: str = "a") -> Any:
    config = parse_agents_config(toml, tmp_path / "orchestra.toml")
    spec = config.spec(name)
    return create_adapter(spec.adapter, spec.options)


def test_env_table_values_and_references_reach_the_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVER_KEY", "secret-from-server")
    monkeypatch.setenv("ORCHESTRA_TOKEN_FOR_TEST", "ours")
    monkeypatch.setenv("DATABASE_URL", "postgresql://ours")
    adapter = _adapter(
        tmp_path,
        """
[agents.a]
adapter = "claude"
[agents.a.options]
home = "homes/a"
[agents.a.env]
ANTHROPIC_BASE_URL = "http://127.0.0.1:9/gw"
ANTHROPIC_API_KEY = { from_env = "SERVER_KEY" }
CLAUDE_CODE_MAX_RETRIES = "3"
""",
    )
    env = adapter.environment()
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9/gw"
    assert env["ANTHROPIC_API_KEY"] == "secret-from-server"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "3"  # the agent's env beats the defaults
    assert env["DISABLE_TELEMETRY"] == "1"  # the quiet defaults are there
    assert env["HOME"] == str(tmp_path / "homes" / "a")  # relative to the agents file
    assert (tmp_path / "homes" / "a").is_dir()
    assert "ORCHESTRA_TOKEN_FOR_TEST" not in env and "DATABASE_URL" not in env
    # The reference is what is kept with the agent, never the secret.
    assert adapter.env_table["ANTHROPIC_API_KEY"] == {"from_env": "SERVER_KEY"}


def test_a_reference_to_an_unset_variable_fails_naming_it(tmp_path: Path) -> None:
    adapter = _adapter(
        tmp_path,
        """
[agents.a]
adapter = "codex"
[agents.a.env]
OPENAI_API_KEY = { from_env = "NOT_SET_ANYWHERE_12345" }
""",
    )
    with pytest.raises(AgentFailure) as caught:
        adapter.environment()
    assert "NOT_SET_ANYWHERE_12345" in caught.value.message
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ('ORCHESTRA_TOKEN = "x"', "Orchestra's own"),
        ('DATABASE_URL = "x"', "Orchestra's own"),
        ('KEY = { from_env = "ORCHESTRA_ADMIN_TOKEN" }', "Orchestra's own"),
        ('KEY = { from_env = "DATABASE_URL" }', "Orchestra's own"),
        ('"BAD-NAME" = "x"', "not a valid name"),
        ("KEY = 3", "must be a string"),
        ('KEY = { from_env = "A", default = "b" }', "must be a string"),
    ],
)
def test_bad_env_tables_are_refused_at_load(tmp_path: Path, table: str, complaint: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_agents_config(
            f'[agents.a]\nadapter = "claude"\n[agents.a.env]\n{table}\n',
            tmp_path / "orchestra.toml",
        )
    assert complaint in caught.value.message


def test_env_inside_options_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_agents_config(
            '[agents.a]\nadapter = "claude"\n[agents.a.options]\nenv = { K = "v" }\n',
            tmp_path / "orchestra.toml",
        )
    assert "[agents.a.env]" in caught.value.message


def test_codex_home_holds_its_codex_home(tmp_path: Path) -> None:
    adapter = _adapter(
        tmp_path, f'[agents.a]\nadapter = "codex"\n[agents.a.options]\nhome = "{tmp_path}/h"\n'
    )
    env = adapter.environment()
    assert env["HOME"] == f"{tmp_path}/h" and env["CODEX_HOME"] == f"{tmp_path}/h/.codex"


def test_without_home_the_program_keeps_the_servers_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "server-home"))
    adapter = _adapter(tmp_path, '[agents.a]\nadapter = "gemini"\n')
    env = adapter.environment()
    assert env["HOME"] == str(tmp_path / "server-home")
    assert env["GEMINI_CLI_TRUST_WORKSPACE"] == "true"
    assert not (tmp_path / "server-home").exists()  # nothing written to a shared home


def test_gemini_at_escaping_matches_its_parser() -> None:
    assert escape_at("ana@example.com and @README.md") == "ana\\@example.com and \\@README.md"
    assert escape_at("already \\@escaped") == "already \\@escaped"
    assert escape_at("no at signs") == "no at signs"
