"""OpenAI's Codex CLI as an agent: ``codex exec --json --skip-git-repo-check -C DIR -``.

``-`` makes codex read the prompt from stdin (never argv);
``--skip-git-repo-check`` lets it run in a workspace that is not a trusted git
checkout. The answer is the last ``agent_message`` item; tokens come from
``turn.completed``. Codex reports no cost.

Options: ``sandbox`` (read-only, workspace-write, danger-full-access),
``model``, ``resume`` (continue the previous iteration's session with
``codex exec resume ID``), ``model_provider`` (a provider of codex's ``config.toml``; its API
retries are then bounded by ``max_retries``, default 1: codex refuses overrides
of its built-in ``openai`` provider, whose retries take a couple of seconds),
plus the common ``path``, ``extra_args``, ``kill_grace_s``, ``env`` and ``home``
(with ``home``, ``CODEX_HOME`` is ``<home>/.codex``).

Measured against the real binary (0.169.0): every run tries github.com,
api.github.com and chatgpt.com (plugin sync, analytics, update checks) unless
told not to, so the adapter passes ``-c`` overrides turning those off; on an
HTTP 500 codex replaces the server's message with a generic "high demand" text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestra.agents.base import (
    JSON,
    AgentFailure,
    AgentRequest,
    AgentResult,
    ProgressSink,
)
from orchestra.agents.subprocess_runner import (
    CliAdapter,
    OutputParser,
    as_dict,
    clip,
    opt_number,
    opt_str,
    parse_json_line,
    sum_ints,
)
from orchestra.domain.errors import InvalidInput

#: ``-c`` overrides that keep codex from phoning home (plugin sync, analytics, updates).
QUIET_OVERRIDES = (
    "check_for_update_on_startup=false",
    "analytics.enabled=false",
    "features.plugins=false",
    "features.remote_plugin=false",
    "features.apps=false",
    "features.in_app_updates=false",
    "features.daemon_auto_start=false",
)
DEFAULT_MAX_RETRIES = 1
_PROVIDER = re.compile(r"^[A-Za-z0-9_-]+$")
_LAST_STATUS = re.compile(r"last status: (\d{3})")
#: What codex says instead of the server's message on an HTTP 5xx.
_HIGH_DEMAND = "high demand"


class CodexAdapter(CliAdapter):
    name = "codex"
    program = "codex"
    version_args = ("--version",)
    session_gone_marks = ("no rollout found for thread id",)
    options = frozenset({"sandbox", "model", "model_provider", "max_retries"})

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.provider = opt_str(self.name, options, "model_provider")
        if self.provider is not None and not _PROVIDER.match(self.provider):
            raise InvalidInput(
                f"option 'model_provider' of the codex adapter must be a provider name "
                f"(letters, digits, - and _), not {self.provider!r}"
            )
        self.max_retries = int(opt_number(self.name, options, "max_retries", DEFAULT_MAX_RETRIES))

    def default_env(self, home: Path | None) -> dict[str, str]:
        env = super().default_env(home)
        if home is not None:
            env["CODEX_HOME"] = str(home / ".codex")
        return env

    def prepare_home(self, home: Path, env: Mapping[str, str]) -> None:
        super().prepare_home(home, env)
        Path(env.get("CODEX_HOME") or home / ".codex").mkdir(parents=True, exist_ok=True)

    def command(self, program: str, request: AgentRequest, scratch: Path) -> list[str]:
        # ``exec resume`` takes -C/--sandbox/--model only before the subcommand.
        placement: list[str] = []
        if request.workspace is not None:
            placement += ["-C", str(request.workspace)]
        for option, flag in (("sandbox", "--sandbox"), ("model", "--model")):
            value = self.opt(option)
            if value is not None:
                placement += [flag, value]
        resuming = request.resume_session is not None
        argv = [program, "exec", *placement, *(["resume"] if resuming else [])]
        argv += ["--json", "--skip-git-repo-check"]
        for override in QUIET_OVERRIDES:
            argv += ["-c", override]
        if self.provider is not None:
            argv += ["-c", f"model_provider={json.dumps(self.provider)}"]
            for key in ("request_max_retries", "stream_max_retries"):
                argv += ["-c", f"model_providers.{self.provider}.{key}={self.max_retries}"]
        if request.output_schema is not None:
            # Outside the workspace, so the agent's own file listing never shows it.
            schema_file = scratch / "output-schema.json"
            schema_file.write_text(json.dumps(request.output_schema), encoding="utf-8")
            argv += ["--output-schema", str(schema_file)]
        session = [request.resume_session] if request.resume_session is not None else []
        return [*argv, *self.extra_args, *session, "-"]

    def parser(self, request: AgentRequest, progress: ProgressSink) -> OutputParser:
        return CodexStream(progress)


class CodexStream:
    """Reads ``codex exec --json`` events.

    An ``error`` event followed by a completed turn was a hiccup codex recovered
    from (it retries its own stream); only an unrecovered one is a failure.
    """

    def __init__(self, progress: ProgressSink) -> None:
        self.progress = progress
        self.thread_id: str | None = None
        self.message: str | None = None
        self.usage: list[JSON] = []
        self.error: str | None = None
        self.turn_failed: str | None = None

    def feed(self, line: str) -> None:
        event = parse_json_line(line, "codex")
        if event is None:
            return
        kind = event.get("type")
        item = as_dict(event.get("item"))
        if kind == "thread.started":
            self.thread_id = str(event.get("thread_id") or "") or None
        elif kind == "item.started" and item.get("type") == "command_execution":
            self.progress("command", clip(str(item.get("command", ""))))
        elif kind == "item.completed" and item.get("type") == "agent_message":
            self.message = str(item.get("text", ""))
            self.progress("text", clip(self.message))
        elif kind == "turn.completed":
            self.usage.append(as_dict(event.get("usage")))
            self.error = None
        elif kind == "error":
            self.error = str(event.get("message") or "codex reported an error")
        elif kind == "turn.failed":
            error = as_dict(event.get("error"))
            self.turn_failed = str(error.get("message") or self.error or "the turn failed")

    def failure(self) -> AgentFailure | None:
        problem = self.turn_failed or self.error
        if problem is None:
            return None
        status = _LAST_STATUS.search(problem)
        meta: JSON = {"thread_id": self.thread_id}
        if status:
            cause = f"the model API answered {status.group(1)}: "
            meta["api_error_status"] = int(status.group(1))
        elif _HIGH_DEMAND in problem:
            # codex hides the status of a 5xx behind this text.
            cause = "the model API answered 500 or another server error (5xx): "
            meta["api_error_status"] = 500
        elif "invalid_json_schema" in problem:
            cause = "the model API refused the output schema: "
            meta["api_error_status"] = 400
        else:
            cause = ""
        return AgentFailure("agent_error", f"codex failed: {cause}{problem}", meta=meta)

    def result(self) -> AgentResult:
        if self.message is None:
            raise AgentFailure(
                "bad_output", "codex finished without an agent message; its output was cut off"
            )
        return AgentResult(
            content=self.message,
            tokens_in=sum_ints(u.get("input_tokens") for u in self.usage),
            tokens_out=sum_ints(u.get("output_tokens") for u in self.usage),
            session_id=self.thread_id,
            meta={
                "cached_input_tokens": sum_ints(u.get("cached_input_tokens") for u in self.usage),
                "turns": len(self.usage),
                "usage": self.usage[-1] if self.usage else {},
            },
        )
