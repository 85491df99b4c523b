"""Migrations (Alembic) against a real PostgreSQL: idempotent, safe when replicas start together,
all-or-nothing when a revision fails."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from cryptoflow_warehouse_loader import migrations
from cryptoflow_warehouse_loader.migrations import (
    ADVISORY_LOCK_ID,
    alembic_config,
    current_revision,
    head_revision,
    migrate,
)

ALL_REVISIONS = [
    "0001",
    "0002",
    "0003",
    "0004",
    "0005",
    "0006",
    "0007",
    "0008",
    "0009",
    "0010",
    "0011",
    "0012",
    "0013",
    "0014",
    "0015",
]


async def views(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {
            row["viewname"] for row in await conn.fetch("SELECT viewname FROM pg_views WHERE schemaname = 'public'")
        }
    finally:
        await conn.close()


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


def test_revisions_form_one_line_ending_at_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    chain = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    assert chain == ALL_REVISIONS
    assert script.get_heads() == [head_revision()] == [ALL_REVISIONS[-1]]


async def test_first_migrate_applies_everything(fresh_database_url: str) -> None:
    assert await asyncio.to_thread(migrate, fresh_database_url) == ALL_REVISIONS
    stored = {"ohlcv_data", "tickers_data", "order_books_data", "trades_data", "indicators_data"}
    assert {"alembic_version", "batches", "series", *stored} <= await tables(fresh_database_url)
    # Readers see every silver table under its own name, as a view with the series' names.
    assert {"ohlcv", "tickers", "order_books", "trades", "indicators"} <= await views(fresh_database_url)
    assert await asyncio.to_thread(current_revision, fresh_database_url) == head_revision()


async def test_migrate_is_idempotent(fresh_database_url: str) -> None:
    await asyncio.to_thread(migrate, fresh_database_url)
    before = await tables(fresh_database_url)
    assert await asyncio.to_thread(migrate, fresh_database_url) == []
    assert await asyncio.to_thread(migrate, fresh_database_url) == []
    assert await tables(fresh_database_url) == before


async def test_concurrent_migrate_applies_each_revision_once(fresh_database_url: str) -> None:
    # Two processes, as two replicas (or two deploy jobs) would be.
    command = [
        sys.executable,
        "-m",
        "cryptoflow_cli.main",
        "warehouse",
        "migrate",
        "--database-url",
        fresh_database_url,
    ]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    reports = sorted("applied" in out for out, _ in outputs)
    assert reports == [False, True]  # exactly one of them migrated, the other found head
    assert await asyncio.to_thread(current_revision, fresh_database_url) == head_revision()


async def test_concurrent_migrate_in_one_process_is_serialised(fresh_database_url: str) -> None:
    results = await asyncio.gather(
        asyncio.to_thread(migrate, fresh_database_url), asyncio.to_thread(migrate, fresh_database_url)
    )
    assert sorted(results) == [[], ALL_REVISIONS]


async def test_lock_is_released_after_migrate(fresh_database_url: str) -> None:
    await asyncio.to_thread(migrate, fresh_database_url)
    other = await asyncpg.connect(fresh_database_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_ID) is True
        await other.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_ID)
    finally:
        await other.close()


BROKEN = '''"""broken

Revision ID: 9999
Revises: {head}
"""

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("CREATE TABLE half_done (x int); SELECT * FROM no_such_table;")


def downgrade() -> None:
    run_sql("DROP TABLE half_done")
'''


async def test_failed_revision_rolls_back_everything_pending(
    fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tmp_path / "revisions"
    shutil.copytree(migrations.SCRIPT_LOCATION, scripts)
    (scripts / "versions" / "v9999_broken.py").write_text(BROKEN.format(head=head_revision()))
    monkeypatch.setattr(migrations, "SCRIPT_LOCATION", scripts)
    with pytest.raises(Exception, match="no_such_table"):
        await asyncio.to_thread(migrate, fresh_database_url)
    # All pending revisions run in one transaction: nothing of them stayed, not even the good ones.
    assert await asyncio.to_thread(current_revision, fresh_database_url) is None
    assert "half_done" not in await tables(fresh_database_url)
    assert "ohlcv" not in await tables(fresh_database_url)
    other = await asyncpg.connect(fresh_database_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_ID) is True
    finally:
        await other.close()
    monkeypatch.setattr(
        migrations,
        "SCRIPT_LOCATION",
        migrations.SCRIPT_LOCATION.__class__(str(migrations.__file__)).with_name("revisions"),
    )
    assert await asyncio.to_thread(migrate, fresh_database_url) == ALL_REVISIONS
