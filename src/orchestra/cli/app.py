"""The typer application, its global options, and how a command finds its data.

Global options (``--data-dir``, ``--database-url``, ``--config``, ``-v``) are
kept on the click context; a command combines them with its own flags into
:class:`~orchestra.config.Settings` (defaults < file < ``ORCHESTRA_*`` < flags)
or, with ``--server``, into a remote backend.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from orchestra.cli.backend import Backend
from orchestra.cli.errors import EXIT_CODES_HELP, err_console
from orchestra.config import Settings, load_settings

T = TypeVar("T")

console = Console()

app = typer.Typer(
    name="orchestra",
    help="Orchestra: durable workflows for AI coding agents, with a person at every hand-off.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

REMOTE = "Remote (talk to a running server)"

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///PATH or postgresql://… (default: a SQLite file in the data directory). "
        "Env: ORCHESTRA_DATABASE_URL.",
        show_default=False,
    ),
]
Server = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="ORCHESTRA_SERVER",
        help="Talk to a running `orchestra serve` at this URL instead of the local database.",
        rich_help_panel=REMOTE,
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="ORCHESTRA_TOKEN",
        help="Bearer token for --server.",
        rich_help_panel=REMOTE,
        show_default=False,
        show_envvar=True,
    ),
]
AsJson = Annotated[
    bool,
    typer.Option("--json", help="Print machine-readable JSON (the domain models)."),
]


@dataclass
class Globals:
    data_dir: Path | None = None
    database_url: str | None = None
    config_file: Path | None = None


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where the SQLite database and orchestra.toml live (default ~/.orchestra). "
            "Env: ORCHESTRA_DATA_DIR.",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Config file (settings and \\[agents.*]); default <data dir>/orchestra.toml. "
            "Env: ORCHESTRA_CONFIG.",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
    ] = 0,
) -> None:
    """Orchestra: durable workflows for AI coding agents, with a person at every hand-off."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    ctx.obj = Globals(data_dir=data_dir, database_url=database_url, config_file=config_file)


def globals_of(ctx: typer.Context) -> Globals:
    found = ctx.find_object(Globals)
    return found if found is not None else Globals()


def settings_for(ctx: typer.Context, database_url: str | None = None, **flags: Any) -> Settings:
    """Settings from the global options, the command's flags, env and the config file."""
    g = globals_of(ctx)
    return load_settings(
        data_dir=g.data_dir,
        database_url=database_url or g.database_url,
        config_file=g.config_file,
        **flags,
    )


def open_backend(
    ctx: typer.Context, *, server: str | None, token: str | None, database_url: str | None
) -> Backend:
    """The remote backend with ``--server``, else the local database."""
    if server:
        from orchestra.cli.remote import RemoteBackend

        return RemoteBackend(server, token)
    from orchestra.cli.local import LocalBackend

    return LocalBackend.open(settings_for(ctx, database_url))


def with_backend(
    ctx: typer.Context,
    body: Callable[[Backend], Awaitable[T]],
    *,
    server: str | None,
    token: str | None,
    database_url: str | None = None,
) -> T:
    """Open a backend, run ``body`` on an event loop, and close the backend."""

    async def go() -> T:
        backend = open_backend(ctx, server=server, token=token, database_url=database_url)
        try:
            return await body(backend)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def print_json(data: Any) -> None:
    """Plain JSON on stdout (never wrapped or coloured: scripts parse it)."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_json_line(data: Any) -> None:
    """One compact JSON document per line (event streams)."""
    typer.echo(json.dumps(data, ensure_ascii=False))
