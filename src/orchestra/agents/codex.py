"""OpenAI's Codex CLI as an agent: ``codex exec --json --skip-git-repo-check -C DIR -``.

``-`` makes codex read the prompt from stdin (never argv);
``--skip-git-repo-check`` lets it run in a workspace that is not a trusted git
checkout. The answer is the last ``agent_message`` item; tokens come from
``turn.completed``. Codex reports no cost.

Options: ``sandbox`` (read-only, workspace-write, danger-full-access),
``model``, plus the common ``path``, ``extra_args`` and ``kill_grace_s``.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    parse_json_line,
    sum_ints,
)


class CodexAdapter(CliAdapter):
    name = "codex"
    program = "codex"
    version_args = ("--version",)
    options = frozenset({"sandbox", "model"})

    def command(self, program: str, request: AgentRequest, scratch: Path) -> list[str]:
        argv = [program, "exec", "--json", "--skip-git-repo-check"]
        if request.workspace is not None:
            argv += ["-C", str(request.workspace)]
        for option, flag in (("sandbox", "--sandbox"), ("model", "--model")):
            value = self.opt(option)
            if value is not None:
                argv += [flag, value]
        if request.output_schema is not None:
            # Outside the workspace, so the agent's own file listing never shows it.
            schema_file = scratch / "output-schema.json"
            schema_file.write_text(json.dumps(request.output_schema), encoding="utf-8")
            argv += ["--output-schema", str(schema_file)]
        return [*argv, *self.extra_args, "-"]

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
        return AgentFailure(
            "agent_error", f"codex failed: {problem}", meta={"thread_id": self.thread_id}
        )

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
