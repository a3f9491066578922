"""Claude Code as an agent: ``claude -p --output-format stream-json --verbose``.

``stream-json`` (which needs ``--verbose`` with ``-p``) gives progress as it
happens and a final ``result`` line carrying the answer, session, cost, tokens
and turns. A run whose output lacks that line was cut off, and is a failure
rather than an empty answer.

Options: ``model``, ``permission_mode``, ``allowed_tools`` (list, passed as
``--allowedTools=a,b`` because the space-separated form swallows what follows),
``max_turns``, ``append_system_prompt``, plus the common ``path``,
``extra_args`` and ``kill_grace_s``.
"""

from __future__ import annotations

import json
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
    as_int,
    clip,
    describe_call,
    opt_str_list,
    parse_json_line,
    sum_ints,
)


class ClaudeAdapter(CliAdapter):
    name = "claude"
    program = "claude"
    version_args = ("-v",)
    options = frozenset(
        {"model", "permission_mode", "allowed_tools", "max_turns", "append_system_prompt"}
    )
    list_options = frozenset({"allowed_tools"})

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.allowed_tools = opt_str_list(self.name, options, "allowed_tools")

    def command(self, program: str, request: AgentRequest, scratch: Path) -> list[str]:
        argv = [program, "-p", "--output-format", "stream-json", "--verbose"]
        for option, flag in (
            ("model", "--model"),
            ("permission_mode", "--permission-mode"),
            ("max_turns", "--max-turns"),
            ("append_system_prompt", "--append-system-prompt"),
        ):
            value = self.opt(option)
            if value is not None:
                argv += [flag, value]
        if self.allowed_tools:
            argv.append(f"--allowedTools={','.join(self.allowed_tools)}")
        if request.output_schema is not None:
            argv += ["--json-schema", json.dumps(request.output_schema, separators=(",", ":"))]
        return argv + self.extra_args

    def parser(self, request: AgentRequest, progress: ProgressSink) -> OutputParser:
        return ClaudeStream(progress)


class ClaudeStream:
    """Reads Claude Code's stream-json: progress from assistant blocks, the answer from
    the final ``result`` line. Unknown line types are ignored, as the format grows."""

    def __init__(self, progress: ProgressSink) -> None:
        self.progress = progress
        self.init: JSON = {}
        self.final: JSON | None = None

    def feed(self, line: str) -> None:
        event = parse_json_line(line, "claude")
        if event is None:
            return
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            self.init = event
        elif kind == "assistant":
            self._assistant(event)
        elif kind == "result":
            self.final = event

    def _assistant(self, event: JSON) -> None:
        blocks = as_dict(event.get("message")).get("content")
        for block in blocks if isinstance(blocks, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                text = clip(block["text"])
                if text:
                    self.progress("text", text)
            elif block.get("type") == "tool_use":
                self.progress(
                    "tool", describe_call(str(block.get("name", "tool")), block.get("input"))
                )

    def failure(self) -> AgentFailure | None:
        final = self.final
        if final is None:
            return None
        subtype = str(final.get("subtype", ""))
        if not final.get("is_error") and not subtype.startswith("error"):
            return None
        errors = final.get("errors")
        detail = (
            "; ".join(str(e) for e in errors)
            if isinstance(errors, list) and errors
            else str(final.get("result") or final.get("terminal_reason") or "no detail given")
        )
        status = final.get("api_error_status")
        what = (
            subtype
            if subtype.startswith("error")
            else str(final.get("terminal_reason") or "an error")
        )
        if status is not None:
            what += f" (HTTP {status})"
        return AgentFailure(
            "agent_error",
            f"claude stopped with {what}: {detail}",
            meta={
                "subtype": subtype,
                "terminal_reason": final.get("terminal_reason"),
                "api_error_status": status,
                "session_id": final.get("session_id"),
                "cost_usd": final.get("total_cost_usd"),
            },
        )

    def result(self) -> AgentResult:
        final = self.final
        if final is None:
            raise AgentFailure(
                "bad_output",
                "claude ended without its final `result` line: it crashed or its output was cut",
            )
        content = final.get("result")
        if not isinstance(content, str):
            raise AgentFailure("bad_output", "claude's final `result` line has no `result` text")
        usage = as_dict(final.get("usage"))
        structured = final.get("structured_output")
        cost = final.get("total_cost_usd")
        return AgentResult(
            content=content,
            structured=structured if isinstance(structured, dict) else None,
            tokens_in=sum_ints(
                usage.get(key)
                for key in (
                    "input_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                )
            ),
            tokens_out=as_int(usage.get("output_tokens")),
            cost_usd=float(cost) if isinstance(cost, int | float) else None,
            duration_ms=as_int(final.get("duration_ms")),
            session_id=final.get("session_id") or self.init.get("session_id"),
            meta={
                "num_turns": final.get("num_turns"),
                "duration_api_ms": final.get("duration_api_ms"),
                "stop_reason": final.get("stop_reason"),
                "model": self.init.get("model"),
                "usage": usage,
                "permission_denials": final.get("permission_denials") or [],
            },
        )
