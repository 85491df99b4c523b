"""Extractor service: one task per job (polling, or streaming: streaming.py), publishing RawSnapshot to RAW.

Each exchange has its own ccxt instance, rate limiter and circuit breaker, so one exchange
failing never slows the others; its jobs resume from their checkpoints when it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import ccxt.async_support as ccxt
from cryptoflow_contracts import Dataset
from cryptoflow_runtime import ConfigError, Service, ensure_kv

from .aggregators import CandleJob, MarketListingJob, PriceHistoryJob, ProviderClient
from .checkpoints import CheckpointStore
from .config import ExtractorSettings
from .datasets import JobContext, PolledJob, Scheduled, scheduled_jobs
from .exchanges import create_exchange
from .jobs import AggregatorSpec, ExchangeSpec, Provider
from .leases import LeaseLostError, LeaseTable
from .limiter import RateLimiter
from .metrics import POLL_ERRORS
from .publishing import jetstream_publisher
from .resilience import CircuitBreaker, CircuitOpenError, ExchangeCaller, RetryPolicy
from .session import BadPageError, ExchangeSession, Publisher
from .sharing import JobRunner, SharedJobs
from .streaming import StreamJob

log = logging.getLogger(__name__)

NAME = "extractor"


async def poll_forever(
    job: PolledJob,
    interval_s: float,
    dataset: str,
    exchange: str,
    stop_when_done: bool = False,
    max_backoff_s: float = 60.0,
) -> None:
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
        except LeaseLostError as exc:
            # Not renewed in time (NATS unreachable?): wait for the next lease round, which renews
            # the lease or stops this task.
            log.info("lease too short for a request, waiting", extra={"job": job.name, "error": str(exc)})
            await asyncio.sleep(1.0)
        except CircuitOpenError as exc:
            POLL_ERRORS.labels(exchange, dataset, "CircuitOpen").inc()
            log.warning("circuit open, waiting", extra={"job": job.name, "error": str(exc)})
            await asyncio.sleep(max(interval_s, 1.0))
        except Exception as exc:
            # Network faults, bad pages and exchange errors are retried with backoff; the
            # checkpoint makes the next attempt resume exactly where this one stopped.
            POLL_ERRORS.labels(exchange, dataset, type(exc).__name__).inc()
            level = logging.INFO if isinstance(exc, BadPageError) else logging.WARNING
            log.log(level, "poll failed, retrying", extra={"job": job.name, "error": repr(exc), "retry_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)


def make_session(
    exchange_id: str, spec: ExchangeSpec, settings: ExtractorSettings, publisher: Publisher
) -> ExchangeSession:
    """A ccxt instance with its own limiter and breaker: exchanges never share failure state."""
    exchange = create_exchange(exchange_id, spec.url, settings.timeout_ms, spec.rate_limit_ms)
    limiter = RateLimiter(exchange_id, float(exchange.rateLimit) / 1000)
    breaker = CircuitBreaker(exchange_id, settings.breaker_threshold, settings.breaker_cooldown_s)
    policy = RetryPolicy(settings.max_attempts)
    caller = ExchangeCaller(exchange_id, exchange, limiter, breaker, policy, request_lease_s=settings.request_lease_s)
    return ExchangeSession(exchange_id, exchange, caller, publisher, base_url=spec.url)


async def load_markets(session: ExchangeSession, symbols: list[str], attempts: int) -> bool:
    """True once markets are loaded; ConfigError when a configured symbol is not listed."""
    for attempt in range(1, attempts + 1):
        try:
            markets = await session.exchange.load_markets()
        except (ccxt.NetworkError, ccxt.ExchangeError) as exc:
            log.warning(
                "cannot load markets", extra={"exchange": session.exchange_id, "error": repr(exc), "attempt": attempt}
            )
            await asyncio.sleep(min(2**attempt, 30))
            continue
        unknown = unknown_symbols(markets, symbols)
        if unknown:
            raise ConfigError(
                f"EXTRACTOR_SYMBOLS / jobs config: {', '.join(unknown)} not listed by {session.exchange_id} "
                f"(it lists {len(markets)} markets)"
            )
        return True
    return False


def unknown_symbols(markets: dict[str, object], symbols: list[str]) -> list[str]:
    return [symbol for symbol in symbols if symbol not in markets]


class Extractor:
    def __init__(self, service: Service, settings: ExtractorSettings) -> None:
        self.service = service
        self.settings = settings
        self.config = settings.jobs()
        self.sessions: dict[str, ExchangeSession] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.ready: dict[str, asyncio.Event] = {}
        self.shared: SharedJobs | None = None
        self.providers: list[ProviderClient] = []
        self.publish = self._publisher()
        for exchange_id, spec in self.config.exchanges.items():
            self.sessions[exchange_id] = make_session(exchange_id, spec, settings, self.publish)

    def _publisher(self) -> Publisher:
        broker = self.service.broker

        async def send(subject: str, body: bytes, headers: dict[str, str], stream: str) -> None:
            await broker.publish(body, subject=subject, headers=headers, stream=stream)

        return jetstream_publisher(send, self.service.publish_unacked)

    async def load_markets(self, exchange_id: str, attempts: int) -> bool:
        return await load_markets(self.sessions[exchange_id], self.config.exchanges[exchange_id].symbols, attempts)

    async def start(self) -> None:
        js = self.service.jetstream
        checkpoints = CheckpointStore(await ensure_kv(js, self.settings.checkpoint_bucket))
        lease_kv = await ensure_kv(js, self.settings.lease_bucket, ttl_s=self.settings.lease_ttl_s)
        jobs: dict[str, JobRunner] = {}
        for exchange_id, spec in self.config.exchanges.items():
            self.ready[exchange_id] = asyncio.Event()
            jobs.update(self._jobs(exchange_id, spec, checkpoints))
        for provider, aggregator in self.config.aggregators.items():
            jobs.update(self._aggregator_jobs(provider, aggregator, checkpoints))
        loaded = await asyncio.gather(*(self.load_markets(ex, attempts=2) for ex in self.sessions))
        for exchange_id, ready in zip(self.config.exchanges, loaded, strict=True):
            if ready:
                self.ready[exchange_id].set()
            else:
                # Down at start: keep trying in the background; the other exchanges go on.
                self.tasks.append(asyncio.create_task(self._ready_when_reachable(exchange_id)))
        settings = self.settings
        table = LeaseTable(js, lease_kv, settings.lease_bucket, settings.replica, settings.lease_ttl_s)
        self.shared = SharedJobs(table, jobs, settings.lease_round_s)
        await self.shared.round()  # this replica's share starts now, not a round later
        self.tasks.append(asyncio.create_task(self.shared.run()))
        log.info(
            "polling",
            extra={
                "exchanges": list(self.sessions),
                "jobs": len(jobs),
                "replica": settings.replica,
                "owned": len(self.shared.running),
            },
        )

    async def _ready_when_reachable(self, exchange_id: str) -> None:
        while not await self.load_markets(exchange_id, attempts=10):
            pass
        self.ready[exchange_id].set()

    def _jobs(self, exchange_id: str, spec: ExchangeSpec, checkpoints: CheckpointStore) -> dict[str, JobRunner]:
        """Every job of one exchange by its key; each runs once its exchange's markets are loaded."""
        session = self.sessions[exchange_id]
        backoff = self.settings.max_poll_backoff_s
        runners: dict[str, JobRunner] = {}
        for symbol in spec.symbols:
            context = JobContext(session, symbol, checkpoints)
            for dataset, scheduled in scheduled_jobs(context, spec.datasets).items():
                for item in scheduled:

                    async def run(item: Scheduled = item, dataset: str = dataset.value) -> None:
                        await self.ready[exchange_id].wait()
                        if isinstance(item.job, StreamJob):
                            await item.job.run()
                            return
                        await poll_forever(item.job, item.poll_interval_s, dataset, exchange_id, max_backoff_s=backoff)

                    runners[item.key] = run
        return runners

    def _aggregator_jobs(
        self, provider: Provider, spec: AggregatorSpec, checkpoints: CheckpointStore
    ) -> dict[str, JobRunner]:
        settings = self.settings
        client = ProviderClient(
            provider,
            spec,
            settings.aggregator_key(provider),
            checkpoints,
            timeout_s=settings.timeout_ms / 1000,
            policy=RetryPolicy(settings.max_attempts),
            breaker=CircuitBreaker(provider, settings.breaker_threshold, settings.breaker_cooldown_s),
        )
        self.providers.append(client)
        backoff = settings.max_poll_backoff_s
        listing = MarketListingJob(provider, spec, client, self.publish)
        since_ms = int(spec.history_since.timestamp() * 1000)
        histories = [
            PriceHistoryJob(provider, coin, since_ms, client, self.publish, checkpoints) for coin in spec.history
        ]
        candles_since_ms = int(spec.candles_since.timestamp() * 1000)
        candles = [
            CandleJob(provider, coin, candles_since_ms, client, self.publish, checkpoints) for coin in spec.candles
        ]

        def runner(job: PolledJob, dataset: Dataset) -> JobRunner:
            async def run() -> None:
                await poll_forever(job, spec.poll_interval_s, dataset.value, provider, max_backoff_s=backoff)

            return run

        # One client per provider: the listing, the histories and the candles share its limiter and quota.
        runners = {f"aggregator.{provider}.{Dataset.MARKET_SNAPSHOT.value}": runner(listing, Dataset.MARKET_SNAPSHOT)}
        for history in histories:
            runners[f"aggregator.{history.checkpoint}"] = runner(history, Dataset.AGGREGATOR_PRICE)
        for candle_job in candles:
            runners[f"aggregator.{candle_job.checkpoint}"] = runner(candle_job, Dataset.AGGREGATOR_CANDLE)
        return runners

    async def stop(self) -> None:
        for task in self.tasks:  # the lease rounds first: none may run while the jobs stop
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.shared is not None:
            await self.shared.stop()  # jobs stopped, leases given up: the other replicas take over now
        for session in self.sessions.values():
            await session.exchange.close()
        for client in self.providers:
            await client.close()


async def build(settings: ExtractorSettings) -> Service:
    service = Service(NAME, settings)
    extractor = Extractor(service, settings)
    service.app.after_startup(extractor.start)
    service.app.on_shutdown(extractor.stop)
    return service
