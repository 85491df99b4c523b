from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cryptoflow_exchange_sim import CsvCandleMarket, running_simulator

from .binance_client import FIXTURES


@pytest.fixture(scope="session")
def recorded_market() -> CsvCandleMarket:
    return CsvCandleMarket(FIXTURES)


@pytest.fixture(scope="session")
async def recorded_url(recorded_market: CsvCandleMarket) -> AsyncIterator[str]:
    async with running_simulator(recorded_market) as base_url:
        yield base_url
