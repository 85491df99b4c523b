"""Backfill: a date range of candles as fast as the exchange's limits allow, resumable.

It publishes to RAW like the live poller (so downstream upserts make the two idempotent), with
checkpoints of its own (`backfill.<from>.<to>.` prefix): a killed backfill resumes where it stopped.
With `--source binance-archive` the range comes from Binance's bulk archives as far as they reach,
checkpointed per file (`archive.py`), and by REST for the rest.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import aiohttp
from cryptoflow_contracts import timeframe_ms
from cryptoflow_runtime import ConfigError, ensure_kv
from cryptoflow_runtime.progress import Progress

from .app import load_markets, make_session, poll_forever
from .archive import ARCHIVE_SOURCE, ARCHIVED_EXCHANGES, DEFAULT_ARCHIVE_URL, ArchiveFetcher, ArchiveJob, ArchiveReport
from .checkpoints import CheckpointStore
from .config import ExtractorSettings
from .ohlcv import OhlcvJob
from .profiles import profile
from .publishing import command_connection

SOURCES = ("rest", ARCHIVE_SOURCE)
# Symbols read from the archives at once: a file's download, inflating and parsing overlap
# another's pages on their way to JetStream; more buys nothing on a few cores and holds more files.
ARCHIVE_SYMBOLS_AT_ONCE = 4


@dataclass(frozen=True)
class BackfillRequest:
    exchange: str
    symbols: list[str]
    timeframe: str
    start: datetime
    end: datetime
    source: str = "rest"
    archive_url: str | None = None
    archive_market: str = "spot"
    dataset: str = "ohlcv"  # trades, agg_trades: from the archives (trade_backfill.py)

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return int(self.end.timestamp() * 1000)

    @property
    def checkpoint_prefix(self) -> str:
        return f"backfill.{self.start_ms}.{self.end_ms}."


async def run_backfill(
    settings: ExtractorSettings, request: BackfillRequest, out: TextIO = sys.stderr, report: ArchiveReport | None = None
) -> int:
    """Returns the number of candle slots covered in the range.

    With `source` binance-archive, each symbol's range is read from the bulk archives as far as
    they reach (`archive.py`; the outcome of every file in `report`), then missing archive days
    and the rest of the range by REST, as a REST backfill reads it."""
    config = settings.jobs()
    spec = config.exchanges.get(request.exchange)
    if spec is None:
        raise ConfigError(
            f"--exchange: {request.exchange!r} is not configured (configured: {', '.join(config.exchanges)})"
        )
    if request.source not in SOURCES:
        raise ConfigError(f"--source: {request.source!r} is not one of {', '.join(SOURCES)}")
    if request.source == ARCHIVE_SOURCE and request.exchange not in ARCHIVED_EXCHANGES:
        raise ConfigError(f"--source {ARCHIVE_SOURCE}: only Binance publishes bulk archives, not {request.exchange}")
    spec = spec.model_copy(update={"symbols": request.symbols})
    nc, js, publisher = await command_connection(settings)
    session = make_session(request.exchange, spec, settings, publisher)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
    try:
        checkpoints = CheckpointStore(await ensure_kv(js, settings.checkpoint_bucket))
        if not await load_markets(session, request.symbols, attempts=5):
            raise ConfigError(f"cannot load markets of {request.exchange} (EXTRACTOR_EXCHANGE_URL?)")
        page_limit = min(settings.page_limit, profile(request.exchange).max_ohlcv_page)
        tf_ms = timeframe_ms(request.timeframe)
        per_symbol = (request.end_ms - request.start_ms) // tf_ms + 1
        total = per_symbol * len(request.symbols)
        progress = Progress(total, out, "candles")

        def rest_job(symbol: str, since_ms: int, until_ms: int, prefix: str) -> OhlcvJob:
            return OhlcvJob(
                session=session,
                symbol=symbol,
                timeframe=request.timeframe,
                since_ms=since_ms,
                until_ms=until_ms,
                page_limit=page_limit,
                checkpoints=checkpoints,
                checkpoint_prefix=prefix,
            )

        starts = {symbol: request.start_ms for symbol in request.symbols}
        archive_jobs: list[ArchiveJob] = []
        fills: list[OhlcvJob] = []
        if request.source == ARCHIVE_SOURCE:
            # An exchange URL set (the simulator) means its archive tree is on that host too.
            fetcher = ArchiveFetcher(request.archive_url or spec.url or DEFAULT_ARCHIVE_URL, http)
            archive_jobs = [
                ArchiveJob(
                    session=session,
                    fetcher=fetcher,
                    checkpoints=checkpoints,
                    symbol=symbol,
                    timeframe=request.timeframe,
                    start_ms=request.start_ms,
                    end_ms=request.end_ms + 1,
                    market=request.archive_market,
                    report=report if report is not None else ArchiveReport(),
                    on_file=lambda: progress.show(min(total, _archived_slots(archive_jobs, tf_ms))),
                )
                for symbol in request.symbols
            ]
            # Symbols side by side (each one's files in order: its holes and checkpoints follow
            # them), a few at a time; within a file, its pages are in flight together.
            room = asyncio.Semaphore(ARCHIVE_SYMBOLS_AT_ONCE)

            async def archive(job: ArchiveJob) -> None:
                async with room:
                    starts[job.symbol] = await job.run()

            await asyncio.gather(*(archive(job) for job in archive_jobs))
            for job in archive_jobs:
                fills += job.rest_fills(rest_job(job.symbol, request.start_ms, request.end_ms, ""))
        rest_jobs = fills + [
            rest_job(symbol, starts[symbol], request.end_ms, request.checkpoint_prefix)
            for symbol in request.symbols
            if starts[symbol] <= request.end_ms
        ]

        async def covered() -> int:
            done = _archived_slots(archive_jobs, tf_ms)
            for job in rest_jobs:
                next_since = await checkpoints.next_since(job.key)
                if next_since is not None and job.until_ms is not None:
                    done += max(0, min(job.until_ms + tf_ms, next_since) - job.since_ms) // tf_ms
            return min(done, total)

        async def show() -> None:
            while True:
                progress.show(await covered())
                await asyncio.sleep(0.5)

        reporter = asyncio.create_task(show())
        try:
            await asyncio.gather(
                *(poll_forever(job, 0.0, "ohlcv", request.exchange, stop_when_done=True) for job in rest_jobs)
            )
        finally:
            reporter.cancel()
        done = await covered()
        progress.show(done, final=True)
        return done
    finally:
        await http.close()
        await session.exchange.close()
        await nc.close()


def _archived_slots(jobs: list[ArchiveJob], tf_ms: int) -> int:
    """Candle slots of the range that archive files loaded now or before cover: open times in
    [max(starts), min(ends)), the range's end exclusive (a range ending on a candle's open time
    ends one ms past it: that candle counts)."""
    return sum(
        -((max(file.start_ms, job.start_ms) - min(file.end_ms, job.end_ms)) // tf_ms)
        for job in jobs
        for file in job.files_done
    )
