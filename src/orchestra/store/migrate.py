"""Schema migrations (Alembic): ``orchestra db upgrade`` and start-up both call
:func:`upgrade`. The migrations live in ``store/migrations/versions``."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` in one transaction per migration run."""
    config = alembic_config(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # several processes may start at once
            conn.execute(text("SELECT pg_advisory_xact_lock(7240612)"))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    log.info("database schema at %s", revision)
