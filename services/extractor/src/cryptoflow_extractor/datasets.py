"""Which jobs each dataset runs: one factory per dataset, declared once, read by the service.

A dataset is its block in a jobs file (a `DatasetSpec` field of `jobs.DatasetsSpec`), its job
class (ohlcv.py, snapshots.py, trades.py) and its entry here: how its jobs for one exchange·symbol
are built from its spec, with their poll intervals. `Extractor` starts whatever the configured
datasets' factories return; it names no dataset itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol

from cryptoflow_contracts import Dataset

from .archive import ARCHIVE_SOURCE, DEFAULT_ARCHIVE_URL, ArchiveThenRest
from .checkpoints import CheckpointStore, checkpoint_key
from .jobs import AggTradesSpec, DatasetsSpec, OhlcvSpec, OrderBookSpec, TickerSpec, TradesSpec
from .ohlcv import OhlcvJob
from .profiles import profile
from .session import ExchangeSession
from .snapshots import OrderBookJob, TickerJob
from .stream_books import BookStream
from .stream_candles import CandlesStream
from .stream_tickers import TickerStream
from .stream_trades import TradesStream
from .streaming import StreamJob
from .trade_archive import AggTradesArchive, TradesArchiveThenRest
from .trades import TradesJob
from .trades_by_id import TradesByIdJob


class PolledJob(Protocol):
    @property
    def name(self) -> str: ...

    async def catch_up(self) -> int: ...


# A polled job is caught up every poll interval; a stream job runs (`StreamJob.run`) until stopped.
Job = PolledJob | StreamJob


@dataclass(frozen=True)
class JobContext:
    """What every job of one exchange·symbol shares."""

    session: ExchangeSession
    symbol: str
    checkpoints: CheckpointStore


@dataclass(frozen=True)
class Scheduled:
    """A job, how long to wait between its polls once it has caught up, and its identity
    (exchange·symbol·dataset·timeframe, as its checkpoint and its lease are keyed)."""

    job: Job
    poll_interval_s: float
    key: str


# (context, the dataset's spec from the jobs file) → its jobs for that exchange·symbol.
JobFactory = Callable[[JobContext, Any], list[Scheduled]]


def _key(context: JobContext, dataset: Dataset, timeframe: str | None = None) -> str:
    return checkpoint_key(context.session.exchange_id, context.symbol, dataset, timeframe)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def ohlcv_jobs(context: JobContext, spec: OhlcvSpec) -> list[Scheduled]:
    """One job per timeframe; streamed, each fills its holes with the polling job."""
    scheduled: list[Scheduled] = []
    for timeframe in spec.timeframes:
        polled = OhlcvJob(
            session=context.session,
            symbol=context.symbol,
            timeframe=timeframe,
            since_ms=_ms(spec.since),
            until_ms=_ms(spec.until) if spec.until else None,
            page_limit=min(spec.page_limit, profile(context.session.exchange_id).max_ohlcv_page),
            checkpoints=context.checkpoints,
        )
        job: Job = polled
        if spec.source == ARCHIVE_SOURCE:
            base_url = spec.archive_url or context.session.base_url or DEFAULT_ARCHIVE_URL
            job = ArchiveThenRest(polled, base_url, spec.archive_market)
        elif spec.streamed:
            job = CandlesStream(
                context.session,
                context.symbol,
                timeframe,
                polled,
                context.checkpoints,
                spec.stall_after_s,
                spec.publish_forming,
            )
        scheduled.append(Scheduled(job, spec.poll_interval_s, _key(context, Dataset.OHLCV, timeframe)))
    return scheduled


def ticker_jobs(context: JobContext, spec: TickerSpec) -> list[Scheduled]:
    job: Job = TickerJob(context.session, context.symbol)
    if spec.streamed:
        job = TickerStream(context.session, context.symbol, spec.publish_interval_s, spec.stall_after_s)
    return [Scheduled(job, spec.poll_interval_s, _key(context, Dataset.TICKER))]


def orderbook_jobs(context: JobContext, spec: OrderBookSpec) -> list[Scheduled]:
    job: Job = OrderBookJob(context.session, context.symbol, spec.depth)
    if spec.streamed:
        job = BookStream(context.session, context.symbol, spec.depth, spec.publish_interval_s, spec.stall_after_s)
    return [Scheduled(job, spec.poll_interval_s, _key(context, Dataset.ORDERBOOK))]


def trades_jobs(context: JobContext, spec: TradesSpec) -> list[Scheduled]:
    since = _ms(spec.since) if spec.since else None
    page_limit = min(spec.page_limit, profile(context.session.exchange_id).max_trades_page)
    polled = TradesJob(context.session, context.symbol, since, page_limit, context.checkpoints)
    job: Job = polled
    if spec.source == ARCHIVE_SOURCE:
        base_url = spec.archive_url or context.session.base_url or DEFAULT_ARCHIVE_URL
        by_id = TradesByIdJob(context.session, context.symbol, since, page_limit, context.checkpoints)
        job = TradesArchiveThenRest(by_id, base_url, spec.archive_market)
    elif spec.streamed:
        job = TradesStream(
            context.session,
            context.symbol,
            polled,
            context.checkpoints,
            spec.stall_after_s,
            spec.batch_max,
            spec.batch_ms,
        )
    return [Scheduled(job, spec.poll_interval_s, _key(context, Dataset.TRADES))]


def agg_trades_jobs(context: JobContext, spec: AggTradesSpec) -> list[Scheduled]:
    base_url = spec.archive_url or context.session.base_url or DEFAULT_ARCHIVE_URL
    job = AggTradesArchive(
        context.session, context.checkpoints, context.symbol, _ms(spec.since), base_url, spec.archive_market
    )
    return [Scheduled(job, spec.poll_interval_s, _key(context, Dataset.AGG_TRADES))]


JOB_FACTORIES: Mapping[Dataset, JobFactory] = MappingProxyType(
    {
        Dataset.OHLCV: ohlcv_jobs,
        Dataset.TICKER: ticker_jobs,
        Dataset.ORDERBOOK: orderbook_jobs,
        Dataset.TRADES: trades_jobs,
        Dataset.AGG_TRADES: agg_trades_jobs,
    }
)


def scheduled_jobs(context: JobContext, datasets: DatasetsSpec) -> dict[Dataset, list[Scheduled]]:
    """Every configured dataset's jobs for one exchange·symbol, in `Dataset` order."""
    return {dataset: JOB_FACTORIES[dataset](context, spec) for dataset, spec in datasets.configured().items()}
