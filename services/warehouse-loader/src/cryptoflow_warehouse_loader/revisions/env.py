"""Alembic environment: runs on the connection `migrations.migrate` passes, under its lock."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import Connection, text

from cryptoflow_warehouse_loader.migrations import ADVISORY_LOCK_ID, record_applied
from cryptoflow_warehouse_loader.schema import metadata

config = context.config
connection: Connection | None = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through cryptoflow_warehouse_loader.migrations.migrate()")


def on_version_apply(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    if step.is_upgrade:
        record_applied(config, step.up_revision_id)


# Held until the transaction (all pending revisions) commits: a concurrent migrator waits here
# and then reads the committed alembic_version, so it applies nothing twice.
connection.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": ADVISORY_LOCK_ID})
context.configure(connection=connection, target_metadata=metadata, on_version_apply=on_version_apply)
with context.begin_transaction():
    context.run_migrations()
