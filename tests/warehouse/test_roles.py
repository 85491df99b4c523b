"""cryptoflow_loader can do the loader's work and nothing more; cryptoflow_reader can only read."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from cryptoflow_warehouse_loader import marts
from cryptoflow_warehouse_loader.migrations import SCRIPT_LOCATION
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch

from .support import put_batch, sample


async def login_as(warehouse_url: str, group: str) -> AsyncIterator[asyncpg.Connection]:
    """A throwaway LOGIN role in `group`, as an operator would create from a secret."""
    admin = await asyncpg.connect(warehouse_url)
    name = f"test_{group}_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE {group}')
    conn = await asyncpg.connect(
        urlsplit(warehouse_url)
        ._replace(netloc=f"{name}@{urlsplit(warehouse_url).hostname}:{urlsplit(warehouse_url).port}")
        .geturl()
    )
    try:
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP OWNED BY "{name}"')
        await admin.execute(f'DROP ROLE "{name}"')
        await admin.close()


@pytest.fixture
async def as_loader(warehouse_url: str) -> AsyncIterator[asyncpg.Connection]:
    async for conn in login_as(warehouse_url, "cryptoflow_loader"):
        yield conn


@pytest.fixture
async def as_reader(warehouse_url: str) -> AsyncIterator[asyncpg.Connection]:
    async for conn in login_as(warehouse_url, "cryptoflow_reader"):
        yield conn


async def test_roles_are_nologin_groups(warehouse: asyncpg.Connection) -> None:
    rows = await warehouse.fetch(
        "SELECT rolname, rolcanlogin, rolsuper FROM pg_roles WHERE rolname IN ('cryptoflow_loader', 'cryptoflow_reader')"
    )
    assert {(r["rolname"], r["rolcanlogin"], r["rolsuper"]) for r in rows} == {
        ("cryptoflow_loader", False, False),
        ("cryptoflow_reader", False, False),
    }
    for revision in (SCRIPT_LOCATION / "versions").glob("*.py"):
        # No `PASSWORD '...'` (nor a dollar-quoted one) in any revision: operators set passwords.
        assert not re.search(r"\bPASSWORD\s+(E?'|\$)", revision.read_text(), re.IGNORECASE), revision


async def test_loader_role_loads_every_table_and_no_more(as_loader: asyncpg.Connection, tmp_path: Path) -> None:
    from cryptoflow_runtime.lake import FileLake

    lake = FileLake(f"file://{tmp_path / 'lake'}")
    for name, table in TABLES.items():
        # Two months: the loader creates partitions it does not own, through the definer function.
        rows = sample(name, 3, symbol="ROLE/USDT", start=0).vstack(sample(name, 2, symbol="ROLE/USDT", start=50_000))
        batch = await put_batch(lake, name, rows, f"role-{name}")
        result = await load_batch(as_loader, table, rows, batch)
        assert result.inserted == 5
        again = await put_batch(lake, name, rows, f"role-{name}-again")
        assert (await load_batch(as_loader, table, rows, again)).unchanged == 5
    await marts.refresh(as_loader)
    for forbidden in (
        "DELETE FROM ohlcv_data",
        "TRUNCATE ohlcv_data",
        "DROP TABLE trades_data",
        "DROP VIEW trades",
        "CREATE TABLE sneaky (x int)",
        "ALTER TABLE ohlcv_data ADD COLUMN x int",
        "REFRESH MATERIALIZED VIEW market_overview",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_loader.execute(forbidden)


async def test_reader_role_reads_everything_and_writes_nothing(
    warehouse: asyncpg.Connection, as_reader: asyncpg.Connection
) -> None:
    for relation in (
        "ohlcv",
        "ohlcv_data",
        "trades",
        "batches",
        "series",
        "market_overview",
        "performance",
        "cross_exchange_spread",
        "data_freshness",
        "alerts",
        "service_runs",
    ):
        await as_reader.fetch(f'SELECT * FROM "{relation}" LIMIT 1')
    for forbidden in (
        "INSERT INTO alerts (rule, kind, symbol, exchanges, observed_at, value, threshold, message) VALUES ('r', 'k', 's', 'e', now(), 1, 1, 'm')",
        "UPDATE batches SET rows = 0",
        "SELECT cryptoflow_refresh_marts()",
        "SELECT cryptoflow_ensure_month_partitions('ohlcv_data', now(), now())",
        "DELETE FROM ohlcv_data",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_reader.execute(forbidden)
