"""Helpers of the agent adapter tests: the fake CLIs, the fake model server, and
whether a process still runs. (A module of its own: every conftest is named ``conftest``.)"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestra.agents.base import Adapter, AgentFailure, AgentRequest
from orchestra.agents.registry import create_adapter

FAKES = Path(__file__).resolve().parents[1] / "fakes"


def _load(name: str) -> ModuleType:
    """Import a module of tests/fakes by path: tests/ is not a package."""
    spec = importlib.util.spec_from_file_location(f"orchestra_test_{name}", FAKES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fakelib = _load("fakelib")
model_server = _load("model_server")


@dataclass
class Progress:
    """A ProgressSink that remembers what it was told."""

    events: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, kind: str, text: str) -> None:
        self.events.append((kind, text))

    def kinds(self, kind: str) -> list[str]:
        return [text for k, text in self.events if k == kind]


@dataclass
class FakeAgents:
    """Drives the fake CLIs: scenario, side files, and adapters pointing at them."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    workspace: Path

    @property
    def prompt_file(self) -> Path:
        return self.tmp / "prompt.bin"

    @property
    def pid_file(self) -> Path:
        return self.tmp / "pids.txt"

    @property
    def args_file(self) -> Path:
        return self.tmp / "args.json"

    def scenario(self, name: str) -> None:
        self.monkeypatch.setenv("FAKE_AGENT_SCENARIO", name)

    def adapter(self, kind: str, **options: Any) -> Adapter:
        """The adapter ``kind`` built through the entry points, running the fake."""
        options.setdefault("path", str(FAKES / kind))
        options.setdefault("kill_grace_s", 0.5)
        return create_adapter(kind, options)

    def request(self, prompt: str = "Plan the change.", **fields: Any) -> AgentRequest:
        fields.setdefault("timeout_s", 30.0)
        fields.setdefault("workspace", self.workspace)
        return AgentRequest(prompt=prompt, job=fields.pop("job", "planner"), **fields)

    async def failure(
        self, cli: str, scenario: str | None, progress: Progress, **fields: Any
    ) -> AgentFailure:
        """Run ``cli`` in ``scenario`` and return the failure it must raise."""
        if scenario is not None:
            self.scenario(scenario)
        with pytest.raises(AgentFailure) as caught:
            await self.adapter(cli).run(self.request(**fields), progress)
        return caught.value

    def args(self) -> dict[str, Any]:
        return dict(json.loads(self.args_file.read_text()))

    def pids(self) -> list[int]:
        return [int(p) for p in self.pid_file.read_text().split()]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")
