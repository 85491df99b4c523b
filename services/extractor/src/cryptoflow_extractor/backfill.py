"""Backfill: a date range of candles as fast as the exchange's limits allow, resumable.

It publishes to RAW like the live poller (so downstream upserts make the two idempotent), with
checkpoints of its own (`backfill.<from>.<to>.` prefix): a killed backfill resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import nats
from cryptoflow_contracts import timeframe_ms
from cryptoflow_runtime import ConfigError, ensure_kv, ensure_streams
from cryptoflow_runtime.nats_auth import connect_options
from cryptoflow_runtime.progress import Progress

from .app import load_markets, make_session, poll_forever
from .checkpoints import CheckpointStore
from .config import ExtractorSettings
from .ohlcv import OhlcvJob
from .profiles import profile
from .publishing import jetstream_publisher


@dataclass(frozen=True)
class BackfillRequest:
    exchange: str
    symbols: list[str]
    timeframe: str
    start: datetime
    end: datetime

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return int(self.end.timestamp() * 1000)

    @property
    def checkpoint_prefix(self) -> str:
        return f"backfill.{self.start_ms}.{self.end_ms}."


async def run_backfill(settings: ExtractorSettings, request: BackfillRequest, out: TextIO = sys.stderr) -> int:
    """Returns the number of candles covered (checkpointed) in the range."""
    config = settings.jobs()
    spec = config.exchanges.get(request.exchange)
    if spec is None:
        raise ConfigError(
            f"--exchange: {request.exchange!r} is not configured (configured: {', '.join(config.exchanges)})"
        )
    spec = spec.model_copy(update={"symbols": request.symbols})
    nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1, **connect_options(settings))
    js = nc.jetstream()

    async def send(subject: str, body: bytes, headers: dict[str, str], stream: str) -> None:
        await js.publish(subject, body, headers=headers, stream=stream)

    session = make_session(request.exchange, spec, settings, jetstream_publisher(send))
    try:
        await ensure_streams(js)
        checkpoints = CheckpointStore(await ensure_kv(js, settings.checkpoint_bucket))
        if not await load_markets(session, request.symbols, attempts=5):
            raise ConfigError(f"cannot load markets of {request.exchange} (EXTRACTOR_EXCHANGE_URL?)")
        jobs = [
            OhlcvJob(
                session=session,
                symbol=symbol,
                timeframe=request.timeframe,
                since_ms=request.start_ms,
                until_ms=request.end_ms,
                page_limit=min(settings.page_limit, profile(request.exchange).max_ohlcv_page),
                checkpoints=checkpoints,
                checkpoint_prefix=request.checkpoint_prefix,
            )
            for symbol in request.symbols
        ]
        tf_ms = timeframe_ms(request.timeframe)
        per_symbol = (request.end_ms - request.start_ms) // tf_ms + 1
        progress = Progress(per_symbol * len(jobs), out, "candles")

        async def covered() -> int:
            done = 0
            for job in jobs:
                next_since = await checkpoints.next_since(job.key)
                if next_since is not None:
                    done += min(per_symbol, (next_since - request.start_ms) // tf_ms)
            return done

        async def report() -> None:
            while True:
                progress.show(await covered())
                await asyncio.sleep(0.5)

        reporter = asyncio.create_task(report())
        try:
            await asyncio.gather(
                *(poll_forever(job, 0.0, "ohlcv", request.exchange, stop_when_done=True) for job in jobs)
            )
        finally:
            reporter.cancel()
        done = await covered()
        progress.show(done, final=True)
        return done
    finally:
        await session.exchange.close()
        await nc.close()
