"""Exit codes scripts can rely on, and the one place errors become them.

Every command body runs inside :func:`exits_on_errors`, so a domain error
(local or mapped from an HTTP error response) prints one message on stderr
and leaves with the same code in both modes.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from enum import IntEnum
from typing import Any, ParamSpec, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from orchestra.domain.errors import Conflict, InvalidInput, NotFound, OrchestraError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: Everything the CLI writes for people goes to ``stdout``; problems to ``stderr``.
err_console = Console(stderr=True)


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    CONFLICT = 4
    INTERRUPTED = 130


EXIT_CODES_HELP = (
    "Exit codes: 0 ok · 1 error (also: server unreachable, authentication refused) · "
    "2 usage or bad input · 3 not found · 4 conflict (already resolved, not allowed in "
    "the current status) · 130 interrupted (Ctrl-C). An error names its code (e.g. "
    "already_resolved); with --json it is one line on stderr, "
    '{"error": {"code", "message", "details"}}, as the API answers.'
)


class CliError(OrchestraError):
    """A problem the CLI itself found (an editor that failed, a server that is down)."""

    code = "cli_error"


class AccessDenied(OrchestraError):
    """The server refused the token (401) or its role (403)."""

    code = "access_denied"


def exit_code_for(exc: OrchestraError) -> ExitCode:
    if isinstance(exc, InvalidInput):
        return ExitCode.USAGE
    if isinstance(exc, NotFound):
        return ExitCode.NOT_FOUND
    if isinstance(exc, Conflict):
        return ExitCode.CONFLICT
    return ExitCode.ERROR


def error_json(exc: OrchestraError) -> dict[str, Any]:
    """``exc`` in the API's error shape (what ``--json`` commands print on stderr)."""
    return {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}


def report(exc: OrchestraError, *, as_json: bool = False) -> None:
    """Print ``exc`` for a person (its code too, for scripts), including who won when
    it is a resolution conflict; with ``as_json``, one line in the API's error shape."""
    if as_json:
        typer.echo(json.dumps(error_json(exc), ensure_ascii=False, default=str), err=True)
        return
    err_console.print(f"[bold red]error[/] ({escape(exc.code)}): {escape(exc.message)}")
    resolution = exc.details.get("resolution") if isinstance(exc, Conflict) else None
    if isinstance(resolution, dict):
        err_console.print(
            f"  resolved by [bold]{escape(str(resolution.get('resolved_by')))}[/] "
            f"at {escape(str(resolution.get('resolved_at')))} "
            f"with action [bold]{escape(str(resolution.get('action')))}[/]"
        )
        if resolution.get("notes"):
            err_console.print(f"  notes: {escape(str(resolution['notes']))}")
    allowed = exc.details.get("allowed")
    if isinstance(allowed, list) and allowed and "choose one of" not in exc.message:
        err_console.print(f"  allowed actions: {', '.join(map(str, allowed))}")


def exits_on_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn domain errors, HTTP transport failures and Ctrl-C into exit codes (a
    command's ``--json`` flag, its ``as_json`` parameter, makes errors JSON too)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except OrchestraError as exc:
            log.debug("command failed", exc_info=True)
            report(exc, as_json=kwargs.get("as_json") is True)
            raise typer.Exit(exit_code_for(exc)) from None
        except httpx.TransportError as exc:
            err_console.print(f"[bold red]error:[/] cannot reach the server: {escape(str(exc))}")
            raise typer.Exit(ExitCode.ERROR) from None
        except KeyboardInterrupt:
            err_console.print("Interrupted.")
            raise typer.Exit(ExitCode.INTERRUPTED) from None

    return wrapper


def fail(message: str, code: ExitCode = ExitCode.ERROR) -> typer.Exit:
    """An exit with ``message`` on stderr: ``raise fail("…", ExitCode.USAGE)``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)
