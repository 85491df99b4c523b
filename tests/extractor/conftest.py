"""Extractor jobs against the in-process simulator, real ccxt and a real JetStream KV."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats
import pytest
from cryptoflow_contracts import DeadLetter, KnownGap, LiveUpdate, RawSnapshot, SchemaDrift
from cryptoflow_extractor.checkpoints import CheckpointStore
from cryptoflow_extractor.drift import DriftDetector
from cryptoflow_extractor.exchanges import create_exchange
from cryptoflow_extractor.limiter import RateLimiter
from cryptoflow_extractor.resilience import CircuitBreaker, ExchangeCaller, RetryPolicy
from cryptoflow_extractor.session import ExchangeSession, Publisher
from cryptoflow_runtime import ensure_kv


@dataclass
class Recorder:
    """Collects what a job publishes, in order."""

    snapshots: list[RawSnapshot] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    gaps: list[KnownGap] = field(default_factory=list)
    drifts: list[SchemaDrift] = field(default_factory=list)
    live: list[LiveUpdate] = field(default_factory=list)

    def publisher(self) -> Publisher:
        async def snapshot(event: RawSnapshot) -> None:
            self.snapshots.append(event)

        async def dead_letter(event: DeadLetter) -> None:
            self.dead_letters.append(event)

        async def gap(event: KnownGap) -> None:
            self.gaps.append(event)

        async def drift(event: SchemaDrift) -> None:
            self.drifts.append(event)

        async def live(event: LiveUpdate) -> None:
            self.live.append(event)

        return Publisher(snapshot=snapshot, dead_letter=dead_letter, gap=gap, drift=drift, live=live)

    def candles(self) -> list[list[object]]:
        return [candle for s in self.snapshots for candle in s.payload]


@pytest.fixture
async def checkpoints(fresh_nats_url: str) -> AsyncIterator[CheckpointStore]:
    nc = await nats.connect(fresh_nats_url)
    try:
        yield CheckpointStore(await ensure_kv(nc.jetstream(), "test_checkpoints"))
    finally:
        await nc.close()


def make_session(base_url: str, recorder: Recorder, exchange_id: str = "binance") -> ExchangeSession:
    exchange = create_exchange(exchange_id, base_url, timeout_ms=5000, rate_limit_ms=1)
    caller = ExchangeCaller(
        exchange_id,
        exchange,
        RateLimiter(exchange_id, 0.001),
        CircuitBreaker(exchange_id, threshold=5, cooldown_s=1.0),
        RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05),
    )
    return ExchangeSession(exchange_id, exchange, caller, recorder.publisher(), DriftDetector(), base_url=base_url)
