"""Commands that read or change workflows: list, show, inbox, resolve, cancel,
retry, watch; and worktrees (Implement & Review's git worktrees in a repository).
Each works on the local database or, with ``--server``, over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from orchestra.cli.app import (
    AsJson,
    DatabaseUrl,
    Server,
    Token,
    app,
    console,
    print_json,
    print_json_line,
    with_backend,
)
from orchestra.cli.backend import Backend
from orchestra.cli.comments import check_count, parse_option
from orchestra.cli.editor import edit_text
from orchestra.cli.errors import ExitCode, exits_on_errors
from orchestra.cli.render import (
    batch_table,
    checkpoint_view,
    event_line,
    inbox_table,
    result_view,
    short_id,
    status_text,
    timeline_table,
    workflow_summary,
    workflows_table,
    worktrees_table,
)
from orchestra.domain.code import CodeChange
from orchestra.domain.errors import InvalidInput
from orchestra.domain.events import EventType
from orchestra.domain.models import (
    Checkpoint,
    CheckpointAction,
    Decision,
    Event,
    InboxFilter,
    LineComment,
    Workflow,
)
from orchestra.domain.statuses import SnoozedView, WorkflowStatus

WorkflowId = Annotated[
    str, typer.Argument(help="The workflow's id, or its first 4+ characters.", show_default=False)
]
Limit = Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")]
Cursor = Annotated[
    str | None,
    typer.Option(
        "--cursor", help="Continue after a previous page's next_cursor.", show_default=False
    ),
]


@app.command("list")
@exits_on_errors
def list_workflows(
    ctx: typer.Context,
    status: Annotated[
        WorkflowStatus | None,
        typer.Option("--status", help="Only workflows in this status.", show_default=False),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List workflows, newest first."""

    async def body(b: Backend) -> None:
        page = await b.list_workflows(status=status, limit=limit, cursor=cursor)
        if as_json:
            print_json(page.model_dump(mode="json"))
            return
        console.print(workflows_table(page.items))
        if page.next_cursor:
            console.print(f"More: orchestra list --cursor {page.next_cursor}", style="dim")

    with_backend(ctx, body, server=server, token=token, database_url=database_url)


@app.command("show")
@exits_on_errors
def show(
    ctx: typer.Context,
    workflow_id: WorkflowId,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the history: workflow, checkpoints, agent runs, events."
        ),
    ] = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show a workflow: status, step, iteration, timeline, and the pending checkpoint."""

    async def body(b: Backend) -> None:
        history = await b.history(await b.expand_id("workflow", workflow_id))
        if as_json:
            print_json(history.model_dump(mode="json"))
            return
        wf = history.workflow
        console.print(workflow_summary(wf))
        console.print(timeline_table(history))
        if wf.pending_checkpoint is not None:
            console.print(checkpoint_view(wf.pending_checkpoint))
            takes = any(a.takes_comments for a in wf.pending_checkpoint.actions)
            console.print(
                f"Resolve: orchestra resolve {short_id(wf.pending_checkpoint.id)} --action ACTION"
                + (" [--comment PATH:LINE:TEXT …]" if takes else ""),
                style="dim",
                markup=False,
            )
        elif wf.status.is_terminal:
            console.print(result_view(wf))

    with_backend(ctx, body, server=server, token=token, database_url=database_url)


@app.command("inbox")
@exits_on_errors
def inbox(
    ctx: typer.Context,
    workflow: Annotated[
        str | None,
        typer.Option(
            "--workflow",
            help="Only this workflow's (its id or first 4+ characters).",
            show_default=False,
        ),
    ] = None,
    step: Annotated[
        str | None,
        typer.Option(
            "--step",
            help="Only this checkpoint step's (a wrong name lists them).",
            show_default=False,
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Only those waiting longer than this: 30m, 2h, 1d.",
            show_default=False,
        ),
    ] = None,
    snoozed: Annotated[
        bool, typer.Option("--snoozed", help="Only the snoozed ones, with when each comes back.")
    ] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Show it again whenever it changes.")
    ] = False,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Checkpoints waiting for a person, oldest first, with how long they have waited;
    snoozed ones are left out until their time passes (``--snoozed``: only those).
    ``--watch``: again each time one is created, resolved or snoozed, until Ctrl-C."""
    view = SnoozedView.ONLY if snoozed else SnoozedView.HIDE
    given = InboxFilter(workflow=workflow, step=step, older_than=older_than, snoozed=view)

    async def show_inbox(b: Backend) -> None:
        page = await b.list_pending_checkpoints(limit=limit, cursor=cursor, filter=given)
        if as_json:
            print_json(page.model_dump(mode="json"))
            return
        waiting = await b.list_workflows(
            status=WorkflowStatus.AWAITING_CHECKPOINT, limit=500, cursor=None
        )
        names = {wf.id: wf.name for wf in waiting.items}
        console.print(inbox_table(page.items, names, snoozed=snoozed))
        if not page.items:
            console.print("Nothing snoozed." if snoozed else "Nothing waits for you.", style="dim")
        if page.next_cursor:
            console.print(f"More: orchestra inbox --cursor {page.next_cursor}", style="dim")

    async def body(b: Backend) -> None:
        after = await b.last_event_id() if watch else 0
        await show_inbox(b)
        if not watch:
            return
        changes = {
            EventType.CHECKPOINT_CREATED,
            EventType.CHECKPOINT_STATUS_CHANGED,
            EventType.CHECKPOINT_SNOOZED,
        }
        async with contextlib.aclosing(b.events(None, after=after)) as events:
            async for event in events:
                if event.type in changes:
                    await show_inbox(b)

    with_backend(ctx, body, server=server, token=token, database_url=database_url)


CheckpointId = Annotated[
    str, typer.Argument(help="The checkpoint's id, or its first 4+ characters.", show_default=False)
]


@app.command("snooze")
@exits_on_errors
def snooze(
    ctx: typer.Context,
    checkpoint_id: CheckpointId,
    for_: Annotated[
        str | None,
        typer.Option("--for", help="For this long: 30m, 2h, 1d (at most 30d).", show_default=False),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="Until this ISO time, e.g. 2026-12-01T09:00+01:00.", show_default=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the snoozed checkpoint as JSON.")
    ] = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Not now: leave a pending checkpoint out of the inbox until a time, without
    deciding (it can still be resolved; it comes back by itself; exit 4 if resolved)."""
    if (for_ is None) == (until is None):
        raise typer.BadParameter("give either --for DURATION or --until TIME", param_hint="--for")
    when = for_ if for_ is not None else until
    assert when is not None

    async def body(b: Backend) -> None:
        cp = await b.snooze(await b.expand_id("checkpoint", checkpoint_id), when)
        if as_json:
            print_json(cp.model_dump(mode="json"))
            return
        back = cp.snoozed_until.isoformat(timespec="minutes") if cp.snoozed_until else "?"
        console.print(f"Checkpoint {short_id(cp.id)} snoozed until {back}.", markup=False)
        console.print(f"Back now: orchestra unsnooze {short_id(cp.id)}", style="dim", markup=False)

    with_backend(ctx, body, server=server, token=token, database_url=database_url)


@app.command("unsnooze")
@exits_on_errors
def unsnooze(
    ctx: typer.Context,
    checkpoint_id: CheckpointId,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checkpoint as JSON.")] = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Bring a snoozed checkpoint back into the inbox now (exit 4 if it was resolved)."""

    async def body(b: Backend) -> None:
        cp = await b.unsnooze(await b.expand_id("checkpoint", checkpoint_id))
        if as_json:
            print_json(cp.model_dump(mode="json"))
            return
        console.print(f"Checkpoint {short_id(cp.id)} is back in the inbox.", markup=False)

    with_backend(ctx, body, server=server, token=token, database_url=database_url)


@app.command("resolve")
@exits_on_errors
def resolve(
    ctx: typer.Context,
    checkpoint_ids: Annotated[
        list[str],
        typer.Argument(
            help="The checkpoint's id, or its first 4+ characters; several apply the same "
            "decision to each (a batch).",
            show_default=False,
        ),
    ],
    action: Annotated[
        str, typer.Option("--action", "-a", help="The action's name (see `orchestra show`).")
    ],
    edit: Annotated[
        bool, typer.Option("--edit", help="Edit the checkpoint's editable content in $EDITOR.")
    ] = False,
    content_file: Annotated[
        Path | None,
        typer.Option(
            "--content-file",
            help="Use this file's text as the edited content ('-' reads stdin).",
            show_default=False,
            allow_dash=True,
        ),
    ] = None,
    notes: Annotated[
        str | None,
        typer.Option(
            "--notes", help="Notes for the next agent and the record.", show_default=False
        ),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="NAME=NUMBER, an input the action takes (e.g. --input timeout_s=600); repeatable.",
            show_default=False,
        ),
    ] = None,
    comments: Annotated[
        list[str] | None,
        typer.Option(
            "--comment",
            help="PATH:LINE:TEXT, a comment on a line of the code under review (the new "
            "file's line; a removed line's old one), for actions that take them; repeatable.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the resolved checkpoint as JSON.")
    ] = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Resolve a checkpoint with one of its actions (exit 4 if someone already did).

    With several ids, each is resolved on its own (its own audit row, exactly once) and
    each outcome is printed; exit 4 unless every one was resolved."""
    if len(checkpoint_ids) > 1 and (edit or content_file is not None or comments):
        raise typer.BadParameter(
            "--edit, --content-file and --comment are for one checkpoint; a batch applies "
            "the same action, notes and inputs to each",
            param_hint="CHECKPOINT_IDS",
        )
    if edit and content_file is not None:
        raise typer.BadParameter("use either --edit or --content-file", param_hint="--edit")
    edited = _read_content(content_file) if content_file is not None else None
    given = _parse_inputs(inputs or [])
    check_count(len(comments or []))  # bad ones: say so before anything is opened or sent
    for raw in comments or []:
        parse_option(raw)

    async def batch(b: Backend) -> None:
        full_ids = [await b.expand_id("checkpoint", given) for given in checkpoint_ids]
        decision = Decision(action=action, edited_content=edited, notes=notes, inputs=given)
        done = await b.resolve_batch(full_ids, decision)
        if as_json:
            print_json(done.model_dump(mode="json"))
        else:
            console.print(batch_table(done))
        if done.resolved != len(done.items):
            raise typer.Exit(ExitCode.CONFLICT)

    async def body(b: Backend) -> None:
        if len(checkpoint_ids) > 1:
            await batch(b)
            return
        content = edited
        line_comments: list[LineComment] | None = None
        full_id = await b.expand_id("checkpoint", checkpoint_ids[0])
        if edit or comments:
            cp = await b.get_checkpoint(full_id)
            chosen = _offered(cp, action)  # say so before the editor opens
            if comments:
                line_comments = _line_comments(cp, chosen, comments)
            if edit:
                content = edit_text(
                    cp.editable_content or "", label=cp.editable_label, console=console
                )
        decision = Decision(
            action=action,
            edited_content=content,
            notes=notes,
            inputs=given,
            comments=line_comments,
        )
        cp = await b.resolve(full_id, decision)
        if as_json:
            print_json(cp.model_dump(mode="json"))
            return
        console.print(
            Text.assemble(f"Checkpoint {cp.id} resolved with {action}: ", status_text(cp.status))
        )

    with_backend(ctx, body, server=server, token=token, database_url=database_url)


def _offered(cp: Checkpoint, action: str) -> CheckpointAction:
    chosen = cp.action(action)
    if chosen is None:
        allowed = [a.name for a in cp.actions]
        raise InvalidInput(
            f"action {action!r} is not offered here; choose one of: {', '.join(allowed)}",
            details={"action": action, "allowed": allowed},
        )
    return chosen


def _line_comments(cp: Checkpoint, action: CheckpointAction, raws: list[str]) -> list[LineComment]:
    """``--comment`` options as line comments on the checkpoint's code (checked
    against its diff when it shows one), for an action that takes them."""
    if not action.takes_comments:
        takes = [a.name for a in cp.actions if a.takes_comments]
        hint = f"; {', '.join(takes)} does" if takes else ""
        raise InvalidInput(
            f"action {action.name!r} takes no line comments{hint}",
            details={"field": "comments", "action": action.name},
        )
    change = CodeChange.of(cp)
    return [parse_option(raw, change) for raw in raws]


def _parse_inputs(pairs: list[str]) -> dict[str, float]:
    """``--input NAME=NUMBER`` options as a mapping (the server checks the names)."""
    found: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None:
            raise typer.BadParameter(f"{pair!r} is not NAME=NUMBER", param_hint="--input")
        found[name.strip()] = number
    return found


def _read_content(path: Path) -> str:
    if str(path) == "-":
        return typer.get_text_stream("stdin").read()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc


def _workflow_change(
    name: str, help: str, change: Callable[[Backend, str], Awaitable[Workflow]]
) -> None:
    """Register a command that changes one workflow's status and prints the result."""

    def command(
        ctx: typer.Context,
        workflow_id: WorkflowId,
        as_json: AsJson = False,
        server: Server = None,
        token: Token = None,
        database_url: DatabaseUrl = None,
    ) -> None:
        async def body(b: Backend) -> None:
            wf = await change(b, await b.expand_id("workflow", workflow_id))
            if as_json:
                print_json(wf.model_dump(mode="json"))
            else:
                console.print(Text.assemble(f"Workflow {wf.id} is now ", status_text(wf.status)))

        with_backend(ctx, body, server=server, token=token, database_url=database_url)

    app.command(name, help=help)(exits_on_errors(command))


_workflow_change(
    "cancel",
    "Cancel a workflow that has not ended (its pending checkpoint is superseded; exit 4 if "
    "it has ended).",
    lambda b, workflow_id: b.cancel(workflow_id),
)
_workflow_change(
    "retry",
    "Run a failed workflow's step again (exit 4 if it is not failed). A server's worker "
    "picks it up; locally, continue it with `orchestra run --resume ID`.",
    lambda b, workflow_id: b.retry(workflow_id),
)


@app.command("watch")
@exits_on_errors
def watch(
    ctx: typer.Context,
    workflow_id: WorkflowId,
    after: Annotated[
        int, typer.Option("--after", min=0, help="Start after this event id (0: from the start).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a workflow's events as they happen, until it ends (exit 0 for any ending)."""

    async def body(b: Backend) -> None:
        full_id = await b.expand_id("workflow", workflow_id)
        wf = await b.get_workflow(full_id)
        if wf.status.is_terminal:  # nothing will happen any more: print what did
            for event in (await b.history(full_id)).events:
                if event.id > after:
                    _print_event(event, as_json)
        else:
            await _follow(b, full_id, after, as_json)
        if not as_json:
            console.print(result_view(await b.get_workflow(full_id)))

    with_backend(ctx, body, server=server, token=token, database_url=database_url)


def _print_event(event: Event, as_json: bool) -> None:
    if as_json:
        print_json_line(event.model_dump(mode="json"))
    else:
        console.print(event_line(event))


async def _follow(b: Backend, workflow_id: str, after: int, as_json: bool) -> None:
    """Print events as they come until the workflow has ended."""
    status: WorkflowStatus | None = None
    async for event in b.events(workflow_id, after=after):
        _print_event(event, as_json)
        if event.type is EventType.WORKFLOW_STATUS_CHANGED and event.data.get("id") == workflow_id:
            status = WorkflowStatus(event.data["to"])
        # A replayed event may show an ending a retry later undid: ask for the status now.
        if status is not None and status.is_terminal:
            if (await b.get_workflow(workflow_id)).status.is_terminal:
                return
            status = None


@app.command("worktrees")
@exits_on_errors
def worktrees(
    ctx: typer.Context,
    repository: Annotated[
        Path,
        typer.Argument(help="The git repository (a workflow's workspace).", show_default=False),
    ],
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Remove the worktrees whose workflow ended or is unknown, with their "
            "snapshots (branches stay; on a server, an admin's token).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the worktrees (left after --prune) as JSON.")
    ] = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List Orchestra's worktrees in a repository with the workflow each belongs to."""
    path = str(repository.expanduser().resolve())

    async def body(b: Backend) -> None:
        before = await b.worktrees(path, prune=False) if prune else []
        listed = await b.worktrees(path, prune=prune)
        if as_json:
            print_json([w.model_dump(mode="json") for w in listed])
            return
        if prune:
            left = {w.path for w in listed}
            removed = [w for w in before if w.path not in left]
            console.print(f"Removed {len(removed)} worktree(s); their branches stay.")
        console.print(worktrees_table(path, listed))
        if not listed:
            console.print("No worktrees of Orchestra here.", style="dim")

    with_backend(ctx, body, server=server, token=token, database_url=database_url)
