"""How every service starts: settings, JSON logs, tracing, broker, streams, health server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from cryptoflow_contracts import Event
from faststream import Context, FastStream
from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage, NatsMessage
from faststream.nats.prometheus import NatsPrometheusMiddleware
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.errors import NoStreamResponseError
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from .consume import BatchHandler, Consumer, EventHandler, deliver_batch, deliver_each, in_progress
from .health import HealthServer
from .jetstream import ensure_consumer, ensure_streams, msg_id_headers, retry_transient
from .lake import Lake, open_lake
from .logs import configure_logging
from .metrics import CONSUMER_ACK_PENDING, CONSUMER_PENDING, CONSUMER_REDELIVERED
from .nats_auth import broker_options, server_urls, subscriber_options
from .settings import ConfigError, LakeSettings, ServiceSettings
from .tracing import NatsTelemetryMiddleware, configure_tracing, with_trace_context

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
E = TypeVar("E", bound=Event)
log = logging.getLogger(__name__)


class Service:
    """A broker, its FastStream app and the health endpoint, wired the same way in every service."""

    def __init__(self, name: str, settings: ServiceSettings) -> None:
        self.name = name
        self.settings = settings
        tracer_provider = configure_tracing(name, settings.otlp_endpoint)
        self.tracer = tracer_provider.get_tracer(f"cryptoflow.{name}")
        self.broker = NatsBroker(
            # Every server of a cluster, comma-separated: the client fails over among them.
            server_urls(settings.nats_url),
            name=f"cryptoflow-{name}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            graceful_timeout=30.0,
            # Its NATS identity (NATS_USER/NATS_PASSWORD), reply inbox and TLS (decision 0036).
            **broker_options(settings),
            # Under "faststream": its per-message "Received"/"Processed" lines stay at WARNING
            # unless LOG_LEVEL=DEBUG asks for them (configure_logging).
            logger=logging.getLogger(f"faststream.cryptoflow.{name}"),
            middlewares=(
                NatsTelemetryMiddleware(tracer_provider=tracer_provider),
                NatsPrometheusMiddleware(registry=REGISTRY, app_name=name, metrics_prefix="cryptoflow_faststream"),
            ),
        )
        self.app = FastStream(self.broker, logger=logging.getLogger(f"cryptoflow.{name}"))
        # Ready when connected to NATS and every dependency a stage adds (`ready_when`) is up.
        self._readiness: list[Callable[[], bool]] = [self.is_connected]
        self.health = HealthServer(name, settings.http_host, settings.http_port, ready=self.is_ready)
        self.app.on_startup(self._start)
        self.app.on_shutdown(self.health.stop)
        # What the handlers need open (lake, database...), also opened by an offline run.
        self._opens: list[Callable[[], Awaitable[None]]] = []
        self._closes: list[Callable[[], Awaitable[None]]] = []
        self.handlers: dict[str, RegisteredHandler] = {}
        self._lake: LakeHandle | None = None
        # Every durable consumer's (stream, subject, config), created at start before subscribing.
        self._durables: list[tuple[str, str, ConsumerConfig]] = []

    @property
    def dead_letter_lake(self) -> Lake | None:
        """Where the full input of a DeadLetter too large for NATS goes: the service's lake."""
        return self._lake.lake if self._lake is not None and self._lake.is_open else None

    def resource(
        self,
        open_: Callable[[], Awaitable[None]],
        close: Callable[[], Awaitable[None]] | None = None,
        *,
        close_after_broker: bool = False,
    ) -> None:
        """Something the handlers use: opened after the broker connects, closed at shutdown
        (after the broker stopped and in-flight messages settled, when `close_after_broker`)."""
        self._opens.append(open_)
        self.app.on_startup(open_)
        if close is not None:
            self._closes.append(close)
            (self.app.after_shutdown if close_after_broker else self.app.on_shutdown)(close)

    async def open_offline(self, durable: str | None = None) -> OfflineHandler:
        """Connect and open what the handlers use, without starting any subscriber: the stage's
        handler for messages fetched elsewhere (replay), settled as the live consumer settles."""
        registered = self.handlers[durable] if durable else next(iter(self.handlers.values()))
        await self.broker.connect()
        await ensure_streams(self.jetstream)
        for open_ in self._opens:
            await open_()
        return OfflineHandler(self, registered)

    async def close_offline(self) -> None:
        for close in reversed(self._closes):
            await close()
        await self.broker.stop()

    def consume(self, consumer: Consumer[E]) -> Callable[[EventHandler[E]], EventHandler[E]]:
        """Register a typed handler, `async def on_x(event: X) -> None`, on the consume path."""

        def register(handler: EventHandler[E]) -> EventHandler[E]:
            async def on_message(message: Annotated[NatsMessage, Context("message")]) -> None:
                await deliver_each(
                    self.broker, consumer, handler, [message.raw_message], self.name, self.dead_letter_lake
                )

            self._subscriber(consumer, batch=False)(on_message)
            self.watch_consumer(consumer.input_stream.value, consumer.durable)
            self.handlers[consumer.durable] = RegisteredHandler(consumer, handler, None)
            return handler

        return register

    def consume_batches(self, consumer: Consumer[E]) -> Callable[[BatchHandler[E]], BatchHandler[E]]:
        """Register a typed batch handler, `async def on_x(events: list[X]) -> Sequence[Outcome]`."""

        def register(handler: BatchHandler[E]) -> BatchHandler[E]:
            async def on_messages(message: Annotated[NatsBatchMessage, Context("message")]) -> None:
                await deliver_batch(
                    self.broker, consumer, handler, message.raw_message, self.name, self.dead_letter_lake
                )

            self._subscriber(consumer, batch=True)(on_messages)
            self.watch_consumer(consumer.input_stream.value, consumer.durable)
            self.handlers[consumer.durable] = RegisteredHandler(consumer, None, handler)
            return handler

        return register

    def _subscriber(self, consumer: Consumer[Any], *, batch: bool) -> Callable[[Callable[..., Awaitable[None]]], Any]:
        return self.durable_subscriber(
            consumer.filter_subject,
            consumer.input_stream.value,
            consumer.durable,
            ack_wait_s=consumer.ack_wait_s,
            max_deliver=consumer.max_deliver,
            title=consumer.title,
            description=consumer.description,
            batch_size=consumer.batch_size,
            batch=batch,
            fetch_timeout_s=consumer.fetch_timeout_s,
            max_ack_pending=consumer.max_ack_pending,
        )

    def durable_subscriber(
        self,
        subject: str,
        stream: str,
        durable: str,
        *,
        ack_wait_s: float,
        max_deliver: int,
        title: str,
        description: str,
        batch_size: int = 1,
        batch: bool = False,
        fetch_timeout_s: float = 1.0,
        max_ack_pending: int | None = None,
    ) -> Callable[[Callable[..., Awaitable[None]]], Any]:
        """A durable pull subscriber settled by the handler itself (decision 0002).

        The server's `max_deliver` is one above ours, so the last delivery still reaches the
        handler, which dead-letters it instead of the server dropping it silently.
        """
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=JsAckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver + 1,
        )
        if max_ack_pending is not None:
            config.max_ack_pending = max_ack_pending
        self._durables.append((stream, subject, config))
        subscriber: Callable[[Callable[..., Awaitable[None]]], Any] = self.broker.subscriber(
            subject,
            stream=JStream(name=stream, declare=False),
            durable=durable,
            pull_sub=PullSub(batch_size=batch_size, timeout=fetch_timeout_s, batch=batch),
            ack_policy=AckPolicy.MANUAL,
            config=config,
            title=title,
            description=description,
            # Pulled messages arrive on this identity's own inbox (FastStream defaults to _INBOX.).
            **subscriber_options(self.settings),
        )
        return subscriber

    def watch_consumer(self, stream: str, durable: str, interval_s: float = 5.0) -> None:
        """Export the durable consumer's lag (pending, unacked, redelivered) as gauges."""
        tasks: list[asyncio.Task[None]] = []

        async def start() -> None:
            tasks.append(asyncio.create_task(self._report_consumer(stream, durable, interval_s)))

        async def stop() -> None:
            for task in tasks:
                task.cancel()

        self.app.after_startup(start)
        self.app.on_shutdown(stop)

    async def _report_consumer(self, stream: str, durable: str, interval_s: float) -> None:
        labels = (self.name, stream, durable)
        while True:
            try:
                info = await self.jetstream.consumer_info(stream, durable)
                CONSUMER_PENDING.labels(*labels).set(info.num_pending or 0)
                CONSUMER_ACK_PENDING.labels(*labels).set(info.num_ack_pending or 0)
                CONSUMER_REDELIVERED.labels(*labels).set(info.num_redelivered or 0)
            except Exception as exc:  # a lag report must never take the service down
                log.debug("consumer info unavailable", extra={"error": repr(exc)})
            await asyncio.sleep(interval_s)

    def use_lake(self, settings: LakeSettings) -> LakeHandle:
        """A lake opened at start and closed at shutdown."""
        handle = LakeHandle(settings)
        self.resource(handle.open, handle.close)
        self._lake = handle
        return handle

    async def _start(self) -> None:
        await self.broker.connect()
        js = self.jetstream
        await retry_transient("ensure streams", lambda: ensure_streams(js))
        # Created here, with retries, so that subscribing afterwards only looks them up: a
        # subscription failing at start would take the whole service down.
        for stream, subject, config in self._durables:
            create = functools.partial(ensure_consumer, js, stream, subject, config)
            await retry_transient(f"ensure consumer {config.durable_name}", create)
        await self.health.start()

    @property
    def jetstream(self) -> JetStreamContext:
        stream: JetStreamContext | None = self.broker.config.connection_state.stream
        assert stream is not None, "broker not connected"
        return stream

    async def publish_unacked(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        """Publish without waiting for JetStream's ack (the stream still stores the message): for
        LIVE, where an update that waited a round trip would hold the next one back. Its own
        PRODUCER span, whose context goes into the headers like every publish's; none of the
        middleware's per-message work (decision 0045)."""
        with self.tracer.start_as_current_span(
            f"{subject} publish",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        ):
            await self.broker.config.connection_state.connection.publish(
                subject, body, headers=with_trace_context(headers)
            )

    def ready_when(self, check: Callable[[], bool]) -> None:
        """Add a dependency to readiness (`/readyz` answers 503 while it is down)."""
        self._readiness.append(check)

    def is_ready(self) -> bool:
        return all(check() for check in self._readiness)

    def is_connected(self) -> bool:
        try:
            return bool(self.broker.config.connection_state.connection.is_connected)
        except Exception:
            return False


@dataclass(frozen=True)
class RegisteredHandler:
    """A consumer and its typed handler (one of the two kinds)."""

    consumer: Consumer[Any]
    each: EventHandler[Any] | None
    batch: BatchHandler[Any] | None


class OfflineHandler:
    """A stage's registered handler on a connected service, fed with messages from elsewhere."""

    def __init__(self, service: Service, registered: RegisteredHandler) -> None:
        self.service = service
        self.consumer = registered.consumer
        self._registered = registered

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Decode, handle and settle `msgs` exactly as the live consumer would."""
        broker, name = self.service.broker, self.service.name
        spill = self.service.dead_letter_lake
        if self._registered.batch is not None:
            await deliver_batch(broker, self.consumer, self._registered.batch, msgs, name, spill)
        else:
            assert self._registered.each is not None
            await deliver_each(broker, self.consumer, self._registered.each, msgs, name, spill)

    async def close(self) -> None:
        await self.service.close_offline()


async def publish(broker: NatsBroker, event: Event) -> None:
    """Publish an event on its own stream and subject, with `Nats-Msg-Id` = its event_id.

    A missing stream is a dependency that is down, not bad input: the publish is retried until
    the stream is back (recreated here where this identity may create streams, else by the
    admin), while the message being handled is kept from redelivery. Nothing is dead-lettered
    for it, and nothing goes on until it is published.
    """
    data = event.to_json()
    headers = msg_id_headers(event.event_id)
    delay = 0.2
    recreated = False
    while True:
        try:
            await broker.publish(data, subject=event.subject(), headers=headers, stream=event.STREAM.value)
            return
        except NoStreamResponseError:
            log.warning("stream missing; holding the message until it is back", extra={"stream": event.STREAM.value})
            if not recreated:
                # Once: a locked identity is refused (after the request timeout) every time.
                recreated = True
                with contextlib.suppress(Exception):
                    stream = broker.config.connection_state.stream
                    if stream is not None:
                        await ensure_streams(stream)
            await in_progress()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class LakeHandle:
    def __init__(self, settings: LakeSettings) -> None:
        self.settings = settings
        self._lake: Lake | None = None

    @property
    def lake(self) -> Lake:
        assert self._lake is not None, "lake not open yet"
        return self._lake

    @property
    def is_open(self) -> bool:
        return self._lake is not None

    async def open(self) -> None:
        settings = self.settings
        self._lake = await open_lake(settings.lake_url, settings.s3_endpoint_url, settings.s3_max_attempts)

    async def close(self) -> None:
        if self._lake is not None:
            await self._lake.close()


# Modules imported lazily (a stream job's ccxt pro exchange on its first connection, the first
# message's parsers) are as permanent as start-up's: the heap is frozen once more after this long.
SETTLED_AFTER_S = 60.0


async def freeze_startup_heap() -> None:
    """Move every object alive after start-up out of the garbage collector's sight (`gc.freeze`),
    and once more when the service has settled (SETTLED_AFTER_S).

    They live as long as the process, yet each full collection walked them all: in the extractor
    (ccxt's exchange modules, ~300k objects) a full collection stopped the event loop for
    100-300 ms every few seconds at 1k trades/s, which was the tail of LIVE's latency (decision
    0045). Collections now walk only what was made since. What this gives up: cycles among the
    frozen objects are never collected (start-up's are permanent anyway; the few of the first
    minute that are not stay allocated, once)."""
    _freeze("start-up")
    asyncio.get_running_loop().call_later(SETTLED_AFTER_S, _freeze, "settled")


def _freeze(when: str) -> None:
    gc.collect()
    gc.freeze()
    log.info("heap frozen", extra={"when": when, "objects": gc.get_freeze_count()})


def run_service(
    name: str,
    load: Callable[[], SettingsT],
    build: Callable[[SettingsT], Awaitable[Service]],
) -> None:
    """Console entry point body: a bad setting exits 2 with a message naming it."""
    try:
        settings = load()
    except ConfigError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(name, settings.log_level)

    async def main() -> None:
        service = await build(settings)
        # Last of the start-up hooks: what they loaded (modules, ccxt's markets, clients) is there
        # for the process's life.
        service.app.after_startup(freeze_startup_heap)
        await service.app.run()

    try:
        asyncio.run(main())
    except ConfigError as error:
        log.error("configuration error", extra={"error": str(error)})
        print(f"{name}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass
