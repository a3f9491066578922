"""Claude Code as an agent: ``claude -p --output-format stream-json --verbose``.

``stream-json`` (which needs ``--verbose`` with ``-p``) gives progress as it
happens and a final ``result`` line carrying the answer, session, cost, tokens
and turns. A run whose output lacks that line was cut off, and is a failure
rather than an empty answer.

Options: ``model``, ``permission_mode``, ``tools`` (the only built-in tools the
model is offered, ``--tools=a,b``: the CLI enforces it), ``allowed_tools`` and
``disallowed_tools`` (pre-approve or refuse tools; passed as ``--allowedTools=a,b``
because the space-separated form swallows what follows), ``max_turns``,
``append_system_prompt``, ``max_retries`` (the CLI's API retries, default 1),
``resume`` (continue the previous iteration's session with ``--resume``),
plus the common ``path``, ``extra_args``, ``kill_grace_s``, ``env`` and ``home``.

Measured against the real binary (2.1.328):

- in ``permission_mode = "plan"`` the CLI tells the model to write its plan to
  ``~/.claude/plans/<slug>.md`` and its final answer is then a pointer to that
  file; the adapter answers with the plan file instead (the last one written in
  the run);
- ``@path`` in the prompt is expanded unless ``CLAUDE_CODE_DISABLE_FILE_MENTIONS=1``
  (set by default), and a prompt starting with ``/`` runs a slash command: such a
  prompt gets a leading newline, which the CLI passes on but does not read as a
  command;
- without ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` and friends it phones home,
  and it retries an API error 10 times (~185 s): both are off or bounded by default.
"""

from __future__ import annotations

import json
import logging
import os
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
    opt_number,
    opt_str_list,
    parse_json_line,
    sum_ints,
)

log = logging.getLogger(__name__)

#: Where Claude Code's plan mode has the model write its plan.
PLAN_DIR_MARK = "/.claude/plans/"
#: A plan file larger than this is not read back (the stream's copy is used).
PLAN_FILE_MAX_BYTES = 4 * 1024 * 1024
#: Claude Code retries an API error this often unless told (the CLI's default is 10).
DEFAULT_MAX_RETRIES = 1


class ClaudeAdapter(CliAdapter):
    name = "claude"
    program = "claude"
    version_args = ("-v",)
    session_gone_marks = ("no conversation found with session id",)
    options = frozenset(
        {
            "model",
            "permission_mode",
            "tools",
            "allowed_tools",
            "disallowed_tools",
            "max_turns",
            "append_system_prompt",
            "max_retries",
        }
    )
    list_options = frozenset({"tools", "allowed_tools", "disallowed_tools"})

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.tools = (
            opt_str_list(self.name, options, "tools") if options.get("tools") is not None else None
        )
        self.allowed_tools = opt_str_list(self.name, options, "allowed_tools")
        self.disallowed_tools = opt_str_list(self.name, options, "disallowed_tools")
        self.max_retries = int(opt_number(self.name, options, "max_retries", DEFAULT_MAX_RETRIES))

    def default_env(self, home: Path | None) -> dict[str, str]:
        return {
            **super().default_env(home),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(self.max_retries),
            "CLAUDE_CODE_DISABLE_FILE_MENTIONS": "1",
        }

    def stdin_text(self, prompt: str) -> str:
        # A leading "/" would run a slash command; after a newline it is plain text.
        return "\n" + prompt if prompt.startswith("/") else prompt

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
        if self.tools is not None:
            argv.append(f"--tools={','.join(self.tools)}")
        if self.allowed_tools:
            argv.append(f"--allowedTools={','.join(self.allowed_tools)}")
        if self.disallowed_tools:
            argv.append(f"--disallowedTools={','.join(self.disallowed_tools)}")
        if request.resume_session is not None:
            argv.append(f"--resume={request.resume_session}")
        if request.output_schema is not None:
            argv += ["--json-schema", json.dumps(request.output_schema, separators=(",", ":"))]
        return argv + self.extra_args

    def parser(self, request: AgentRequest, progress: ProgressSink) -> OutputParser:
        home = self.env_table.get("HOME")
        if not isinstance(home, str):
            home = str(self.home) if self.home is not None else os.path.expanduser("~")
        return ClaudeStream(progress, plans_dir=Path(home) / ".claude" / "plans")


class ClaudeStream:
    """Reads Claude Code's stream-json: progress from assistant blocks, the answer from
    the final ``result`` line. Unknown line types are ignored, as the format grows."""

    def __init__(self, progress: ProgressSink, plans_dir: Path | None = None) -> None:
        self.progress = progress
        self.plans_dir = plans_dir
        self.init: JSON = {}
        self.final: JSON | None = None
        #: The plan file written in plan mode, and the text last written to it.
        self.plan_path: str | None = None
        self.plan_text: str | None = None

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
                self._plan_write(block)

    def _plan_write(self, block: JSON) -> None:
        """Remember a write to a plan-mode plan file (``~/.claude/plans/*.md``)."""
        arguments = as_dict(block.get("input"))
        path = arguments.get("file_path")
        if not isinstance(path, str) or PLAN_DIR_MARK not in path or not path.endswith(".md"):
            return
        if self.plans_dir is not None:
            # Only a file inside the agent's own plans folder is read back, never a
            # path the model made look like one (``…/.claude/plans/../../.ssh/…``).
            try:
                Path(path).resolve().relative_to(self.plans_dir.resolve())
            except (OSError, ValueError):
                log.info("claude: ignoring a plan write outside %s: %s", self.plans_dir, path)
                return
        self.plan_path = path
        content = arguments.get("content")
        if block.get("name") == "Write" and isinstance(content, str):
            self.plan_text = content

    def plan(self) -> str | None:
        """The plan file's text as it is now (an Edit may follow the Write), else the
        last text written to it, else ``None`` when no plan file was written."""
        if self.plan_path is None:
            return None
        try:
            path = Path(self.plan_path)
            if path.stat().st_size <= PLAN_FILE_MAX_BYTES:
                return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.info("claude: cannot read the plan file %s: %s", self.plan_path, exc)
        return self.plan_text

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
            what = f"{what}: the model API answered {status}"
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
        plan = self.plan()
        extra: JSON = {}
        if plan is not None and plan.strip():
            # Plan mode: the final text only points at the plan file.
            extra = {"plan_file": self.plan_path, "final_text": content}
            content = plan
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
                **extra,
            },
        )
