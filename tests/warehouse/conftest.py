"""Fixtures: a migrated database, and one warehouse-loader process shared by this package's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest
from cryptoflow_cli.servers import start_nats
from cryptoflow_runtime.lake import FileLake
from cryptoflow_warehouse_loader.migrations import migrate
from e2e.harness import Pipeline

from .support import LoaderStack, loader_pipeline

DURABLES = [
    ("SILVER", "warehouse-loader"),
    ("GAPS", "warehouse-loader-gaps"),
    ("RUNS", "warehouse-loader-runs"),
    ("DLQ", "warehouse-loader-quarantine"),
]


@pytest.fixture
async def warehouse_url(fresh_database_url: str) -> str:
    await asyncio.to_thread(migrate, fresh_database_url)
    return fresh_database_url


@pytest.fixture
async def warehouse(warehouse_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(warehouse_url)
    try:
        yield conn
    finally:
        await conn.close()


async def wait_for_consumers(nats_url: str, durables: list[tuple[str, str]], pipe: Pipeline) -> None:
    async def ready() -> bool:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            for stream, durable in durables:
                try:
                    await js.consumer_info(stream, durable)
                except nats.js.errors.NotFoundError:
                    return False
            return True
        finally:
            await nc.close()

    await pipe.wait_for("the loader's consumers", ready, timeout=60)


@pytest.fixture(scope="package")
async def loader_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> AsyncIterator[LoaderStack]:
    """One loader process for the package's handler tests; each test uses its own symbols so they
    do not see each other's rows."""
    root: Path = tmp_path_factory.mktemp("loader-stack")
    with start_nats(root / "nats") as nats_server:
        pipe = await loader_pipeline(root, nats_server.url, database_url)
        pipe.start("warehouse-loader")
        await wait_for_consumers(nats_server.url, DURABLES, pipe)
        try:
            yield LoaderStack(pipe=pipe, lake=FileLake(pipe.lake_url))
        finally:
            pipe.stop_all()
