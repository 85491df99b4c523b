"""Schema migrations: Alembic revisions (revisions/versions), applied under an advisory lock.

`migrate()` is what `cryptoflow warehouse migrate` and the loader at start call. All pending
revisions run in one transaction that first takes `pg_advisory_xact_lock`: two replicas
starting together serialise there, and the second, once the first has committed, finds the
database at head and applies nothing (decision 0020).

Alembic runs on SQLAlchemy's synchronous psycopg driver; the loader calls `migrate` in a thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptoflow_runtime.postgres import redact
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).with_name("revisions")
# Any constant: every process migrating this database contends on the same lock.
ADVISORY_LOCK_ID = 0x63F10_0001
# Alembic keeps the running migration in module globals (alembic.context, alembic.op): one
# migration at a time per process. Across processes the advisory lock serialises them.
_IN_PROCESS = threading.Lock()


class MigrationError(Exception):
    """The schema is not at head and this process may not or could not migrate it."""


def sqlalchemy_url(database_url: str) -> str:
    """postgresql://… (the platform's form, also asyncpg's) → SQLAlchemy's psycopg driver URL."""
    for scheme in ("postgresql://", "postgres://"):
        if database_url.startswith(scheme):
            return "postgresql+psycopg://" + database_url.removeprefix(scheme)
    raise ValueError("not a PostgreSQL URL (expected postgresql://user@host:port/db)")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    config.attributes["applied"] = []
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no revisions"
    return head


def current_revision(database_url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            revision: str | None = MigrationContext.configure(connection).get_current_revision()
            return revision
    finally:
        engine.dispose()


def migrate(database_url: str, target: str = "head") -> list[str]:
    """Upgrade to `target`; returns the revisions this call applied (empty when up to date)."""
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        with _IN_PROCESS, engine.begin() as connection:
            config = alembic_config(connection)
            command.upgrade(config, target)
            applied: list[str] = config.attributes["applied"]
    finally:
        engine.dispose()
    if applied:
        log.info("migrations applied", extra={"revisions": applied, "database": redact(database_url)})
    return applied


def require_head(database_url: str) -> None:
    """For a loader started with migrations off: refuse to load into an older schema."""
    current, head = current_revision(database_url), head_revision()
    if current != head:
        raise MigrationError(
            f"warehouse schema is at {current!r}, the loader needs {head!r}: run `cryptoflow warehouse migrate`"
        )


def record_applied(config: Config, revision: Any) -> None:
    config.attributes["applied"].append(revision)
