"""A workspace's check command (e.g. ``["pytest", "-q"]``), run in an implementer's
worktree after each iteration, so the person deciding sees whether it passes.

The command is the operator's configuration, never a client's: an argument list
(no shell), run with the agents' process discipline (its own process group,
stopped whole on timeout or cancellation, Orchestra's secrets scrubbed from its
environment; see :mod:`orchestra.agents.subprocess_runner`). Only the tail of
its output is kept, bounded in lines and characters, for the checkpoint.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestra.agents.base import AgentFailure
from orchestra.agents.subprocess_runner import run_process

TAIL_LINES = 200
TAIL_LINE_CHARS = 500


@dataclass(frozen=True)
class CheckResult:
    """How the check ended: its exit code (None when stopped or not started), the
    tail of what it printed, and why it did not finish when it did not."""

    command: tuple[str, ...]
    exit_code: int | None
    output_tail: str
    duration_ms: int
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


async def run_check(command: Sequence[str], cwd: Path, *, timeout_s: float) -> CheckResult:
    """Run ``command`` in ``cwd`` with nothing on stdin, within ``timeout_s``."""
    if not command or not all(isinstance(part, str) and part for part in command):
        raise ValueError("a check command is a non-empty list of non-empty strings")
    lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def keep(line: str) -> None:
        lines.append(line[:TAIL_LINE_CHARS])

    argv = tuple(command)
    try:
        outcome = await run_process(
            argv, stdin_data=b"", on_line=keep, timeout_s=timeout_s, cwd=cwd
        )
    except AgentFailure as failure:
        tail = "\n".join([*lines, failure.stderr_tail or ""]).strip()
        return CheckResult(argv, None, tail, int(timeout_s * 1000), str(failure))
    stderr = outcome.stderr_tail.strip()
    tail = "\n".join([*lines, *([stderr] if stderr else [])])
    return CheckResult(argv, outcome.returncode, tail, outcome.duration_ms)
