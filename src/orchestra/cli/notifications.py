"""``orchestra notifications``: the webhook outbox for admins — list, show one with
its delivery attempts, requeue a failed one, prune finished ones. Local (the
database) or, with ``--server``, over the API with an admin's token.

A receiver's answer is untrusted text: it is shown through :func:`safe_text`
(control characters written out), never as markup.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from orchestra.cli.app import (
    AsJson,
    DatabaseUrl,
    Server,
    Token,
    app,
    console,
    print_json,
    with_backend,
)
from orchestra.cli.backend import Backend
from orchestra.cli.errors import exits_on_errors
from orchestra.cli.render import safe_text, short_id, since, table_of, when
from orchestra.domain.models import (
    MAX_NOTIFICATIONS_LISTED,
    Notification,
    NotificationDetail,
    NotificationsPruned,
)
from orchestra.domain.statuses import NotificationStatus

notifications_app = typer.Typer(
    help="The webhook outbox (admin): list, show attempts, requeue, prune.",
    no_args_is_help=True,
)
app.add_typer(notifications_app, name="notifications")

NotificationId = Annotated[
    str,
    typer.Argument(help="The notification's id, or its first 4+ characters.", show_default=False),
]
STATUS_STYLE = {
    NotificationStatus.PENDING: "yellow",
    NotificationStatus.DELIVERED: "green",
    NotificationStatus.FAILED: "bold red",
}
#: The most of an error a table cell shows (``show`` has each attempt's, bounded).
ERROR_CELL = 60


def _status(status: NotificationStatus) -> Text:
    return Text(status.value, style=STATUS_STYLE[status])


def _clip(text: str | None, limit: int = ERROR_CELL) -> Text:
    if not text:
        return Text("—")
    return safe_text(text if len(text) <= limit else text[: limit - 1] + "…")


def notifications_table(items: list[Notification]) -> Table:
    """Newest first, narrow enough for 80 columns."""
    table = table_of(
        "Notifications", "ID", "Target", "Event", "Status", "Tries", "Age", "Last error"
    )
    for n in items:
        table.add_row(
            short_id(n.id),
            safe_text(n.target),
            n.kind.value,
            _status(n.status),
            str(n.attempts),
            since(n.created_at),
            _clip(n.last_error, 30),
        )
    return table


def notification_view(n: NotificationDetail) -> Group:
    """The row, what it is about, and every attempt: when, how long, what came back."""
    workflow = n.payload.get("workflow") if isinstance(n.payload, dict) else None
    about = (
        f"{workflow.get('name')} ({str(workflow.get('id'))[:8]})"
        if isinstance(workflow, dict)
        else "—"
    )
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("Notification", n.id)
    head.add_row("Target", safe_text(n.target))
    head.add_row("Event", f"{n.kind.value} (event #{n.event_id})")
    head.add_row("Workflow", safe_text(about))
    head.add_row("Status", _status(n.status))
    head.add_row("Attempts", str(n.attempts))
    head.add_row("Created", when(n.created_at))
    if n.status is NotificationStatus.PENDING:
        head.add_row("Next attempt", when(n.next_attempt_at))
    if n.delivered_at is not None:
        head.add_row("Delivered", when(n.delivered_at))
    attempts = table_of(
        "Delivery attempts", "#", "Started", "Took", "Code", "Error", keep=("#", "Started")
    )
    for a in n.delivery_attempts:
        took = "—" if a.duration_ms is None else f"{a.duration_ms / 1000:.2f}s"
        code = str(a.status_code) if a.status_code is not None else "—"
        attempts.add_row(str(a.attempt), when(a.started_at), took, code, _clip(a.error))
    parts: list[Table | Text] = [head, attempts]
    if not n.delivery_attempts:
        parts.append(Text("No attempt recorded yet.", style="dim"))
    if n.status is NotificationStatus.FAILED:
        parts.append(
            Text(f"Send it again: orchestra notifications requeue {short_id(n.id)}", style="dim")
        )
    return Group(*parts)


@notifications_app.command("list")
@exits_on_errors
def list_notifications(
    ctx: typer.Context,
    status: Annotated[
        NotificationStatus | None,
        typer.Option("--status", help="Only notifications in this status.", show_default=False),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=MAX_NOTIFICATIONS_LISTED, help="At most this many.")
    ] = 50,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List the outbox, newest first: target, event, status, attempts, last error."""

    async def body(b: Backend) -> None:
        items = await b.list_notifications(status=status, limit=limit)
        if as_json:
            print_json([n.model_dump(mode="json") for n in items])
            return
        console.print(notifications_table(items))
        if not items:
            console.print("No notifications.", style="dim")

    with_backend(ctx, body, server=server, token=token, database_url=database_url)


@notifications_app.command("show")
@exits_on_errors
def show_notification(
    ctx: typer.Context,
    notification_id: NotificationId,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show one notification and each of its delivery attempts."""

    async def body(b: Backend) -> None:
        found = await b.get_notification(notification_id)
        if as_json:
            print_json(found.model_dump(mode="json"))
            return
        console.print(notification_view(found))

    with_backend(ctx, body, server=server, token=token, database_url=database_url)


@notifications_app.command("requeue")
@exits_on_errors
def requeue_notification(
    ctx: typer.Context,
    notification_id: NotificationId,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Send a failed notification again now (exit 4 if it was delivered or is pending)."""

    async def body(b: Backend) -> None:
        row = await b.requeue_notification(notification_id)
        if as_json:
            print_json(row.model_dump(mode="json"))
            return
        console.print(f"Notification {short_id(row.id)} to {row.target} is pending again, due now.")

    with_backend(ctx, body, server=server, token=token, database_url=database_url)


@notifications_app.command("prune")
@exits_on_errors
def prune_notifications(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Delete delivered and failed notifications older than this "
            "(30d, 12h; at least 1h).",
        ),
    ],
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete finished notifications (with their attempts) and long-expired decision links."""

    async def body(b: Backend) -> None:
        done: NotificationsPruned = await b.prune_notifications(older_than)
        if as_json:
            print_json(done.model_dump(mode="json"))
            return
        console.print(
            f"Deleted {done.deleted} notification(s) with {done.attempts_deleted} attempt(s), "
            f"and {done.links_deleted} expired decision link(s)."
        )

    with_backend(ctx, body, server=server, token=token, database_url=database_url)
