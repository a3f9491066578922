"""Which agents exist and which of them plan and review, from a TOML file.

A file names agents (an adapter plus its options and timeout) and who does each
job by default (``[jobs]``: planner, reviewers, and for Implement & Review the
implementer and code reviewers; a person's permission is a
*role*, an agent's part in a workflow a *job*); a job may also name an adapter
directly (``reviewers = ["codex"]``), which then runs with its default options.
Everything is checked when the file is loaded (adapter names, option names,
job references), so a typo shows up at start-up, not half-way through a
workflow::

    [agents.claude-opus]
    adapter = "claude"
    timeout_s = 900
    [agents.claude-opus.options]
    model = "opus"

    [agents.claude-opus.env]                        # only this agent's program gets these
    ANTHROPIC_BASE_URL = "https://llm-gateway.internal"
    ANTHROPIC_API_KEY = { from_env = "OPUS_API_KEY" }  # read from the server's environment

    [jobs]                                          # its old name, [roles], is read too
    planner = "claude-opus"
    reviewers = ["codex", "gemini"]
    implementer = "claude-opus"                     # Implement & Review (plan_implement)
    code_reviewers = ["codex"]                      # default: the reviewers
    planner_timeout_s = 900
    reviewer_timeout_s = 300
    implementer_timeout_s = 1800
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestra.agents.base import AgentCheck
from orchestra.agents.registry import adapter_names, create_adapter
from orchestra.domain.errors import InvalidInput, OrchestraError

log = logging.getLogger(__name__)

DEFAULT_AGENT = "demo"
DEFAULT_PLANNER_TIMEOUT_S = 600.0
DEFAULT_REVIEWER_TIMEOUT_S = 300.0
DEFAULT_IMPLEMENTER_TIMEOUT_S = 1800.0
#: The longest any agent may run (``max_agent_timeout_s``): one agent cannot hold a
#: worker slot for longer, whatever its configuration or a retry asks for.
DEFAULT_MAX_AGENT_TIMEOUT_S = 3600.0
#: ``orchestra agents`` must answer even when an endpoint hangs.
CHECK_TIMEOUT_S = 20.0


class _AgentEntry(BaseModel):
    """An ``[agents.NAME]`` table of the file."""

    model_config = ConfigDict(extra="forbid")

    adapter: str
    options: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)
    #: ``[agents.NAME.env]``: variables for this agent's program only (CLI agents).
    env: dict[str, Any] = Field(default_factory=dict)


class AgentSpec(_AgentEntry):
    """One configured agent: a name, the adapter that runs it, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str


class _Jobs(BaseModel):
    """The ``[jobs]`` table: who plans, who reviews, and their default timeouts."""

    model_config = ConfigDict(extra="forbid")

    planner: str = DEFAULT_AGENT
    reviewers: list[str] = Field(default_factory=lambda: [DEFAULT_AGENT] * 3, min_length=1)
    #: Who changes the code (None: the planner), and who reviews the change (None:
    #: the reviewers).
    implementer: str | None = None
    code_reviewers: list[str] | None = Field(default=None, min_length=1)
    planner_timeout_s: float = Field(default=DEFAULT_PLANNER_TIMEOUT_S, gt=0)
    reviewer_timeout_s: float = Field(default=DEFAULT_REVIEWER_TIMEOUT_S, gt=0)
    implementer_timeout_s: float = Field(default=DEFAULT_IMPLEMENTER_TIMEOUT_S, gt=0)


_JOB_TIMEOUTS = ("planner_timeout_s", "reviewer_timeout_s", "implementer_timeout_s")


class AgentsConfig(_Jobs):
    """Every configured agent by name, and the job defaults a workflow starts from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: dict[str, AgentSpec]
    #: The cap on every agent timeout, a retry's included (``max_agent_timeout_s``).
    max_timeout_s: float = Field(default=DEFAULT_MAX_AGENT_TIMEOUT_S, gt=0)

    def spec(self, name: str) -> AgentSpec:
        """The agent called ``name``; an unknown name is bad input."""
        spec = self.agents.get(name)
        if spec is None:
            raise InvalidInput(
                f"unknown agent {name!r}; configured agents: {', '.join(sorted(self.agents))}",
                details={"agent": name},
            )
        return spec

    def timeout_for(self, name: str, job: str) -> float:
        """The agent's own timeout, else its job's (planners get longer by default)."""
        spec = self.spec(name)
        if spec.timeout_s is not None:
            return spec.timeout_s
        if job == "implementer":
            return self.implementer_timeout_s
        return self.planner_timeout_s if job == "planner" else self.reviewer_timeout_s


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: dict[str, _AgentEntry] = Field(default_factory=dict)
    jobs: _Jobs = Field(default_factory=_Jobs)
    #: The table's name before it was ``[jobs]``: read the same way.
    roles: _Jobs | None = None

    @model_validator(mode="after")
    def _one_jobs_table(self) -> _File:
        if self.roles is not None:
            if self.jobs.model_fields_set:
                raise ValueError("give [jobs] only ([roles] is its old name)")
            self.jobs, self.roles = self.roles, None
        return self


def default_agents_config(max_timeout_s: float = DEFAULT_MAX_AGENT_TIMEOUT_S) -> AgentsConfig:
    """The offline default: the demo agent plans and reviews."""
    return AgentsConfig(
        agents={DEFAULT_AGENT: AgentSpec(name=DEFAULT_AGENT, adapter="demo")},
        max_timeout_s=max_timeout_s,
        planner_timeout_s=min(DEFAULT_PLANNER_TIMEOUT_S, max_timeout_s),
        reviewer_timeout_s=min(DEFAULT_REVIEWER_TIMEOUT_S, max_timeout_s),
        implementer_timeout_s=min(DEFAULT_IMPLEMENTER_TIMEOUT_S, max_timeout_s),
    )


def _explain(error: ValidationError, path: Path) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        problems.append(f"{where}: {item['msg']}")
    hint = ""
    if any(
        item["type"] == "extra_forbidden" and "agents" in item["loc"] for item in error.errors()
    ):
        hint = " (adapter options go under [agents.NAME.options])"
    return f"{path}: " + "; ".join(problems) + hint


def _agent_options(name: str, entry: _AgentEntry, source: Path) -> dict[str, Any]:
    """The adapter options of an agent, with its ``env`` table and its ``home``.

    The environment comes from this file only: ``env`` inside ``options`` is
    refused, so there is one place to read what an agent gets. A relative
    ``home`` is relative to this file's folder.
    """
    options = dict(entry.options)
    if "env" in options:
        raise InvalidInput(
            f"{source}: agent {name!r}: put environment variables in [agents.{name}.env], "
            "not in its options",
            details={"agent": name},
        )
    if entry.env:
        options["env"] = dict(entry.env)
    home = options.get("home")
    if isinstance(home, str) and home and not home.startswith("~"):
        options["home"] = str((source.parent / home).absolute())
    return options


def parse_agents_config(
    text: str,
    source: Path,
    *,
    max_timeout_s: float = DEFAULT_MAX_AGENT_TIMEOUT_S,
    other_keys: Collection[str] = (),
) -> AgentsConfig:
    """Parse and check the TOML ``text`` read from ``source``; no timeout may exceed
    ``max_timeout_s``. ``other_keys`` are another reader's top-level keys of the same
    file (the server's settings, ``[[notify]]``…): left to it, not refused as unknown."""
    try:
        raw = tomllib.loads(text)
        parsed = _File.model_validate({k: v for k, v in raw.items() if k not in other_keys})
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{source}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        raise InvalidInput(_explain(exc, source)) from exc
    known = set(adapter_names())
    agents: dict[str, AgentSpec] = {}
    for name, entry in parsed.agents.items():
        if entry.adapter not in known:
            raise InvalidInput(
                f"{source}: agent {name!r} uses unknown adapter {entry.adapter!r}; "
                f"installed adapters: {', '.join(sorted(known))}",
                details={"agent": name, "adapter": entry.adapter},
            )
        agents[name] = AgentSpec(
            name=name,
            adapter=entry.adapter,
            options=_agent_options(name, entry, source),
            timeout_s=entry.timeout_s,
        )
    jobs = parsed.jobs
    named = [jobs.planner, *jobs.reviewers, *(jobs.code_reviewers or [])]
    for name in [*named, *([jobs.implementer] if jobs.implementer else [])]:
        if name in agents:
            continue
        if name not in known:
            raise InvalidInput(
                f"{source}: [jobs] names {name!r}, which is neither a configured agent "
                f"({', '.join(sorted(agents)) or 'none'}) nor an adapter "
                f"({', '.join(sorted(known))})",
                details={"agent": name},
            )
        agents[name] = AgentSpec(name=name, adapter=name)
    _check_timeouts(parsed, source, max_timeout_s)
    for spec in agents.values():
        # Building the adapter checks its options; building does no I/O.
        try:
            create_adapter(spec.adapter, spec.options)
        except OrchestraError as exc:
            raise InvalidInput(f"{source}: agent {spec.name!r}: {exc.message}") from exc
    job_values = jobs.model_dump()
    for key in _JOB_TIMEOUTS:
        if key not in jobs.model_fields_set:  # a default never exceeds the cap
            job_values[key] = min(job_values[key], max_timeout_s)
    return AgentsConfig(agents=agents, max_timeout_s=max_timeout_s, **job_values)


def _check_timeouts(parsed: _File, source: Path, cap: float) -> None:
    """Refuse a timeout above the cap: it would hold a worker slot for longer."""
    found = [(f"agents.{n}.timeout_s", e.timeout_s) for n, e in parsed.agents.items()]
    found += [
        (f"jobs.{key}", getattr(parsed.jobs, key))
        for key in _JOB_TIMEOUTS
        if key in parsed.jobs.model_fields_set
    ]
    for where, value in found:
        if value is not None and value > cap:
            raise InvalidInput(
                f"{source}: {where} = {value:g} is above max_agent_timeout_s ({cap:g}); "
                "lower it, or raise max_agent_timeout_s",
                details={"field": where},
            )


def load_agents_config(
    path: Path | None,
    *,
    max_timeout_s: float = DEFAULT_MAX_AGENT_TIMEOUT_S,
    other_keys: Collection[str] = (),
) -> AgentsConfig:
    """The configuration in ``path``; without a file, the offline defaults."""
    if path is None or not path.exists():
        if path is not None:
            log.info("no agents file at %s; using the offline demo agent", path)
        return default_agents_config(max_timeout_s)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the agents file {path}: {exc}") from exc
    return parse_agents_config(text, path, max_timeout_s=max_timeout_s, other_keys=other_keys)


async def _check_one(spec: AgentSpec) -> AgentCheck:
    try:
        adapter = create_adapter(spec.adapter, spec.options)
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await adapter.check()
    except TimeoutError:
        return AgentCheck(ok=False, detail=f"no answer to the check within {CHECK_TIMEOUT_S:g}s")
    except Exception as exc:
        log.exception("checking agent %s failed", spec.name)
        return AgentCheck(ok=False, detail=f"check failed: {exc}")


async def check_agents(config: AgentsConfig) -> list[tuple[str, AgentCheck]]:
    """Whether each configured agent's program or endpoint is reachable, by name."""
    names = sorted(config.agents)
    checks = await asyncio.gather(*(_check_one(config.agents[name]) for name in names))
    return list(zip(names, checks, strict=True))
