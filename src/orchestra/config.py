"""Settings: defaults, then a TOML file, then ``ORCHESTRA_*`` variables, then flags.

The config file is ``$ORCHESTRA_CONFIG`` or ``<data dir>/orchestra.toml``; its
top-level keys are the field names below (``port = 3030``). The agents
configuration (``[agents.*]``, ``[jobs]``) may live in the same file.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from orchestra.agents.config import DEFAULT_MAX_AGENT_TIMEOUT_S
from orchestra.domain.deadlines import StepDeadline
from orchestra.domain.durations import parse_duration
from orchestra.domain.errors import InvalidInput
from orchestra.notifications.targets import NotifyTarget, check_unique_names

ENV_PREFIX = "ORCHESTRA_"


def default_data_dir() -> Path:
    return Path(os.environ.get("ORCHESTRA_DATA_DIR", Path.home() / ".orchestra"))


DEFAULT_CHECK_TIMEOUT_S = 600.0


def parse_link_ttl(text: str) -> timedelta:
    """``decision_link_ttl``: at least a minute, at most 30 days."""
    return parse_duration(
        text, field="decision_link_ttl", minimum=timedelta(minutes=1), maximum=timedelta(days=30)
    )


class WorkspaceSettings(BaseModel):
    """``[workspaces."<path>"]``: settings of the workspaces under one directory."""

    model_config = ConfigDict(extra="forbid")

    #: The check command run in an implementer's worktree (an argument list, no shell).
    check_command: list[str] | None = Field(default=None, min_length=1)
    check_timeout_s: float | None = Field(default=None, gt=0, le=86_400)


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    #: ``sqlite:///path`` or ``postgresql://…``; default: a SQLite file in data_dir.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=3030, ge=1, le=65535)
    #: Run the embedded worker inside ``orchestra serve``.
    worker: bool = True
    worker_concurrency: int = Field(default=32, ge=1, le=1000)
    lease_ttl_s: float = Field(default=30.0, gt=1)
    #: Workspaces must lie inside one of these (empty: the home and data directories).
    allowed_roots: list[Path] = Field(default_factory=list)
    #: The longest an agent may run, in seconds: configured timeouts and a retry's
    #: ``timeout_s`` above it are refused.
    max_agent_timeout_s: float = Field(default=DEFAULT_MAX_AGENT_TIMEOUT_S, ge=1, le=86_400)
    #: Serve without tokens (loopback only; must be asked for explicitly).
    no_auth: bool = False
    #: Host names the server answers to (the Host header; ``name`` for any port or
    #: ``name:port``). None: the loopback names plus the bind host when it is not a
    #: wildcard. ``"*"`` accepts any Host: only behind a proxy that checks it.
    #: Ignored with ``no_auth`` (loopback names only). Env: comma-separated.
    allowed_hosts: list[str] | None = None
    #: How long a web login lasts, in seconds (the session cookie's Max-Age).
    session_ttl_s: int = Field(default=12 * 3600, ge=60, le=90 * 24 * 3600)
    #: Largest accepted request body, in bytes.
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    #: Live event streams (SSE and WebSocket) one token (or ``local``) may hold open.
    max_streams_per_principal: int = Field(default=20, ge=1)
    #: Live event streams open on this server, all clients together.
    max_streams: int = Field(default=1000, ge=1)
    log_level: str = "INFO"
    config_file: Path | None = None
    #: Implement & Review: the command that checks an implementer's work, run in its
    #: worktree after each iteration (e.g. ``["pytest", "-q"]``; None: no check), and
    #: its timeout. ``[workspaces."<path>"]`` tables override both for workspaces there.
    check_command: list[str] | None = Field(default=None, min_length=1)
    check_timeout_s: float = Field(default=DEFAULT_CHECK_TIMEOUT_S, gt=0, le=86_400)
    workspaces: dict[str, WorkspaceSettings] = Field(default_factory=dict)
    #: ``[[notify]]`` tables: webhook targets (config file only).
    notify: list[NotifyTarget] = Field(default_factory=list)
    #: ``[deadlines.<step>]`` tables: a due time for the checkpoints of that step, the
    #: ``[[notify]]`` targets to escalate to, and a default action for workflows that
    #: opt in (config file only; after ``notify``, which they are checked against).
    deadlines: dict[str, StepDeadline] = Field(default_factory=dict)
    #: The address people reach the web UI at, for links in notifications
    #: (default: ``http://<host>:<port>``).
    public_url: str | None = None
    #: Retry backoff of notifications: ``notify_backoff_s * 2**(attempts-1)`` seconds,
    #: at most ``notify_backoff_max_s`` (no jitter, so tests can wait for it).
    notify_backoff_s: float = Field(default=2.0, gt=0, le=3600)
    notify_backoff_max_s: float = Field(default=3600.0, gt=0, le=86_400)
    #: How often the notifier looks for due deliveries another process queued.
    notify_poll_s: float = Field(default=1.0, gt=0, le=60)
    #: A checkpoint-pending notification links to ``<public_url>/d/<token>``: a
    #: single-use link that opens the checkpoint after a normal login (it decides
    #: nothing), valid for ``decision_link_ttl`` (``90m``, ``24h``, ``7d``).
    decision_links: bool = False
    decision_link_ttl: str = "24h"

    @field_validator("notify")
    @classmethod
    def _unique_targets(cls, targets: list[NotifyTarget]) -> list[NotifyTarget]:
        check_unique_names(targets)
        return targets

    @field_validator("decision_link_ttl")
    @classmethod
    def _link_ttl(cls, ttl: str) -> str:
        try:
            parse_link_ttl(ttl)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return ttl

    @property
    def link_ttl(self) -> timedelta | None:
        """How long a decision link lasts; None: notifications carry none."""
        if not self.decision_links:
            return None
        return parse_link_ttl(self.decision_link_ttl)

    @field_validator("deadlines")
    @classmethod
    def _known_targets(
        cls, deadlines: dict[str, StepDeadline], info: ValidationInfo
    ) -> dict[str, StepDeadline]:
        """An escalation to a target that does not exist would be silent: refused."""
        if "notify" not in info.data:
            return deadlines  # the targets are wrong themselves: that error is reported
        names = {t.name for t in info.data["notify"]}
        for step, deadline in deadlines.items():
            unknown = [n for n in deadline.escalate if n not in names]
            if unknown:
                known = ", ".join(sorted(names)) or "none are configured"
                raise ValueError(
                    f"[deadlines.{step}] escalates to unknown [[notify]] target(s) "
                    f"{', '.join(map(repr, unknown))} (targets: {known})"
                )
        return deadlines

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/") if url else url

    @property
    def link_base(self) -> str:
        """Where links in notifications point: ``public_url``, else this server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return self.public_url or f"http://{host}:{self.port}"

    def check_for(self, workspace: Path) -> dict[str, Any] | None:
        """The check a workflow in ``workspace`` runs: the most specific
        ``[workspaces]`` entry containing it, else the top-level setting."""
        command, timeout = self.check_command, self.check_timeout_s
        best = -1
        for raw, entry in self.workspaces.items():
            root = Path(raw).expanduser().resolve()
            if workspace.resolve().is_relative_to(root) and len(root.parts) > best:
                best = len(root.parts)
                command = entry.check_command if entry.check_command is not None else command
                timeout = entry.check_timeout_s or timeout
        if not command:
            return None
        return {"command": list(command), "timeout_s": timeout}

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'orchestra.db'}"

    @property
    def workspace_roots(self) -> list[Path]:
        """Where workspaces may lie: ``allowed_roots``, else the home and data directories."""
        return list(self.allowed_roots) or [Path.home(), self.data_dir]

    @property
    def agents_file(self) -> Path | None:
        """Where agents are configured: the config file, when it exists."""
        return self.config_file if self.config_file and self.config_file.exists() else None


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    """The ``ORCHESTRA_*`` variables as field values (booleans as pydantic reads them:
    1/0, true/false, yes/no, on/off; lists split on ``os.pathsep`` or commas)."""
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if name == "allowed_roots":
            values[name] = [p for p in raw.split(os.pathsep) if p]
        elif name == "allowed_hosts":
            values[name] = [h.strip() for h in raw.split(",") if h.strip()]
        elif name == "check_command":
            values[name] = shlex.split(raw)
        elif name in {"workspaces", "notify", "deadlines"}:
            continue  # tables: the config file only
        else:
            values[name] = raw
    return values


def load_settings(**flags: Any) -> Settings:
    """Build the settings; ``flags`` (``None`` values ignored) win over everything."""
    flags = {k: v for k, v in flags.items() if v is not None}
    env = _from_env(dict(os.environ))
    data_dir = Path(flags.get("data_dir") or env.get("data_dir") or default_data_dir())
    config_file = Path(
        flags.get("config_file")
        or os.environ.get("ORCHESTRA_CONFIG")
        or data_dir / "orchestra.toml"
    )
    file_values: dict[str, Any] = {}
    if config_file.exists():
        try:
            raw = tomllib.loads(config_file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{config_file}: not valid TOML: {exc}") from exc
        file_values = {k: v for k, v in raw.items() if k in Settings.model_fields}
    merged = {**file_values, **env, **flags, "data_dir": data_dir, "config_file": config_file}
    source = {
        **{k: str(config_file) for k in file_values},
        **{k: ENV_PREFIX + k.upper() for k in env},
        **{k: "the command line" for k in flags},
    }
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise InvalidInput(
            "invalid settings: " + "; ".join(_problem(e, merged, source) for e in exc.errors()),
            details={"fields": sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})},
        ) from exc


def _problem(error: ErrorDetails, merged: dict[str, Any], source: dict[str, str]) -> str:
    """One bad setting: its key, the value, where it came from, and what pydantic wants."""
    loc = error["loc"]
    key = str(loc[0]) if loc else "?"
    where = source.get(key, "the defaults")
    if key == "notify":  # never echo a table that may hold a secret: name the target
        return f"{_notify_place(loc, merged.get(key))} (from {where}): {error['msg']}"
    return f"{'.'.join(map(str, loc))} = {merged.get(key)!r} (from {where}): {error['msg']}"


def _notify_place(loc: tuple[int | str, ...], tables: Any) -> str:
    """``[[notify]] #2 ("ops").url``: which table and key, without the values."""
    if len(loc) < 2 or not isinstance(loc[1], int) or not isinstance(tables, list):
        return "[[notify]]"
    table = tables[loc[1]] if loc[1] < len(tables) else {}
    name = table.get("name") if isinstance(table, dict) else None
    field = "".join(f".{part}" for part in loc[2:3])
    label = f" ({name!r})" if isinstance(name, str) else ""
    return f"[[notify]] #{loc[1] + 1}{label}{field}"
