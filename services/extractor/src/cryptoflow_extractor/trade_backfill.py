"""Backfill of Binance trades or aggregate trades from the bulk archives: `backfill --dataset trades|agg_trades`.

Per symbol, the `trades` (or `aggTrades`) files of the range (trade_archive.py: checksum first,
checkpointed per file, missing days recorded), then, for trades, REST by trade id from the last
archived trade to the range's end (trades_by_id.py, with checkpoints of the backfill's own), so
the two join with no gap and no overlap. Aggregate trades come from the archives alone (decision
0056). Progress is shown in archive days.
"""

from __future__ import annotations

import sys
from typing import TextIO

import aiohttp
from cryptoflow_contracts import Dataset
from cryptoflow_runtime import ConfigError, ensure_kv
from cryptoflow_runtime.progress import Progress

from .app import load_markets, make_session
from .archive import ARCHIVE_SOURCE, ARCHIVED_EXCHANGES, DAY_MS, DEFAULT_ARCHIVE_URL, ArchiveFetcher, ArchiveReport
from .backfill import BackfillRequest
from .checkpoints import CheckpointStore
from .config import ExtractorSettings
from .profiles import profile
from .publishing import command_connection
from .trade_archive import TradeArchiveJob, TradeKind, fill_missing_days
from .trades_by_id import TradesByIdJob

KINDS: dict[str, TradeKind] = {Dataset.TRADES.value: "trades", Dataset.AGG_TRADES.value: "aggTrades"}


async def run_trade_backfill(
    settings: ExtractorSettings, request: BackfillRequest, out: TextIO = sys.stderr, report: ArchiveReport | None = None
) -> int:
    """Returns the number of trades (or aggregate trades) published."""
    kind = KINDS.get(request.dataset)
    if kind is None:
        raise ConfigError(f"--dataset: {request.dataset!r} is not one of ohlcv, {', '.join(KINDS)}")
    if request.source != ARCHIVE_SOURCE or request.exchange not in ARCHIVED_EXCHANGES:
        raise ConfigError(f"--dataset {request.dataset}: from Binance's bulk archives only (--source {ARCHIVE_SOURCE})")
    spec = settings.jobs().exchanges.get(request.exchange)
    if spec is None:
        raise ConfigError(f"--exchange: {request.exchange!r} is not configured")
    spec = spec.model_copy(update={"symbols": request.symbols})
    nc, js, publisher = await command_connection(settings)
    session = make_session(request.exchange, spec, settings, publisher)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
    report = report if report is not None else ArchiveReport()
    try:
        checkpoints = CheckpointStore(await ensure_kv(js, settings.checkpoint_bucket))
        if not await load_markets(session, request.symbols, attempts=5):
            raise ConfigError(f"cannot load markets of {request.exchange} (EXTRACTOR_EXCHANGE_URL?)")
        fetcher = ArchiveFetcher(request.archive_url or spec.url or DEFAULT_ARCHIVE_URL, http)
        # The UTC days the range touches, per symbol; a file counts the days of them it holds.
        days = request.end_ms // DAY_MS - request.start_ms // DAY_MS + 1
        progress = Progress(days * len(request.symbols), out, "archive days")
        jobs: list[TradeArchiveJob] = []

        def archived_days() -> int:
            return sum(
                len(range(max(file.start_ms, job.start_ms) // DAY_MS, (min(file.end_ms, job.end_ms) - 1) // DAY_MS + 1))
                for job in jobs
                for file in job.files_done
            )

        published = 0
        for symbol in request.symbols:
            job = TradeArchiveJob(
                session=session,
                fetcher=fetcher,
                checkpoints=checkpoints,
                symbol=symbol,
                kind=kind,
                start_ms=request.start_ms,
                end_ms=request.end_ms + 1,
                market=request.archive_market,
                report=report,
                on_file=lambda: progress.show(archived_days()),
            )
            jobs.append(job)
            await job.run()
            published += job.records
            if kind == "trades":
                published += await _rest_tail(job, request, checkpoints, settings.page_limit)
        progress.show(archived_days(), final=True)
        return published
    finally:
        await http.close()
        await session.exchange.close()
        await nc.close()


async def _rest_tail(
    job: TradeArchiveJob, request: BackfillRequest, checkpoints: CheckpointStore, page_limit: int
) -> int:
    """The days the archive lacks, then the rest of the range, by REST by trade id from the last
    archived trade to the range's end."""
    rest = TradesByIdJob(
        job.session,
        job.symbol,
        request.start_ms,
        min(page_limit, profile(request.exchange).max_trades_page),
        checkpoints,
        until_ms=request.end_ms,
        checkpoint_prefix=request.checkpoint_prefix,
    )
    filled = await fill_missing_days(job, rest)
    known = await rest.last_id()
    if job.last_id is not None and (known is None or job.last_id > known):
        await checkpoints.put_state(
            rest.key, {"last_id": job.last_id, "last_ts": job.last_ts, "ids_at_last_ts": [str(job.last_id)]}
        )
    return filled + await rest.catch_up()
