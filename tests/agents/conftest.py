"""Fixtures for the agent adapter tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import FakeAgents, Progress, model_server


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAgents:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    agents = FakeAgents(tmp=tmp_path, monkeypatch=monkeypatch, workspace=workspace)
    monkeypatch.setenv("FAKE_AGENT_PROMPT_FILE", str(agents.prompt_file))
    monkeypatch.setenv("FAKE_AGENT_PID_FILE", str(agents.pid_file))
    monkeypatch.setenv("FAKE_AGENT_ARGS_FILE", str(agents.args_file))
    monkeypatch.delenv("FAKE_AGENT_SCENARIO", raising=False)
    return agents


@pytest.fixture
def progress() -> Progress:
    return Progress()


@pytest.fixture
def server() -> Iterator[Any]:
    fake = model_server.FakeModelServer().start()
    try:
        yield fake
    finally:
        fake.stop()
