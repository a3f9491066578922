"""``orchestra run``: a workflow (Plan & Review, or Implement & Review with
``--type plan_implement``) driven from the terminal; ``orchestra implement``
continues a completed Plan & Review the same way.

The workflow lives in the database like any other: this command creates it
(or picks it up with ``--resume``), runs a worker in-process while agents work
(or lets the server's worker do it, with ``--server``), shows each checkpoint,
and records the person's decision through the service layer. Nothing here
holds state that matters: Ctrl-C at any moment leaves the workflow resumable.

The loop alternates between waiting on the event loop (agents working, shown
as a live progress display read from the event log) and plain blocking
prompts, so Ctrl-C is an ordinary ``KeyboardInterrupt`` in both.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from orchestra.cli.app import DatabaseUrl, Server, Token, app, console, globals_of, open_backend
from orchestra.cli.backend import Backend, is_settled
from orchestra.cli.comments import (
    CommentError,
    check_count,
    parse_option,
    parse_review,
    review_file,
)
from orchestra.cli.editor import edit_text, editor_command
from orchestra.cli.errors import CliError, ExitCode, err_console, exits_on_errors, report
from orchestra.cli.render import (
    AGENT_RUN_STYLE,
    actions_view,
    checkpoint_view,
    duration,
    result_view,
    workflow_summary,
)
from orchestra.domain.code import CodeChange
from orchestra.domain.errors import Conflict, InvalidInput
from orchestra.domain.events import EventType
from orchestra.domain.models import (
    ActionInput,
    Checkpoint,
    CheckpointAction,
    Decision,
    Event,
    LineComment,
    Workflow,
)
from orchestra.domain.statuses import AgentRunStatus, WorkflowStatus

NAME_CHARS = 60
DIFF_LINES = 40
PLAN_IMPLEMENT = "plan_implement"
#: The most of a --plan-file read (the server bounds the plan itself).
PLAN_FILE_BYTES = 1_000_000


def parse_agent(raw: str) -> str:
    """``NAME``: an agent configured in the agents file (the server checks which exist).

    Adapters and their options are the operator's, set in that file, never on the
    command line, so ``ADAPTER:key=value`` is refused here with the way to do it."""
    name = raw.strip()
    if not name:
        raise typer.BadParameter(f"{raw!r}: the agent name is empty")
    if ":" in name or "=" in name:
        raise typer.BadParameter(
            f"{raw!r}: give a configured agent's name; options are set in the agents file "
            "([agents.NAME] with [agents.NAME.options]), see `orchestra agents`"
        )
    return name


# -- progress ----------------------------------------------------------------


@dataclass
class _Running:
    agent: str
    adapter: str
    attempt: int
    started: datetime
    last: str = ""


@dataclass
class AgentBoard:
    """Which agents are running, built from the event log; renders as a live display."""

    step: str | None = None
    running: dict[str, _Running] = field(default_factory=dict)

    def apply(self, event: Event) -> Text | None:
        """Take ``event`` into account; return a line worth printing, if any."""
        d = event.data
        if event.type is EventType.STEP_STARTED:
            self.step = str(d.get("step"))
            return None
        if event.type is EventType.AGENT_RUN_STARTED:
            self.running[str(d.get("agent_run_id"))] = _Running(
                agent=str(d.get("agent")),
                adapter=str(d.get("adapter")),
                attempt=int(d.get("attempt") or 1),
                started=event.created_at,
            )
            return Text(
                f"▶ {d.get('step')}: {d.get('agent')} ({d.get('adapter')}) started, "
                f"attempt {d.get('attempt')}"
            )
        if event.type is EventType.AGENT_RUN_STATUS_CHANGED:
            run = self.running.pop(str(d.get("id")), None)
            status = AgentRunStatus(str(d.get("to")))
            took = (
                f" in {duration((event.created_at - run.started).total_seconds())}" if run else ""
            )
            error = f": {d.get('error')}" if d.get("error") else ""
            return Text(
                f"{'✓' if status is AgentRunStatus.COMPLETED else '✗'} {d.get('agent')} "
                f"{status.value}{took}{error}",
                style=AGENT_RUN_STYLE[status],
            )
        if event.type is EventType.AGENT_PROGRESS:
            run = self.running.get(str(d.get("agent_run_id")))
            lines = [line for line in d.get("lines") or [] if isinstance(line, dict)]
            if run is not None and lines:
                run.last = str(lines[-1].get("text", ""))
        return None

    def __rich__(self) -> RenderableType:
        count = len(self.running)
        what = f"{count} agent(s) working" if count else "waiting for the workflow to move on"
        spinner = Spinner("dots", text=Text(f"{self.step or 'starting'}: {what}", style="bold"))
        if not self.running:
            return spinner
        table = Table.grid(padding=(0, 2))
        now = datetime.now(UTC)
        for run in self.running.values():
            table.add_row(
                f"  {run.agent}",
                Text(run.adapter, style="dim"),
                f"attempt {run.attempt}",
                duration((now - run.started).total_seconds()),
                Text(run.last[:80], style="dim"),
            )
        return Group(spinner, table)


# -- the session -------------------------------------------------------------


class TerminalRun:
    """One person working through one workflow's checkpoints at a terminal."""

    def __init__(self, backend: Backend, runner: asyncio.Runner, out: Console) -> None:
        self.backend = backend
        self.runner = runner
        self.out = out
        self.workflow_id: str | None = None
        self.cursor = 0
        self.board = AgentBoard()

    # -- starting ------------------------------------------------------------

    def create(self, **fields: Any) -> Workflow:
        wf = self.runner.run(self.backend.create_workflow(**fields))
        self.workflow_id = wf.id
        self.out.print(f"Workflow {escape(wf.name)} created in {self.backend.where}")
        self.out.print(f"Workflow ID: {wf.id}")
        return wf

    def continue_from(self, previous_id: str, **fields: Any) -> Workflow:
        """A new workflow continuing ``previous_id`` (its name and prompt unless given)."""
        previous_id = self.runner.run(self.backend.expand_id("workflow", previous_id))
        previous = self.runner.run(self.backend.get_workflow(previous_id))
        fields["name"] = fields.get("name") or previous.name
        return self.create(prompt=previous.prompt, from_workflow=previous.id, **fields)

    def resume(self, workflow_id: str) -> Workflow:
        workflow_id = self.runner.run(self.backend.expand_id("workflow", workflow_id))
        history = self.runner.run(self.backend.history(workflow_id))
        self.workflow_id = workflow_id
        self.cursor = history.events[-1].id if history.events else 0
        self.out.print(workflow_summary(history.workflow))
        self.out.print(f"Workflow ID: {workflow_id} (resumed)")
        return history.workflow

    # -- the loop ------------------------------------------------------------

    def drive(self, wf: Workflow) -> ExitCode:
        """Wait for agents, decide at checkpoints, until the workflow ends."""
        while True:
            wf = self.runner.run(self._until_settled(wf.id))
            if wf.status is WorkflowStatus.FAILED:
                self.out.print(result_view(wf))
                if self._yes(f"Retry the failed step of {wf.name}?"):
                    wf = self.runner.run(self.backend.retry(wf.id))
                    continue
                self.out.print(f"Later: orchestra retry {wf.id} && orchestra run --resume {wf.id}")
                return ExitCode.ERROR
            if wf.status.is_terminal:
                self.out.print(result_view(wf))
                self.out.print(f"Details: orchestra show {wf.id}", style="dim")
                return ExitCode.OK
            cp = wf.pending_checkpoint
            assert cp is not None  # is_settled
            self.out.print(checkpoint_view(cp))
            decision = self._decide(cp)
            try:
                resolved = self.runner.run(self.backend.resolve(cp.id, decision))
            except (Conflict, InvalidInput) as exc:  # someone else decided, or bad input
                report(exc)
                continue
            self.out.print(f"✓ {decision.action} ({resolved.status.value})", style="green")

    async def _until_settled(self, workflow_id: str) -> Workflow:
        """Run (or await) the workflow until it waits for a person or ends."""
        wf = await self.backend.get_workflow(workflow_id)
        if is_settled(wf):
            return wf
        async with (
            self.backend.working(workflow_id),
            contextlib.aclosing(self.backend.events(workflow_id, after=self.cursor)) as events,
        ):
            with Live(self.board, console=self.out, refresh_per_second=8, transient=True) as live:
                async for event in events:
                    self.cursor = event.id
                    line = self.board.apply(event)
                    if line is not None:
                        live.console.print(line)
                    if (
                        event.type is EventType.WORKFLOW_STATUS_CHANGED
                        and event.data.get("id") == workflow_id
                        and event.data.get("to") not in _MOVING
                    ):
                        wf = await self.backend.get_workflow(workflow_id)
                        if is_settled(wf):
                            return wf
        raise AssertionError("the event stream ended")  # pragma: no cover - it never ends

    # -- deciding ------------------------------------------------------------

    def _decide(self, cp: Checkpoint) -> Decision:
        while True:
            action = self._choose(cp)
            decision = self._complete(cp, action)
            if decision is not None:
                return decision
            self.out.print(actions_view(cp))

    def _choose(self, cp: Checkpoint) -> CheckpointAction:
        count = len(cp.actions)
        while True:
            answer = self._ask(f"Choose an action [1-{count}]: ")
            if answer.isdigit() and 1 <= int(answer) <= count:
                return cp.actions[int(answer) - 1]
            chosen = cp.action(answer)
            if chosen is not None:
                return chosen
            self.out.print(f"Answer with a number from 1 to {count} or an action's name.")

    def _complete(self, cp: Checkpoint, action: CheckpointAction) -> Decision | None:
        """Ask for what the action needs (confirmation, edited text, its inputs, notes)."""
        if action.destructive and not self._yes(f"{action.label}: this ends the workflow. Sure?"):
            return None
        edited: str | None = None
        original = cp.editable_content or ""
        wants_edit = action.requires_content or (
            not action.destructive
            and bool(original)
            and self._yes(f"Edit the {cp.editable_label.lower()} first?")
        )
        if wants_edit:
            try:
                edited = edit_text(original, label=cp.editable_label, console=self.out)
            except CliError as exc:  # the editor failed: ask again
                report(exc)
                return None
            self._show_diff(original, edited)
            if action.requires_content and not edited.strip():
                self.out.print(f"{action.label} needs text; nothing was sent.", style="yellow")
                return None
            if edited == original and not action.requires_content:
                edited = None
        inputs = {i.name: n for i in action.inputs if (n := self._number(i)) is not None}
        comments: list[LineComment] | None = None
        change = CodeChange.of(cp) if action.takes_comments else None
        if change is not None and change.files and self._yes("Comment on lines of the code?"):
            comments = self._line_comments(change)
            if comments is None:
                return None
        notes = self._ask("Notes for the next agent and the record (Enter for none): ")
        return Decision(
            action=action.name,
            edited_content=edited,
            notes=notes or None,
            inputs=inputs,
            comments=comments or None,
        )

    def _line_comments(self, change: CodeChange) -> list[LineComment] | None:
        """Comments written in the review file in ``$EDITOR`` (typed as PATH:LINE:TEXT
        when there is no editor); ``None`` when the person gives up."""
        if editor_command() is None:
            return self._typed_comments(change)
        review = review_file(change)
        text = review.text
        while True:
            try:
                text = edit_text(text, label="Line comments", console=self.out)
                found = parse_review(review, text)
            except CommentError as exc:
                report(exc)
                if self._yes("Edit the comments again (your text is kept)?"):
                    continue
                return None
            except CliError as exc:  # the editor failed
                report(exc)
                return None
            self.out.print(f"{len(found)} line comment(s).")
            return found

    def _typed_comments(self, change: CodeChange) -> list[LineComment]:
        self.out.print(
            "No editor: type each comment as PATH:LINE:TEXT on one line (LINE as shown "
            "in the diff); an empty line ends."
        )
        found: list[LineComment] = []
        while answer := self._ask("Comment (Enter to end): "):
            try:
                check_count(len(found) + 1)
                found.append(parse_option(answer, change))
            except CommentError as exc:
                report(exc)
        return found

    def _number(self, spec: ActionInput) -> float | None:
        """An optional input of the action: a number within its bounds, or None (Enter)."""
        if spec.help:
            self.out.print(spec.help, style="dim")
        while True:
            answer = self._ask(f"{spec.label} (Enter to skip): ")
            if not answer:
                return None
            try:
                number = float(answer)
            except ValueError:
                number = math.nan
            if spec.accepts(number):
                return number
            self.out.print(f"Answer with a number {spec.bounds()}, or Enter to skip.")

    def _show_diff(self, before: str, after: str) -> None:
        diff = list(
            difflib.unified_diff(
                before.splitlines(), after.splitlines(), "before", "after", lineterm="", n=1
            )
        )
        if not diff:
            self.out.print("(unchanged)", style="dim")
            return
        for line in diff[:DIFF_LINES]:
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
            self.out.print(Text(line, style=style))
        if len(diff) > DIFF_LINES:
            self.out.print(f"… {len(diff) - DIFF_LINES} more diff lines", style="dim")

    def _ask(self, prompt: str) -> str:
        """One line from the person (EOFError when input has ended)."""
        answer = self.out.input(prompt)
        if not sys.stdin.isatty():  # piped answers: show them, so the transcript reads well
            self.out.print(answer, markup=False, highlight=False)
        return answer.strip()

    def _yes(self, question: str) -> bool:
        while True:
            answer = self._ask(f"{question} [y/N] ").lower()
            if answer in ("", "n", "no"):
                return False
            if answer in ("y", "yes"):
                return True
            self.out.print("Answer y or n.")


#: Workflow statuses in which it moves on by itself.
_MOVING = frozenset({WorkflowStatus.PENDING.value, WorkflowStatus.RUNNING.value})

# -- starting options ----------------------------------------------------------


def implement_choice(
    type_: str,
    *,
    implementer: str | None,
    code_reviewers: list[str] | None,
    plan_file: Path | None,
    keep_worktree: bool,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The agents (implementer, code reviewers) and options of an Implement & Review
    start; refused (exit 2) for another type, where they would be ignored."""
    given = [
        flag
        for flag, value in (
            ("--implementer", implementer),
            ("--code-reviewer", code_reviewers),
            ("--plan-file", plan_file),
            ("--keep-worktree", keep_worktree),
        )
        if value
    ]
    if type_ != PLAN_IMPLEMENT:
        if given:
            raise typer.BadParameter(
                f"{', '.join(given)}: only for --type {PLAN_IMPLEMENT} (this is {type_})",
                param_hint=given[0],
            )
        return {}, None
    agents: dict[str, Any] = {}
    if implementer is not None:
        agents["implementer"] = parse_agent(implementer)
    if code_reviewers:
        agents["code_reviewers"] = [parse_agent(r) for r in code_reviewers]
    options: dict[str, Any] = {}
    if plan_file is not None:
        options["plan"] = read_plan(plan_file)
    if keep_worktree:
        options["keep_worktree"] = True
    return agents, options or None


def read_plan(path: Path) -> str:
    """A ``--plan-file``: UTF-8 text, not empty, read within bounds."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(PLAN_FILE_BYTES + 1)
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--plan-file"
        ) from None
    if len(raw) > PLAN_FILE_BYTES:
        raise typer.BadParameter(
            f"{path} is over {PLAN_FILE_BYTES} bytes; a plan is shorter", param_hint="--plan-file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{path} is not UTF-8 text", param_hint="--plan-file") from None
    if not text.strip():
        raise typer.BadParameter(f"{path} is empty", param_hint="--plan-file")
    return text


def _workspace(path: Path | None) -> str | None:
    return str(path.expanduser().resolve()) if path is not None else None


Implementer = Annotated[
    str | None,
    typer.Option(
        "--implementer",
        help="Agent that changes the code (plan_implement): a configured agent's name.",
        show_default=False,
    ),
]
CodeReviewers = Annotated[
    list[str] | None,
    typer.Option(
        "--code-reviewer",
        help="Agent that reviews the diff (plan_implement; repeat for several).",
        show_default=False,
    ),
]
KeepWorktree = Annotated[
    bool,
    typer.Option(
        "--keep-worktree",
        help="Keep the implementer's git worktree when the workflow ends (plan_implement).",
    ),
]
MaxIterations = Annotated[
    int,
    typer.Option(
        "--max-iterations",
        min=1,
        max=20,
        help="Revisions allowed: of the plan, and for plan_implement of the code too.",
    ),
]
Name = Annotated[
    str | None,
    typer.Option("--name", help="A name (default: the prompt's first line).", show_default=False),
]


@app.command("run")
@exits_on_errors
def run(
    ctx: typer.Context,
    prompt: Annotated[
        str | None,
        typer.Argument(help="What to plan (omit with --resume).", show_default=False),
    ] = None,
    name: Name = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            help="The codebase the agents work in (a directory; for plan_implement a git "
            "repository).",
            show_default=False,
        ),
    ] = None,
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            help=f"The workflow: plan_review, or {PLAN_IMPLEMENT} (plan, then implement in a "
            "git worktree and review the diff).",
        ),
    ] = "plan_review",
    planner: Annotated[
        str | None,
        typer.Option(
            "--planner",
            help="Agent that plans: the name of a configured agent (see `orchestra agents`).",
            show_default=False,
        ),
    ] = None,
    reviewers: Annotated[
        list[str] | None,
        typer.Option(
            "--reviewer",
            help="Agent that reviews (repeat for several): a configured agent's name.",
            show_default=False,
        ),
    ] = None,
    implementer: Implementer = None,
    code_reviewers: CodeReviewers = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan-file",
            help=f"Implement this plan as it is, skipping planning ({PLAN_IMPLEMENT}).",
            show_default=False,
        ),
    ] = None,
    keep_worktree: KeepWorktree = False,
    max_iterations: MaxIterations = 3,
    deadline: Annotated[
        str | None,
        typer.Option(
            "--deadline",
            help="A due time for each decision (90s, 30m, 4h, 2d): overdue ones are escalated "
            "as configured ([deadlines] in orchestra.toml); fired by serve/worker processes.",
            show_default=False,
        ),
    ] = None,
    default_action: Annotated[
        str | None,
        typer.Option(
            "--default-action",
            help="Opt in: when a decision is overdue, take this action where the checkpoint "
            "offers it (recorded as orchestra (deadline)). Without it nothing moves on its own.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="Continue this workflow from the database.", show_default=False
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Run a workflow here: watch agents work, decide at each checkpoint.

    Exit 0 when it completes (or you cancel it), 1 when it failed, 130 on Ctrl-C
    (the workflow stays in the database; continue with --resume ID).
    """
    if resume is not None:
        if prompt is not None:
            raise typer.BadParameter("give either a prompt or --resume ID", param_hint="--resume")
        started = [
            flag
            for flag, value in (
                ("--name", name),
                ("--workspace", workspace),
                ("--type", type_ != "plan_review"),
                ("--planner", planner),
                ("--reviewer", reviewers),
                ("--implementer", implementer),
                ("--code-reviewer", code_reviewers),
                ("--plan-file", plan_file),
                ("--keep-worktree", keep_worktree),
                ("--deadline", deadline),
                ("--default-action", default_action),
            )
            if value
        ]
        if started:
            raise typer.BadParameter(
                f"{', '.join(started)}: --resume continues a workflow as it was started",
                param_hint=started[0],
            )
        _session(ctx, server, token, database_url, lambda s: s.resume(resume))
        return
    if not (prompt and prompt.strip()):
        raise typer.BadParameter("give a prompt, or --resume ID", param_hint="PROMPT")
    agents, options = implement_choice(
        type_,
        implementer=implementer,
        code_reviewers=code_reviewers,
        plan_file=plan_file,
        keep_worktree=keep_worktree,
    )
    if type_ == PLAN_IMPLEMENT and workspace is None:
        raise typer.BadParameter(
            f"--type {PLAN_IMPLEMENT} needs --workspace: the git repository to change",
            param_hint="--workspace",
        )
    if planner is not None:
        agents["planner"] = parse_agent(planner)
    if reviewers:
        agents["reviewers"] = [parse_agent(r) for r in reviewers]
    fields: dict[str, Any] = {
        "name": name or prompt.strip().splitlines()[0][:NAME_CHARS],
        "prompt": prompt,
        "type": type_,
        "workspace_path": _workspace(workspace),
        "agents": agents or None,
        "max_iterations": max_iterations,
        "options": options,
    }
    if deadline is not None or default_action is not None:
        fields["deadline"] = {"after": deadline, "default_action": default_action}
    _session(ctx, server, token, database_url, lambda s: s.create(**fields))


@app.command("implement")
@exits_on_errors
def implement(
    ctx: typer.Context,
    workflow_id: Annotated[
        str,
        typer.Argument(
            help="A completed Plan & Review whose plan to implement.", show_default=False
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", help="A name (default: that workflow's).", show_default=False),
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            help="The git repository to change (default: that workflow's workspace).",
            show_default=False,
        ),
    ] = None,
    implementer: Implementer = None,
    code_reviewers: CodeReviewers = None,
    keep_worktree: KeepWorktree = False,
    max_iterations: Annotated[
        int, typer.Option("--max-iterations", min=1, max=20, help="Code revisions allowed.")
    ] = 3,
    database_url: DatabaseUrl = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Implement a completed Plan & Review's plan (a new plan_implement workflow that
    skips planning), then decide on the code here, as in `orchestra run`."""
    agents, options = implement_choice(
        PLAN_IMPLEMENT,
        implementer=implementer,
        code_reviewers=code_reviewers,
        plan_file=None,
        keep_worktree=keep_worktree,
    )
    fields: dict[str, Any] = {
        "name": name,
        "type": PLAN_IMPLEMENT,
        "workspace_path": _workspace(workspace),
        "agents": agents or None,
        "max_iterations": max_iterations,
        "options": options,
    }
    _session(ctx, server, token, database_url, lambda s: s.continue_from(workflow_id, **fields))


def _session(
    ctx: typer.Context,
    server: str | None,
    token: str | None,
    database_url: str | None,
    start: Callable[[TerminalRun], Workflow],
) -> None:
    """Open the backend, start (or pick up) the workflow, and drive it to its end."""
    with asyncio.Runner() as runner:
        backend = open_backend(ctx, server=server, token=token, database_url=database_url)
        session = TerminalRun(backend, runner, console)
        try:
            code = session.drive(start(session))
        except KeyboardInterrupt:
            _stopped(ctx, session, server, "Interrupted.")
            code = ExitCode.INTERRUPTED
        except EOFError:
            _stopped(ctx, session, server, "Input ended before a decision.")
            code = ExitCode.ERROR
        finally:
            runner.run(backend.aclose())
    raise typer.Exit(code)


def _stopped(ctx: typer.Context, session: TerminalRun, server: str | None, why: str) -> None:
    """Say how to pick the workflow up again."""
    if session.workflow_id is None:
        err_console.print(f"{why} No workflow was created.")
        return
    g = globals_of(ctx)
    before = f" --data-dir {g.data_dir}" if g.data_dir is not None else ""
    after = f" --server {server}" if server else ""
    err_console.print(
        f"\n{why} The workflow stays in the database; continue it with:\n"
        f"  orchestra{before} run --resume {session.workflow_id}{after}"
    )
