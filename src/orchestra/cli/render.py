"""Rich renderings of the domain models: workflows, checkpoints, timelines, events.

Everything here takes domain models and returns renderables, so local and
remote commands (and the interactive run) show the same thing. A checkpoint is
rendered from its contract alone: no knowledge of the workflow behind it.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from orchestra.domain.code import (
    CheckOutcome,
    CodeChange,
    DiffFile,
    Finding,
    LineKind,
    PatchLine,
    WorktreeInfo,
    parse_patch,
)
from orchestra.domain.events import EventType
from orchestra.domain.models import (
    AgentOutput,
    AgentRun,
    BatchResult,
    Checkpoint,
    Consolidation,
    Event,
    History,
    Workflow,
)
from orchestra.domain.statuses import (
    ActionStyle,
    AgentRunStatus,
    BatchOutcome,
    CheckpointStatus,
    WorkflowStatus,
)

W, C, A = WorkflowStatus, CheckpointStatus, AgentRunStatus
# One map per enum: their values overlap ("pending", "running"), their meaning does not.
WORKFLOW_STYLE = {
    W.PENDING: "dim",
    W.RUNNING: "cyan",
    W.AWAITING_CHECKPOINT: "bold yellow",
    W.COMPLETED: "green",
    W.FAILED: "bold red",
    W.CANCELLED: "magenta",
}
CHECKPOINT_STYLE = {
    C.PENDING: "bold yellow",
    C.APPROVED: "green",
    C.EDITED: "green",
    C.REJECTED: "red",
    C.SUPERSEDED: "dim",
}
AGENT_RUN_STYLE = {
    A.RUNNING: "cyan",
    A.COMPLETED: "green",
    A.FAILED: "red",
    A.INTERRUPTED: "yellow",
    A.CANCELLED: "magenta",
    A.SKIPPED: "dim",
}
ACTION_STYLE = {
    ActionStyle.PRIMARY: "bold green",
    ActionStyle.SECONDARY: "bold",
    ActionStyle.DANGER: "bold red",
}
SEVERITY_STYLE = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}


def status_text(status: WorkflowStatus | CheckpointStatus | AgentRunStatus) -> Text:
    if isinstance(status, WorkflowStatus):
        style = WORKFLOW_STYLE[status]
    elif isinstance(status, CheckpointStatus):
        style = CHECKPOINT_STYLE[status]
    else:
        style = AGENT_RUN_STYLE[status]
    return Text(status.value, style=style)


def when(moment: datetime | None) -> str:
    """A timestamp in local time, to the second."""
    if moment is None:
        return "—"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``, ``3d 4h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def since(moment: datetime, now: datetime | None = None) -> str:
    return duration(((now or datetime.now(UTC)) - moment).total_seconds())


def due_text(cp: Checkpoint, now: datetime | None = None) -> str:
    """``due in 3h 59m`` / ``overdue 12m 04s`` for a checkpoint with a deadline, else ``""``."""
    if cp.due_at is None:
        return ""
    left = (cp.due_at - (now or datetime.now(UTC))).total_seconds()
    return f"due in {duration(left)}" if left > 0 else f"overdue {duration(-left)}"


# -- workflows -------------------------------------------------------------


#: Characters of an id shown in tables; any unique prefix of 4+ is accepted back.
SHORT_ID_CHARS = 8


def short_id(value: str) -> str:
    """An id as the CLI shows it (like git's short commit ids); ``--json`` has them whole."""
    return value[:SHORT_ID_CHARS]


def table_of(title: str, *columns: str, keep: tuple[str, ...] = ("ID", "Time", "Status")) -> Table:
    """A table whose ``keep`` columns (ids, times) never wrap; the others fold."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column in keep, overflow="fold")
    return table


def workflows_table(items: Sequence[Workflow]) -> Table:
    table = table_of("Workflows", "ID", "Name", "Status", "Step", "Iter", "Updated")
    for wf in items:
        table.add_row(
            short_id(wf.id),
            escape(wf.name),
            status_text(wf.status),
            wf.current_step or "—",
            f"{wf.iteration}/{wf.max_iterations}",
            f"{since(wf.updated_at)} ago",
        )
    return table


def worktrees_table(repo: str, items: Sequence[WorktreeInfo]) -> Table:
    """Orchestra's worktrees in ``repo``, narrow enough for 80 columns: the path
    relative to the repository, the branch, the workflow's short id and status
    ("left behind" when no workflow owns it: ``--prune`` removes it)."""
    title = f"Worktrees in {escape(written_out(repo))}"
    table = table_of(title, "Worktree", "Branch", "Workflow", "Status")
    for info in items:
        owner = info.workflow_id[:8] if info.workflow_id else "—"
        status = (
            Text("left behind", style="yellow")
            if info.workflow_id is None
            else Text(info.workflow_status or "unknown")
        )
        table.add_row(
            safe_text(_relative(info.path, repo)), safe_text(info.branch or "—"), owner, status
        )
    return table


def _relative(path: str, repo: str) -> str:
    for base in (Path(repo), Path(repo).resolve()):
        with contextlib.suppress(ValueError):
            return str(Path(path).relative_to(base))
    return path


#: The agents a workflow records, as the summary names them.
AGENT_JOBS = (
    ("Planner", "planner"),
    ("Reviewers", "reviewers"),
    ("Implementer", "implementer"),
    ("Code reviewers", "code_reviewers"),
)


def _agent_name(entry: Any) -> str:
    if isinstance(entry, Mapping):
        return f"{entry.get('name')} ({entry.get('adapter')})"
    return str(entry)


def workflow_summary(wf: Workflow) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Status", status_text(wf.status))
    grid.add_row("Step", wf.current_step or "—")
    grid.add_row("Iteration", f"{wf.iteration} of {wf.max_iterations}")
    grid.add_row("Type", wf.type)
    for label, job in AGENT_JOBS:
        entry = wf.agents.get(job)
        entries = entry if isinstance(entry, list) else [] if entry is None else [entry]
        if entries:
            grid.add_row(label, escape(", ".join(_agent_name(e) for e in entries)))
    if wf.workspace_path:
        grid.add_row("Workspace", escape(wf.workspace_path))
    grid.add_row(
        "Created", f"{when(wf.created_at)}" + (f" by {wf.created_by}" if wf.created_by else "")
    )
    grid.add_row("Updated", when(wf.updated_at))
    if wf.finished_at:
        grid.add_row("Finished", when(wf.finished_at))
    if wf.error:
        grid.add_row("Error", Text(wf.error, style="red"))
    return Panel(
        Group(grid, Text(""), Text("Prompt", style="bold"), Text(wf.prompt)),
        title=f"[bold]{escape(wf.name)}[/] · {wf.id}",
        title_align="left",
    )


def _run_detail(run: AgentRun) -> str:
    parts = [f"{run.duration_ms / 1000:.1f}s" if run.duration_ms is not None else ""]
    if run.tokens_in is not None or run.tokens_out is not None:
        parts.append(f"tokens {run.tokens_in or 0}→{run.tokens_out or 0}")
    if run.cost_usd:
        parts.append(f"${run.cost_usd:.4f}")
    if run.error:
        parts.append(run.error)
    return " · ".join(p for p in parts if p)


def timeline_table(history: History) -> Table:
    """Checkpoints (with their resolutions) and agent runs, in the order they happened."""
    rows: list[tuple[datetime, int, str, Text, str]] = []
    for run in history.agent_runs:
        what = f"agent {run.agent} ({run.adapter}) · {run.job} · attempt {run.attempt}"
        rows.append(
            (run.started_at, run.iteration, what, status_text(run.status), _run_detail(run))
        )
    for cp in history.checkpoints:
        what = f"checkpoint #{cp.number} {cp.title} [{cp.step_name}]"
        rows.append((cp.created_at, cp.iteration, what, status_text(cp.status), short_id(cp.id)))
        if cp.resolution is not None:
            r = cp.resolution
            notes = []
            if r.edited_content is not None and r.edited_content != cp.editable_content:
                notes.append("content edited")
            if r.inputs:
                notes += [f"{name} {value:g}" for name, value in sorted(r.inputs.items())]
            if r.notes:
                notes.append(f"notes: {r.notes}")
            if r.comments:
                notes.append(f"{len(r.comments)} line comment(s)")
            rows.append(
                (
                    r.resolved_at,
                    cp.iteration,
                    f"  ↳ {r.action} by {r.resolved_by}",
                    status_text(cp.status),
                    " · ".join(notes),
                )
            )
    rows.sort(key=lambda row: row[0])
    table = table_of("Timeline", "Time", "Iter", "What", "Status", "Detail")
    for moment, iteration, what, status, detail in rows:
        table.add_row(when(moment), str(iteration), escape(what), status, escape(detail))
    return table


def result_view(wf: Workflow) -> RenderableType:
    """How a finished workflow ended, with the final plan when there is one."""
    parts: list[RenderableType] = [
        Text.assemble("Workflow ", (wf.name, "bold"), " is ", status_text(wf.status), ".")
    ]
    if wf.error:
        parts.append(Text(wf.error, style="red"))
    result = wf.result or {}
    plan = result.get("plan")
    if isinstance(result.get("commit"), str) or result.get("discarded") is True:
        parts.append(code_result_view(result))
    elif isinstance(plan, str):
        iterations = result.get("iterations")
        title = "Final plan" + (f" (after {iterations} iteration(s))" if iterations else "")
        parts.append(Panel(Markdown(plan), title=title, title_align="left", border_style="green"))
    elif result:
        parts.append(Text(str(result)))
    return Group(*parts)


def code_result_view(result: Mapping[str, Any]) -> Text:
    """How an implementation ended: the commit on its branch (merged or why not), or
    discarded."""
    if result.get("discarded") is True:
        return Text("The change was discarded: no worktree or branch is left.", style="magenta")
    text = Text.assemble(("Committed ", "bold"), (str(result.get("commit"))[:12], "bold green"))
    if result.get("branch"):
        text.append(" on branch ")
        text.append_text(safe_text(str(result["branch"]), "bold"))
    text.append(". ")
    if result.get("merged") is True:
        text.append("Merged into the base branch.", style="green")
    else:
        text.append("Not merged.", style="yellow")
    if result.get("merge_note"):
        text.append(" ")
        text.append_text(safe_text(str(result["merge_note"]), "dim"))
    return text


# -- checkpoints -----------------------------------------------------------


def _review_markdown(review: Mapping[str, Any]) -> str:
    lines = []
    verdict = review.get("verdict") or "no verdict"
    confidence = review.get("confidence")
    lines.append(
        f"**Verdict: {verdict}**" + (f" (confidence {confidence:.0%})" if confidence else "")
    )
    if review.get("summary"):
        lines += ["", str(review["summary"])]
    issues = review.get("issues") or []
    if issues:
        lines += ["", "**Issues**", ""]
        for issue in issues:
            detail = f" — {issue.get('detail')}" if issue.get("detail") else ""
            category = f" ({issue.get('category')})" if issue.get("category") else ""
            where = ""
            if issue.get("file"):  # a code review's issue names its place
                line = f":{issue.get('line')}" if issue.get("line") is not None else ""
                where = f" `{issue.get('file')}{line}`"
            lines.append(
                f"- [{issue.get('severity')}]{where} {issue.get('title')}{category}{detail}"
            )
    for heading, key in (("Recommendations", "recommendations"), ("Questions", "questions")):
        if review.get(key):
            lines += ["", f"**{heading}**", ""] + [f"- {item}" for item in review[key]]
    return "\n".join(lines)


def agent_output_view(output: AgentOutput) -> Panel:
    failed = output.status is not AgentRunStatus.COMPLETED
    body: list[RenderableType] = []
    if output.error:
        body.append(Text(f"{output.status.value}: {output.error}", style="bold red"))
    text = _review_markdown(output.structured) if output.structured else output.content
    if text.strip():
        body.append(Markdown(text))
    elif not body:
        body.append(Text("(no output)", style="dim"))
    return Panel(
        Group(*body),
        title=f"[bold]{escape(output.agent)}[/] · {escape(output.job)}",
        title_align="left",
        border_style="red" if failed else "blue",
    )


def consolidation_view(consolidation: Consolidation) -> RenderableType:
    parts: list[RenderableType] = []
    if consolidation.verdicts:
        verdicts = table_of("Verdicts", "Reviewer", "Verdict", "Confidence", "Summary")
        for v in consolidation.verdicts:
            confidence = f"{v.confidence:.0%}" if v.confidence is not None else "—"
            verdicts.add_row(
                escape(v.agent), v.verdict or "plain text", confidence, escape(v.summary)
            )
        parts.append(verdicts)
    if consolidation.issues_by_severity:
        issues = table_of("Issues by severity", "Severity", "Issue", "Category", "Reviewer")
        for severity, items in consolidation.issues_by_severity.items():
            for issue in items:
                title = issue.title + (f"\n{issue.detail}" if issue.detail else "")
                issues.add_row(
                    Text(severity, style=SEVERITY_STYLE.get(severity, "")),
                    escape(title),
                    escape(issue.category or "—"),
                    escape(issue.agent),
                )
        parts.append(issues)
    if consolidation.recommendations:
        parts.append(
            Markdown(
                "**Recommendations**\n\n"
                + "\n".join(f"- {r}" for r in consolidation.recommendations)
            )
        )
    if consolidation.agreement:
        parts.append(Text(consolidation.agreement, style="italic"))
    return Panel(Group(*parts), title="Consolidated view", title_align="left")


def _context_view(context: Mapping[str, Any]) -> list[RenderableType]:
    """Scalars on one line; long texts (e.g. the current plan) as Markdown panels."""
    scalars, texts = [], []
    for key, value in context.items():
        label = key.replace("_", " ")
        if isinstance(value, str) and "\n" in value:
            texts.append(Panel(Markdown(value), title=label.capitalize(), title_align="left"))
        elif isinstance(value, str | int | float | bool):
            scalars.append(f"{label}: {value}")
        elif isinstance(value, list) and all(isinstance(v, str | int) for v in value):
            scalars.append(f"{label}: {', '.join(map(str, value))}")
    head: list[RenderableType] = [Text(" · ".join(scalars), style="dim")] if scalars else []
    return head + texts


def actions_view(cp: Checkpoint) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right")
    table.add_column()
    for number, action in enumerate(cp.actions, start=1):
        line = Text.assemble(
            (action.label, ACTION_STYLE[action.style]), (f"  [{action.name}]", "dim")
        )
        if action.name == cp.recommended:
            line.append("  ★ recommended", style="bold green")
        if action.requires_content:
            line.append("  (you write the text)", style="italic")
        for spec in action.inputs:
            line.append(
                f"\n  optional input {spec.name}: {spec.label}, {spec.bounds()}", style="dim"
            )
        if action.description:
            line.append(f"\n{action.description}", style="dim")
        table.add_row(f"{number}.", line)
    return table


# -- code under review ----------------------------------------------------------

#: Diff lines shown per file, and in all files together; the rest is counted, so a
#: huge change still prints quickly and the web page shows it whole.
CODE_LINES_PER_FILE = 400
CODE_LINES_TOTAL = 4000
#: Lines of the checks' output tail shown.
CHECK_TAIL_LINES = 30

LINE_STYLE = {
    LineKind.ADDED: "green",
    LineKind.REMOVED: "red",
    LineKind.SAME: "",
    LineKind.HUNK: "cyan",
}
LINE_MARK = {LineKind.ADDED: "+", LineKind.REMOVED: "-", LineKind.SAME: " ", LineKind.HUNK: ""}

# C0 and C1 controls (but tab), DEL, and the bidirectional overrides that make text
# read other than it runs ("trojan source").
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def written_out(text: str, *, newlines: bool = False) -> str:
    """``text`` with what would act on a terminal (ANSI escapes, carriage returns,
    bidi overrides, lone surrogates) written out as ``\\x1b``; newlines kept unless
    ``newlines`` is true (a path or one line must stay one line)."""
    if newlines:
        shown = _UNSAFE.sub(_escaped, text)
    else:
        shown = "\n".join(_UNSAFE.sub(_escaped, part) for part in text.split("\n"))
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_text(text: str, style: str = "") -> Text:
    """Text from an agent or a diff as a terminal shows it literally: never markup
    (a :class:`Text`), and control characters written out (:func:`written_out`)."""
    return Text(written_out(text), style=style)


def check_view(check: CheckOutcome) -> RenderableType:
    """The checks' result: passed or not, the command, its exit code, its output tail."""
    verdict = ("✓ checks passed", "bold green") if check.passed else ("✗ checks failed", "bold red")
    head = Text.assemble(verdict, "  ")
    head.append_text(safe_text(shlex.join(check.command), "bold"))
    exit_code = "no exit code" if check.exit_code is None else f"exit code {check.exit_code}"
    head.append(f"  · {exit_code} · {check.duration_ms / 1000:.1f}s", style="dim")
    parts: list[RenderableType] = [head]
    if check.problem:
        parts.append(safe_text(check.problem, "red"))
    tail = check.output_tail.rstrip("\n").split("\n") if check.output_tail.strip() else []
    if len(tail) > CHECK_TAIL_LINES:
        parts.append(Text(f"… {len(tail) - CHECK_TAIL_LINES} earlier lines", style="dim"))
        tail = tail[-CHECK_TAIL_LINES:]
    if tail:
        parts.append(safe_text("\n".join(tail), "dim"))
    return Panel(
        Group(*parts),
        title="Checks",
        title_align="left",
        border_style="green" if check.passed else "red",
    )


def finding_text(finding: Finding, *, where: bool = False) -> Text:
    """One finding: severity, title, detail, reviewer (and its file:line when asked)."""
    text = Text("▲ " if not where else "• ", style=SEVERITY_STYLE.get(finding.severity, ""))
    text.append(f"[{finding.severity}] ", style=SEVERITY_STYLE.get(finding.severity, "bold"))
    if where and finding.file:
        location = finding.file + (f":{finding.line}" if finding.line is not None else "")
        text.append_text(safe_text(location + " ", "bold"))
    text.append_text(safe_text(finding.title, "bold"))
    if finding.detail:
        text.append_text(safe_text(f" — {finding.detail}"))
    text.append_text(safe_text(f" ({finding.agent})", "dim italic"))
    return text


def _file_header(diff: DiffFile) -> Text:
    header = Text(written_out(diff.path, newlines=True), style="bold")
    header.append("  ")
    header.append(f"+{diff.added}", style="green")
    header.append(" ")
    header.append(f"−{diff.removed}", style="red")
    if diff.binary:
        header.append("  binary", style="dim")
    if diff.truncated:
        header.append("  (diff cut short)", style="yellow")
    return header


def finding_rows(lines: Sequence[PatchLine]) -> dict[int, int]:
    """Which line of ``lines`` each line number's findings go under: the line of the
    new file with that number, else the removed line of the old file with it (a
    number can name both), so each finding shows once."""
    chosen: dict[int, int] = {}
    fallback: dict[int, int] = {}
    for index, line in enumerate(lines):
        if line.new_no is not None:
            chosen.setdefault(line.new_no, index)
        elif line.kind is LineKind.REMOVED and line.old_no is not None:
            fallback.setdefault(line.old_no, index)
    return {**fallback, **chosen}


def file_view(
    diff: DiffFile, findings: Mapping[int, list[Finding]], room: int
) -> tuple[RenderableType, int]:
    """One file: its header, numbered and coloured diff lines, each finding under the
    line it names; at most ``room`` lines (the rest counted). Returns the view and the
    lines it used."""
    lines = parse_patch(diff.patch)
    under: dict[int, list[Finding]] = defaultdict(list)
    for number, index in finding_rows(lines).items():
        under[index] += findings.get(number, [])
    width = max([len(str(n)) for ln in lines for n in (ln.old_no, ln.new_no) if n] or [1])
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", no_wrap=True, style="dim", min_width=width)
    grid.add_column(justify="right", no_wrap=True, style="dim", min_width=width)
    grid.add_column(no_wrap=True, width=1)
    grid.add_column(overflow="fold")
    shown = min(room, len(lines))
    for index, line in enumerate(lines[:shown]):
        style = LINE_STYLE[line.kind]
        grid.add_row(
            str(line.old_no or ""),
            str(line.new_no or ""),
            Text(LINE_MARK[line.kind], style=style),
            safe_text(line.text, style),
        )
        for finding in under.get(index, []):
            grid.add_row("", "", "", finding_text(finding))
    parts: list[RenderableType] = [_file_header(diff)]
    if diff.binary:
        parts.append(Text("binary file: no diff shown", style="dim"))
    elif lines:
        parts.append(grid)
    if shown < len(lines):
        parts.append(Text(f"… {len(lines) - shown} more lines, see the web page", style="yellow"))
        # A finding on a line not shown still shows.
        parts += [
            finding_text(finding, where=True)
            for index in sorted(i for i in under if i >= shown)
            for finding in under[index]
        ]
    return Group(*parts), shown


def code_change_view(change: CodeChange) -> RenderableType:
    """The code under review: where it is, the checks, findings about no shown line,
    then every file's diff with findings under their lines (bounded in lines)."""
    parts: list[RenderableType] = []
    where = Text("Branch ", style="bold")
    where.append_text(safe_text(change.branch))
    where.append(f"  base {change.base[:12]} → snapshot {change.snapshot[:12]}", style="dim")
    parts.append(where)
    parts.append(Text.assemble(("Worktree ", "bold"), safe_text(change.worktree, "dim")))
    if change.check is not None:
        parts.append(check_view(change.check))
    unanchored = change.unanchored()
    if unanchored:
        parts.append(Text("Findings", style="bold"))
        parts += [finding_text(f, where=True) for f in unanchored]
    by_line: dict[str, dict[int, list[Finding]]] = defaultdict(lambda: defaultdict(list))
    for finding in change.findings:
        if finding.file is not None and finding.line is not None:
            by_line[finding.file][finding.line].append(finding)
    added = sum(f.added for f in change.files)
    removed = sum(f.removed for f in change.files)
    count = len(change.files) + change.files_omitted
    parts.append(Text(f"{count} file(s) changed, +{added} −{removed}", style="bold"))
    if not change.files:
        parts.append(Text("No changes.", style="dim"))
    room = CODE_LINES_TOTAL
    for diff in change.files:
        view, used = file_view(diff, by_line.get(diff.path, {}), min(room, CODE_LINES_PER_FILE))
        room -= used
        parts += [Text(""), view]
    if change.files_omitted:
        parts.append(Text(f"… {change.files_omitted} more files, see the web page", style="yellow"))
    return Panel(Group(*parts), title="Code under review", title_align="left")


def checkpoint_view(cp: Checkpoint) -> RenderableType:
    """The whole checkpoint: instructions, outputs, consolidation, content, actions."""
    parts: list[RenderableType] = []
    if cp.summary:
        parts.append(Text.assemble(("Needed: ", "bold"), cp.summary))
    if cp.deadline is not None:
        d = cp.deadline
        then = f"default action {d.action!r} was taken" if d.fired_at and d.action else ""
        line = f"{due_text(cp)} ({when(d.due_at)}); " + (then or f"then: {d.consequence()}")
        parts.append(
            Text.assemble(("Deadline: ", "bold"), line, f". {d.reason}" if d.reason else "")
        )
    parts.append(Text.assemble(("Instructions: ", "bold"), cp.instructions))
    parts += _context_view(cp.context)
    for output in cp.agent_outputs:
        if cp.editable_content and output.content == cp.editable_content:
            # Shown once, below, where it can be edited.
            line = f"{output.agent} wrote the {cp.editable_label.lower()} below."
            parts.append(Text(line, style="italic"))
        else:
            parts.append(agent_output_view(output))
    if cp.consolidation is not None:
        parts.append(consolidation_view(cp.consolidation))
    change = CodeChange.of(cp)
    if change is not None:
        parts.append(code_change_view(change))
    if cp.editable_content:
        parts.append(
            Panel(
                Markdown(cp.editable_content),
                title=f"[bold]{escape(cp.editable_label)}[/] (editable)",
                title_align="left",
                border_style="yellow",
            )
        )
    if cp.resolution is not None:
        r = cp.resolution
        parts.append(
            Text.assemble(
                ("Resolved: ", "bold"),
                f"{r.action} by {r.resolved_by} at {when(r.resolved_at)}",
                "".join(f" — {name} {value:g}" for name, value in sorted((r.inputs or {}).items())),
                f" — notes: {r.notes}" if r.notes else "",
            )
        )
        for comment in r.comments or []:
            said = Text(f"  {written_out(comment.file, newlines=True)}:{comment.line} ", "bold")
            said.append_text(safe_text(comment.body))
            parts.append(said)
    else:
        parts += [Text("Actions", style="bold"), actions_view(cp)]
    return Panel(
        Group(*parts),
        title=f"[bold]Checkpoint #{cp.number}: {escape(cp.title)}[/] ",
        subtitle=f"{cp.step_name} · iteration {cp.iteration} · {short_id(cp.id)}",
        title_align="left",
        subtitle_align="left",
        border_style=CHECKPOINT_STYLE[cp.status],
    )


#: How each outcome of a batch decision is shown.
_OUTCOME_STYLE = {
    BatchOutcome.RESOLVED: "green",
    BatchOutcome.ALREADY_RESOLVED: "yellow",
    BatchOutcome.INVALID: "red",
    BatchOutcome.NOT_FOUND: "red",
    BatchOutcome.FAILED: "red",
}


def batch_table(done: BatchResult) -> Table:
    """What a batch decision did to each checkpoint."""
    table = table_of(
        f"Batch: {done.resolved} of {len(done.items)} resolved",
        "Checkpoint",
        "Outcome",
        "Detail",
        keep=("Checkpoint", "Outcome"),
    )
    for item in done.items:
        table.add_row(
            short_id(item.checkpoint_id),
            Text(item.outcome, style=_OUTCOME_STYLE[item.outcome]),
            safe_text(item.message),
        )
    return table


def inbox_table(
    checkpoints: Sequence[Checkpoint],
    names: Mapping[str, str],
    now: datetime | None = None,
    *,
    snoozed: bool = False,
) -> Table:
    """The inbox; ``snoozed``: the snoozed ones, with when each comes back instead of
    its actions (so it still fits 80 columns)."""
    now = now or datetime.now(UTC)
    title = "Snoozed: back in the inbox when their time passes" if snoozed else None
    table = table_of(
        title or "Inbox: checkpoints waiting for a person",
        "Checkpoint",
        "Workflow",
        "Needed",
        "Iter",
        "Waiting",
        "Back in" if snoozed else "Actions",
        keep=("Checkpoint",),
    )
    for cp in checkpoints:
        last = ", ".join(a.name for a in cp.actions)
        if snoozed:
            back = (cp.snoozed_until - now).total_seconds() if cp.snoozed_until else 0
            last = f"{duration(back)} ({escape(cp.snoozed_by or '?')})"
        table.add_row(
            short_id(cp.id),
            escape(names.get(cp.workflow_id, cp.workflow_id)),
            escape(cp.summary or cp.title),
            str(cp.iteration),
            " · ".join(filter(None, [since(cp.created_at, now), due_text(cp, now)])),
            last,
        )
    return table


# -- events ----------------------------------------------------------------


def _progress_lines(lines: Iterable[Any]) -> str:
    texts = [str(line.get("text", "")) for line in lines if isinstance(line, Mapping)]
    return " | ".join(t for t in texts if t)


def event_text(event: Event) -> str:
    """One line saying what the event means."""
    d = event.data
    match event.type:
        case EventType.WORKFLOW_CREATED:
            return f"workflow created: {d.get('name')}"
        case EventType.WORKFLOW_STATUS_CHANGED:
            extra = d.get("error") or d.get("reason") or d.get("retried_by") or ""
            return f"workflow {d.get('from')} → {d.get('to')}" + (f" ({extra})" if extra else "")
        case EventType.STEP_STARTED:
            return f"step {d.get('step')} (iteration {d.get('iteration')})"
        case EventType.CHECKPOINT_CREATED:
            return f"checkpoint #{d.get('number')} {d.get('step')} waits: {d.get('checkpoint_id')}"
        case EventType.CHECKPOINT_STATUS_CHANGED:
            who = f" ({d.get('action')} by {d.get('resolved_by')})" if d.get("action") else ""
            return f"checkpoint {d.get('id')} {d.get('from')} → {d.get('to')}{who}"
        case EventType.CHECKPOINT_SNOOZED:
            what = f"snoozed until {d['until']}" if d.get("until") else "back in the inbox"
            return f"checkpoint {d.get('checkpoint_id')} {what} ({d.get('by')})"
        case EventType.AGENT_RUN_STARTED:
            return (
                f"agent {d.get('agent')} ({d.get('adapter')}) started "
                f"{d.get('step')}, attempt {d.get('attempt')}"
            )
        case EventType.AGENT_RUN_STATUS_CHANGED:
            error = f": {d.get('error')}" if d.get("error") else ""
            return f"agent {d.get('agent')} {d.get('to')}{error}"
        case EventType.AGENT_PROGRESS:
            return f"agent {d.get('agent')}: {_progress_lines(d.get('lines') or [])}"
    return f"{event.type.value} {d}"


def event_line(event: Event) -> Text:
    return Text.assemble((f"{when(event.created_at)} #{event.id} ", "dim"), event_text(event))
