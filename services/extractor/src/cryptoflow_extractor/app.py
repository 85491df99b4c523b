"""Extractor service: one polling task per symbol·timeframe, publishing RawSnapshot to RAW."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import ccxt.async_support as ccxt
from cryptoflow_contracts import RawSnapshot, Stream, raw_subject
from cryptoflow_runtime import ConfigError, Service, ensure_kv, msg_id_headers

from .checkpoints import CheckpointStore
from .config import ExtractorSettings
from .exchanges import create_exchange
from .metrics import POLL_ERRORS
from .ohlcv import OhlcvJob

log = logging.getLogger(__name__)

NAME = "extractor"


async def check_symbols(exchange: ccxt.Exchange, settings: ExtractorSettings) -> None:
    """Fail fast, naming the setting, when the exchange does not list a configured symbol."""
    try:
        markets = await exchange.load_markets()
    except ccxt.BaseError as exc:
        raise ConfigError(
            f"EXTRACTOR_EXCHANGE_URL/EXTRACTOR_EXCHANGE: cannot load markets of {settings.exchange} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    unknown = [symbol for symbol in settings.symbols if symbol not in markets]
    if unknown:
        raise ConfigError(
            f"EXTRACTOR_SYMBOLS: {', '.join(unknown)} not listed by {settings.exchange} (it has {len(markets)} markets)"
        )


async def poll_forever(job: OhlcvJob, interval_s: float, stop_when_done: bool) -> None:
    delay = 1.0
    while True:
        try:
            await job.catch_up()
            delay = 1.0
            if stop_when_done:
                return
            await asyncio.sleep(interval_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Network faults and exchange errors are retried with backoff; the checkpoint
            # makes the next attempt resume exactly where this one stopped.
            POLL_ERRORS.labels(job.exchange_id, "ohlcv", type(exc).__name__).inc()
            log.warning(
                "poll failed, retrying",
                extra={"symbol": job.symbol, "timeframe": job.timeframe, "error": repr(exc), "retry_in_s": delay},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)


async def build(settings: ExtractorSettings) -> Service:
    service = Service(NAME, settings)
    exchange = create_exchange(settings.exchange, settings.exchange_url, settings.timeout_ms)
    tasks: list[asyncio.Task[None]] = []

    async def publish(snapshot: RawSnapshot) -> None:
        await service.broker.publish(
            snapshot.to_json(),
            subject=raw_subject(snapshot.dataset, snapshot.exchange, snapshot.symbol),
            headers=msg_id_headers(snapshot.event_id),
            stream=Stream.RAW.value,
        )

    async def start_polling() -> None:
        await check_symbols(exchange, settings)
        kv = await ensure_kv(service.jetstream, settings.checkpoint_bucket)
        checkpoints = CheckpointStore(kv)
        since_ms = int(settings.since.timestamp() * 1000)
        until_ms = int(settings.until.timestamp() * 1000) if settings.until else None
        for symbol in settings.symbols:
            for timeframe in settings.timeframes:
                job = OhlcvJob(
                    exchange=exchange,
                    exchange_id=settings.exchange,
                    symbol=symbol,
                    timeframe=timeframe,
                    since_ms=since_ms,
                    until_ms=until_ms,
                    page_limit=settings.page_limit,
                    checkpoints=checkpoints,
                    publish=publish,
                )
                tasks.append(asyncio.create_task(poll_forever(job, settings.poll_interval_s, False)))
        log.info("polling", extra={"exchange": settings.exchange, "jobs": len(tasks)})

    async def stop_polling() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await exchange.close()

    service.app.after_startup(start_polling)
    service.app.on_shutdown(stop_polling)
    return service
