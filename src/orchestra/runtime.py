"""Opening Orchestra in a process: settings → database (migrated) → service.

The API server, the worker command and the CLI all start here, so they agree
on where the data lives and how the schema is brought up to date.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orchestra.agents.config import load_agents_config
from orchestra.config import Settings
from orchestra.engine.api import WorkerSettings
from orchestra.service import Orchestra
from orchestra.store.db import Database
from orchestra.store.migrate import upgrade

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    service: Orchestra

    def close(self) -> None:
        self.db.close()


def open_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Open the database (creating the data directory and schema when needed)."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    try:
        if migrate:
            upgrade(db.write_engine)
        agents = load_agents_config(
            settings.agents_file,
            max_timeout_s=settings.max_agent_timeout_s,
            # The settings share the file (``port``, ``[[notify]]``…): theirs to check.
            other_keys=set(Settings.model_fields),
        )
        worker = WorkerSettings(
            concurrency=settings.worker_concurrency, lease_ttl_s=settings.lease_ttl_s
        )
        service = Orchestra(  # checks the [deadlines] tables against the workflows
            db,
            agents=agents,
            allowed_roots=settings.workspace_roots,
            worker=worker,
            checks=settings.check_for,
            deadlines=settings.deadlines,
        )
    except BaseException:
        db.close()
        raise
    log.info("orchestra: %s database at %s", db.kind, _redact(settings.db_url))
    return Runtime(settings, db, service)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url
