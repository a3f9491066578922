"""The offline demo agent: deterministic, instant by default, and plainly labelled.

It lets every path of a workflow run on a machine without any agent installed.
Options:

- ``delay_s`` (float, at most 600): hold the run open this long (to watch
  progress, or to exceed the timeout).
- ``fail``: ``"error"`` fails at once; ``"timeout"`` sleeps past the timeout.
- ``fail_unless_exists`` (path): fail with an error while that file is absent,
  so a test can make a later retry succeed.
- ``verdict``: the verdict its reviews give (default ``approve_with_changes`` on
  a first review, ``approve`` once the plan has been revised).

As an implementer (job ``implementer``) it changes its working directory the way a
coding agent does, deterministically: it adds a section to ``ORCHESTRA_DEMO.md``
quoting the prompt's first line (one section per run, so each iteration differs).
As a code reviewer it anchors its finding to the first added line of the diff.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from orchestra.agents.base import AgentCheck, AgentFailure, AgentRequest, AgentResult, ProgressSink
from orchestra.agents.subprocess_runner import check_options, opt_number, opt_str
from orchestra.domain.errors import InvalidInput
from orchestra.workflows.reviews import VERDICTS

#: The demo's longest delay: it is for watching progress, not for holding a worker.
MAX_DELAY_S = 600.0
_OPTIONS = frozenset({"delay_s", "fail", "fail_unless_exists", "verdict"})
_FAILS = ("error", "timeout")

DEMO_NOTICE = "This was written by Orchestra's offline demo agent, not by a real model."
#: The file the demo implementer changes in its working directory.
DEMO_FILE = "ORCHESTRA_DEMO.md"
_DIFF_FILE = re.compile(r"^\+\+\+ b/(.+)$")
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


class DemoAdapter:
    name = "demo"

    def __init__(self, options: Mapping[str, Any]) -> None:
        check_options(self.name, options, _OPTIONS)
        self.delay_s = opt_number(self.name, options, "delay_s", 0.0)
        if self.delay_s > MAX_DELAY_S:
            raise InvalidInput(
                f"option 'delay_s' of the demo adapter must be at most {MAX_DELAY_S:g} seconds",
                details={"adapter": self.name, "field": "delay_s"},
            )
        self.fail = _one_of(options, "fail", _FAILS)
        self.fail_unless_exists = opt_str(self.name, options, "fail_unless_exists")
        self.verdict = _one_of(options, "verdict", VERDICTS)

    async def check(self) -> AgentCheck:
        return AgentCheck(ok=True, detail="built in (offline demo)")

    async def run(self, request: AgentRequest, progress: ProgressSink) -> AgentResult:
        if self.fail == "error" or (
            self.fail_unless_exists and not Path(str(self.fail_unless_exists)).exists()
        ):
            raise AgentFailure(
                "agent_error",
                "the demo agent was configured to fail",
                stderr_tail="demo: simulated failure\n",
            )
        delay = self.delay_s
        if self.fail == "timeout":
            delay = max(delay, request.timeout_s + 60)
        if delay > 0:
            progress("status", "demo agent thinking…")
            try:
                async with asyncio.timeout(request.timeout_s):
                    await asyncio.sleep(delay)
            except TimeoutError:
                raise AgentFailure("timeout", f"no answer within {request.timeout_s:g}s") from None
        if request.job == "implementer" and request.workspace is not None:
            return await asyncio.to_thread(self._implement, request)
        if request.output_schema is not None:
            review = self._review(request.prompt)
            return AgentResult(
                content=orjson.dumps(review, option=orjson.OPT_INDENT_2).decode(),
                structured=review,
                tokens_in=len(request.prompt.split()),
                tokens_out=60,
                cost_usd=0.0,
                duration_ms=0,
            )
        plan = self._plan(request.prompt)
        progress("text", plan.splitlines()[0])
        return AgentResult(
            content=plan,
            tokens_in=len(request.prompt.split()),
            tokens_out=len(plan.split()),
            cost_usd=0.0,
            duration_ms=int(delay * 1000),
        )

    def _plan(self, prompt: str) -> str:
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
        quoted = "\n".join(f"> {line}" for line in prompt.strip().splitlines()[:40])
        return (
            f"# Plan (demo {digest})\n\n"
            f"_{DEMO_NOTICE}_\n\n"
            "## What was asked\n\n"
            f"{quoted}\n\n"
            "## Steps\n\n"
            "1. Read the relevant code and write down the current behaviour.\n"
            "2. Make the smallest change that delivers the request.\n"
            "3. Add tests that fail before the change and pass after it.\n"
            "4. Update the documentation and the changelog.\n\n"
            "## Risks\n\n"
            "- The demo agent does not read code; a real agent would.\n"
        )

    def _implement(self, request: AgentRequest) -> AgentResult:
        assert request.workspace is not None
        target = request.workspace / DEMO_FILE
        digest = hashlib.sha256(request.prompt.encode()).hexdigest()[:8]
        before = target.read_text() if target.is_file() else "# Changes by the demo agent\n"
        runs = before.count("\n## Run ") + 1
        first = next((ln for ln in request.prompt.splitlines() if ln.strip()), "")[:200]
        target.write_text(
            f"{before}\n## Run {runs} (demo {digest})\n\n{DEMO_NOTICE}\n\n> {first}\n"
        )
        summary = f"Updated {DEMO_FILE} (run {runs}). {DEMO_NOTICE}"
        return AgentResult(
            content=summary,
            tokens_in=len(request.prompt.split()),
            tokens_out=len(summary.split()),
            cost_usd=0.0,
            duration_ms=0,
        )

    def _review(self, prompt: str) -> dict[str, Any]:
        revised = "revision" in prompt.lower() or "feedback" in prompt.lower()
        verdict = self.verdict or ("approve" if revised else "approve_with_changes")
        where = _first_added_line(prompt)
        if where is not None:  # a code review: anchor the finding to a line of the diff
            return {
                "verdict": self.verdict or "approve_with_changes",
                "summary": f"Demo code review. {DEMO_NOTICE}",
                "confidence": 0.5,
                "issues": [
                    {
                        "severity": "low",
                        "category": "testing",
                        "title": "Add a test for this line",
                        "detail": "The demo agent flags the first added line of the diff.",
                        "file": where[0],
                        "line": where[1],
                    }
                ],
                "recommendations": ["Keep the change small."],
                "questions": [],
            }
        return {
            "verdict": verdict,
            "summary": f"Demo review. {DEMO_NOTICE}",
            "confidence": 0.5,
            "issues": []
            if verdict == "approve"
            else [
                {
                    "severity": "medium",
                    "category": "testing",
                    "title": "Name the tests that prove the change",
                    "detail": "Step 3 should list the test cases.",
                }
            ],
            "recommendations": ["Keep the change small."],
            "questions": [],
        }


def _one_of(options: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = options.get(key)
    if value is not None and value not in allowed:
        raise InvalidInput(
            f"option {key!r} of the demo adapter must be one of {', '.join(allowed)}",
            details={"adapter": "demo", "field": key},
        )
    return value


def _first_added_line(prompt: str) -> tuple[str, int] | None:
    """The file and new line number of the first added line of a diff in ``prompt``."""
    path: str | None = None
    line = 0
    for text in prompt.splitlines()[:20_000]:
        if found := _DIFF_FILE.match(text):
            path, line = found.group(1), 0
        elif path is not None and (hunk := _HUNK.match(text)):
            line = int(hunk.group(1))
        elif path is not None and line and text.startswith("+"):
            return path, line
        elif path is not None and line and text.startswith(" "):
            line += 1
    return None
