r"""Google's Gemini CLI as an agent: ``gemini --output-format stream-json``.

The prompt goes on stdin (a non-TTY stdin makes gemini headless); the answer is
the concatenation of the assistant ``message`` deltas, the stats come from the
final ``result`` line. Gemini's documented exit codes are turned into
messages a person can act on.

Options: ``model``, ``approval_mode`` (default, auto_edit, yolo, plan: tools
needing approval are denied headless unless ``yolo``), ``max_attempts`` (API
attempts, default 2, written to the settings of the agent's own ``home``), plus
the common ``path``, ``extra_args``, ``kill_grace_s``, ``env`` and ``home``.

Measured against the real binary (0.61.0):

- ``@path`` in the prompt inlines that file and ``a@b`` becomes ``a @b``, even
  headless, and no switch turns that off; only ``\@`` is left alone (the
  backslash stays). So every ``@`` reaches gemini as ``\@``: no file of the
  workspace is inlined, but the model sees a backslash before each ``@``
  (said by ``check`` and in the README);
- a prompt starting with ``/`` may run a slash command: it gets a leading newline;
- in a folder it has not been told to trust it exits 55: the adapter sets
  ``GEMINI_CLI_TRUST_WORKSPACE=true`` (Orchestra chose the workspace);
- on an API error it exits with the HTTP status mod 256 (500 → 244, 429 → 173);
- its default retries take ~311 s for a persistent 500; usage statistics,
  telemetry and auto-update are on by default. These are settings only (no
  environment variable), so with ``home`` the adapter writes them to
  ``<home>/.gemini/settings.json`` when that file does not exist yet.
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
    as_int,
    clip,
    describe_call,
    opt_number,
    parse_json_line,
)

DEFAULT_MAX_ATTEMPTS = 2
_UNESCAPED_AT = re.compile(r"(?<!\\)@")
#: What ``orchestra agents`` says about prompts, as no switch makes them verbatim.
AT_NOTE = (
    "; note: gemini expands @path in prompts and offers no switch to stop it, so "
    "Orchestra sends every @ as \\@ (no file is inlined; the model sees the backslash)"
)

#: Gemini reads at most this much from stdin; a longer prompt would be cut silently.
STDIN_LIMIT_BYTES = 8 * 1000 * 1000

#: Gemini's exit codes: (short cause, what a person should do).
EXIT_CODES: dict[int, tuple[str, str]] = {
    41: ("auth", "authentication failed; run `gemini` once interactively or set GEMINI_API_KEY"),
    42: ("input", "gemini rejected its input (prompt or arguments)"),
    44: ("sandbox", "gemini's sandbox failed to start"),
    52: ("config", "gemini's configuration (settings.json) is invalid"),
    53: ("turn_limit", "gemini reached its maximum number of turns"),
    54: ("tool", "a tool call failed inside gemini"),
    55: ("untrusted_workspace", "gemini does not trust this workspace; trust the folder first"),
    130: ("cancelled", "gemini was cancelled (interrupted)"),
}


def api_status(returncode: int) -> int | None:
    """The HTTP status an exit code stands for: gemini exits with status mod 256."""
    status = returncode + 256
    return status if 400 <= status <= 599 else None


class GeminiAdapter(CliAdapter):
    name = "gemini"
    program = "gemini"
    version_args = ("--version",)
    options = frozenset({"model", "approval_mode", "max_attempts"})

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.max_attempts = int(
            opt_number(self.name, options, "max_attempts", DEFAULT_MAX_ATTEMPTS)
        )

    def default_env(self, home: Path | None) -> dict[str, str]:
        return {
            **super().default_env(home),
            # Orchestra chose the workspace; untrusted, a headless run exits 55.
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
            "GEMINI_TELEMETRY_ENABLED": "false",
        }

    def prepare_home(self, home: Path, env: Mapping[str, str]) -> None:
        """Write quiet default settings into the agent's own home, once."""
        super().prepare_home(home, env)
        settings = home / ".gemini" / "settings.json"
        if settings.exists():
            return
        values: dict[str, Any] = {
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False},
            "general": {
                "enableAutoUpdate": False,
                "enableAutoUpdateNotification": False,
                "maxAttempts": max(1, self.max_attempts),
            },
        }
        if env.get("GEMINI_API_KEY"):
            # Headless, gemini needs the auth type chosen in its settings.
            values["security"] = {"auth": {"selectedType": "gemini-api-key"}}
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")

    def stdin_text(self, prompt: str) -> str:
        # Gemini has no switch against @-expansion; an escaped @ is not expanded.
        text = escape_at(prompt)
        return "\n" + text if text.startswith("/") else text

    def check_note(self) -> str:
        return AT_NOTE

    def command(self, program: str, request: AgentRequest, scratch: Path) -> list[str]:
        argv = [program, "--output-format", "stream-json"]
        for option, flag in (("model", "--model"), ("approval_mode", "--approval-mode")):
            value = self.opt(option)
            if value is not None:
                argv += [flag, value]
        return argv + self.extra_args

    def parser(self, request: AgentRequest, progress: ProgressSink) -> OutputParser:
        return GeminiStream(progress)

    def prepare(self, request: AgentRequest) -> None:
        super().prepare(request)
        size = len(self.stdin_text(request.prompt).encode("utf-8"))  # as sent, escaped
        if size > STDIN_LIMIT_BYTES:
            raise AgentFailure(
                "agent_error",
                f"the prompt is {size} bytes; gemini reads at most {STDIN_LIMIT_BYTES} from stdin",
                retryable=False,
            )

    def exit_failure(
        self, returncode: int, reported: AgentFailure | None, stderr_tail: str
    ) -> AgentFailure:
        status = api_status(returncode)
        if status is not None:
            detail = f": {reported.message}" if reported else ""
            return AgentFailure(
                "exit_code",
                f"the model API answered {status} (gemini exit code {returncode}){detail}",
                stderr_tail=stderr_tail,
                meta={"exit_code": returncode, "api_error_status": status},
            )
        known = EXIT_CODES.get(returncode)
        if known is None:
            return super().exit_failure(returncode, reported, stderr_tail)
        cause, advice = known
        detail = f": {reported.message}" if reported else ""
        return AgentFailure(
            "exit_code",
            f"{advice} (exit code {returncode}){detail}",
            stderr_tail=stderr_tail,
            meta={"exit_code": returncode, "cause": cause},
        )


def escape_at(prompt: str) -> str:
    """Every ``@`` as ``\\@``: gemini's parser (``(?<!\\\\)@``) expands an ``@`` unless a
    backslash comes right before it, so exactly those get one."""
    return _UNESCAPED_AT.sub(r"\\@", prompt)


class GeminiStream:
    """Reads gemini's stream-json: assistant deltas, tool calls, the final ``result``."""

    def __init__(self, progress: ProgressSink) -> None:
        self.progress = progress
        self.parts: list[str] = []
        self.init: JSON = {}
        self.errors: list[str] = []
        self.final: JSON | None = None

    def feed(self, line: str) -> None:
        event = parse_json_line(line, "gemini")
        if event is None:
            return
        kind = event.get("type")
        if kind == "init":
            self.init = event
        elif kind == "message" and event.get("role") == "assistant":
            content = event.get("content")
            if isinstance(content, str) and content:
                self.parts.append(content)
                text = clip(content)
                if text:
                    self.progress("text", text)
        elif kind == "tool_use":
            self.progress(
                "tool", describe_call(str(event.get("tool_name", "tool")), event.get("parameters"))
            )
        elif kind == "error" and event.get("severity") != "warning":
            self.errors.append(str(event.get("message") or "error"))
        elif kind == "result":
            self.final = event

    def failure(self) -> AgentFailure | None:
        final = self.final
        if final is None or final.get("status") == "success":
            return None
        error = as_dict(final.get("error"))
        detail = error.get("message") or "; ".join(self.errors) or f"status {final.get('status')}"
        return AgentFailure(
            "agent_error",
            f"gemini failed: {detail}",
            meta={"session_id": self.init.get("session_id"), "error_type": error.get("type")},
        )

    def result(self) -> AgentResult:
        if self.final is None:
            raise AgentFailure(
                "bad_output", "gemini ended without its final `result` line; its output was cut off"
            )
        stats = as_dict(self.final.get("stats"))
        return AgentResult(
            content="".join(self.parts),
            tokens_in=as_int(stats.get("input_tokens")),
            tokens_out=as_int(stats.get("output_tokens")),
            duration_ms=as_int(stats.get("duration_ms")),
            session_id=self.init.get("session_id"),
            meta={
                "model": self.init.get("model"),
                "total_tokens": stats.get("total_tokens"),
                "tool_calls": stats.get("tool_calls"),
                "stats": stats,
            },
        )
