"""Fixtures of the API tests: a migrated warehouse, its read-only login, the API serving it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from cryptoflow_warehouse_loader.migrations import migrate

from .support import reader_login


@pytest.fixture
async def warehouse_url(fresh_database_url: str) -> str:
    await asyncio.to_thread(migrate, fresh_database_url)
    return fresh_database_url


@pytest.fixture
async def reader_url(warehouse_url: str) -> AsyncIterator[str]:
    async with reader_login(warehouse_url) as url:
        yield url
