"""Google's Gemini CLI as an agent: ``gemini --output-format stream-json``.

The prompt goes on stdin (a non-TTY stdin makes gemini headless); the answer is
the concatenation of the assistant ``message`` deltas, the stats come from the
final ``result`` line. Gemini's documented exit codes are turned into
messages a person can act on.

Options: ``model``, ``approval_mode`` (default, auto_edit, yolo, plan: tools
needing approval are denied headless unless ``yolo``), plus the common
``path``, ``extra_args`` and ``kill_grace_s``.
"""

from __future__ import annotations

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
    as_int,
    clip,
    describe_call,
    parse_json_line,
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


class GeminiAdapter(CliAdapter):
    name = "gemini"
    program = "gemini"
    version_args = ("--version",)
    options = frozenset({"model", "approval_mode"})

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
        size = len(request.prompt.encode("utf-8"))
        if size > STDIN_LIMIT_BYTES:
            raise AgentFailure(
                "agent_error",
                f"the prompt is {size} bytes; gemini reads at most {STDIN_LIMIT_BYTES} from stdin",
                retryable=False,
            )

    def exit_failure(
        self, returncode: int, reported: AgentFailure | None, stderr_tail: str
    ) -> AgentFailure:
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
