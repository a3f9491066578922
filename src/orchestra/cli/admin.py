"""Commands that run or administer Orchestra: serve, worker, db, token, agents.

The server and the token store are imported inside the commands, so the rest
of the CLI works (and starts fast) without them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from orchestra.cli.app import (
    AsJson,
    DatabaseUrl,
    app,
    console,
    globals_of,
    print_json,
    settings_for,
)
from orchestra.cli.errors import exits_on_errors
from orchestra.cli.render import table_of, when
from orchestra.config import Settings, load_settings

if TYPE_CHECKING:
    from orchestra.store.db import Database
from orchestra.domain.roles import Role

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for `orchestra serve` (admin).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")


@app.command("serve")
@exits_on_errors
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to bind (default 127.0.0.1).", show_default=False),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port (default 3030).", show_default=False),
    ] = None,
    database_url: DatabaseUrl = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Serve only; run workers separately.")
    ] = False,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No tokens (refused beyond loopback).")
    ] = False,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Config file (overrides the global --config).", show_default=False
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Data directory (overrides the global --data-dir).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the REST API, live events and web UI, with an embedded worker."""
    g = globals_of(ctx)
    settings = load_settings(
        host=host,
        port=port,
        database_url=database_url or g.database_url,
        worker=False if no_worker else None,
        no_auth=True if no_auth else None,
        config_file=config_file or g.config_file,
        data_dir=data_dir or g.data_dir,
    )
    from orchestra.server import run_server

    run_server(settings)


@app.command("worker")
@exits_on_errors
def worker(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            min=1,
            max=1000,
            help="Workflows driven at once (default 32).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a worker without HTTP (several may share one PostgreSQL database)."""
    settings = settings_for(ctx, database_url, worker_concurrency=concurrency)
    from orchestra.server import run_worker

    run_worker(settings)


@db_app.command("upgrade")
@exits_on_errors
def db_upgrade(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """Bring the database schema up to date (start-up does this too)."""
    from orchestra.runtime import _redact
    from orchestra.store.migrate import upgrade

    settings = settings_for(ctx, database_url)
    db = _open_db(settings)
    try:
        upgrade(db.write_engine)
    finally:
        db.close()
    console.print(f"Database {_redact(settings.db_url)} is at the latest schema.")


def _open_db(settings: Settings) -> Database:
    from orchestra.store.db import Database

    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Database(settings.db_url)


def _with_migrated_db(ctx: typer.Context, database_url: str | None) -> Database:
    from orchestra.store.migrate import upgrade

    db = _open_db(settings_for(ctx, database_url))
    try:
        upgrade(db.write_engine)
    except BaseException:
        db.close()
        raise
    return db


@token_app.command("create")
@exits_on_errors
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Who or what holds the token.")],
    role: Annotated[Role, typer.Option("--role", help="What it may do.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from orchestra.store.tokens import create_token

    db = _with_migrated_db(ctx, database_url)
    try:
        token = asyncio.run(create_token(db, name=name, role=role))
    finally:
        db.close()
    console.print(
        f"Token {name!r} ({role.value}) created. It is shown only this once:", style="bold"
    )
    typer.echo(token)


@token_app.command("list")
@exits_on_errors
def token_list(
    ctx: typer.Context, as_json: AsJson = False, database_url: DatabaseUrl = None
) -> None:
    """List tokens (names, roles, last use; never the tokens)."""
    from orchestra.store.tokens import list_tokens

    db = _with_migrated_db(ctx, database_url)
    try:
        tokens = asyncio.run(list_tokens(db))
    finally:
        db.close()
    if as_json:
        print_json([t.model_dump(mode="json") for t in tokens])
        return
    table = table_of("API tokens", "Name", "Role", "Created", "Last used", "Revoked")
    for t in tokens:
        table.add_row(
            t.name, t.role.value, when(t.created_at), when(t.last_used_at), when(t.revoked_at)
        )
    console.print(table)


@token_app.command("revoke")
@exits_on_errors
def token_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The token's name.", show_default=False)],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a token: requests with it are refused from now on."""
    from orchestra.store.tokens import revoke_token

    db = _with_migrated_db(ctx, database_url)
    try:
        asyncio.run(revoke_token(db, name))
    finally:
        db.close()
    console.print(f"Token {name!r} revoked.")


@app.command("agents")
@exits_on_errors
def agents(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the configured agents, their jobs, and whether each is reachable; then the
    agent CLIs found on PATH, with the entry to add for those not configured yet."""
    from orchestra.agents.config import check_agents, load_agents_config
    from orchestra.agents.discovery import find_clis

    settings = settings_for(ctx)
    config = load_agents_config(
        settings.agents_file,
        max_timeout_s=settings.max_agent_timeout_s,
        other_keys=set(type(settings).model_fields),  # settings share the file
    )
    checks = asyncio.run(check_agents(config))
    found = asyncio.run(find_clis(config))
    source = settings.agents_file or "built-in defaults"
    table = table_of(f"Agents ({source})", "Name", "Adapter", "Jobs", "Reachable", "Detail")
    rows = []
    for name, check in checks:
        spec = config.agents[name]
        jobs = [
            job
            for job, plays in (
                ("planner", name == config.planner),
                ("reviewer", name in config.reviewers),
            )
            if plays
        ]
        rows.append(
            {
                "name": name,
                "adapter": spec.adapter,
                "options": spec.options,
                "timeout_s": spec.timeout_s,
                "jobs": jobs,
                "reachable": check.ok,
                "detail": check.detail,
            }
        )
        reachable = "[green]yes[/]" if check.ok else "[red]no[/]"
        table.add_row(name, spec.adapter, ", ".join(jobs) or "—", reachable, escape(check.detail))
    if as_json:
        print_json(rows)
        return
    console.print(table)
    if not found:
        console.print("No agent CLI (claude, codex, gemini) found on PATH.")
        return
    clis = table_of("Agent CLIs on PATH", "Program", "Version", "Path", "Configured as")
    for cli in found:
        version = cli.version if cli.ok else f"[red]{escape(cli.version)}[/]"
        clis.add_row(cli.adapter, version, cli.path, ", ".join(cli.configured_as) or "—")
    console.print(clis)
    missing = [cli for cli in found if not cli.configured_as]
    if missing:
        where = settings.agents_file or "the agents file"
        console.print(f"To use them, add to {where}:\n")
        console.print(
            escape(
                "\n".join(
                    cli.toml(
                        cli.adapter if cli.adapter not in config.agents else f"{cli.adapter}-cli"
                    )
                    for cli in missing
                )
            ),
            highlight=False,
        )
