"""Where the extractor's events go: one function per event kind, over any JetStream sender."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import nats
from cryptoflow_contracts import DeadLetter, Event, LiveUpdate
from cryptoflow_runtime import ServiceSettings, ensure_streams, msg_id_headers
from cryptoflow_runtime.metrics import DEAD_LETTERS
from cryptoflow_runtime.nats_auth import connect_options
from nats.aio.client import Client
from nats.js import JetStreamContext

from .session import Publisher

# (subject, body, headers, stream) → published and acknowledged by JetStream.
Send = Callable[[str, bytes, dict[str, str], str], Awaitable[None]]
# (subject, body, headers) → handed to the connection; the stream stores it, nobody waits for its ack.
SendUnacked = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


def jetstream_publisher(send: Send, send_unacked: SendUnacked | None = None) -> Publisher:
    async def emit(event: Event) -> None:
        # Each event knows its stream and subject (contracts); the id dedupes a retried publish.
        await send(event.subject(), event.to_json(), msg_id_headers(event.event_id), event.STREAM.value)

    async def live(update: LiveUpdate) -> None:
        # LIVE is the low-latency copy of what RAW carries durably (decision 0045): a stream job
        # that waited for each update's ack would hold the next update back by a round trip.
        if send_unacked is None:
            await emit(update)
        else:
            await send_unacked(update.subject(), update.to_json(), msg_id_headers(update.event_id))

    async def dead_letter(letter: DeadLetter) -> None:
        await emit(letter)
        DEAD_LETTERS.labels(
            letter.stage.value, letter.dataset.value if letter.dataset else "unknown", letter.error_type
        ).inc()

    return Publisher(snapshot=emit, dead_letter=dead_letter, gap=emit, drift=emit, live=live)


async def command_connection(settings: ServiceSettings) -> tuple[Client, JetStreamContext, Publisher]:
    """A command's own NATS connection (the settings' identity; backfill, ingest), the streams in
    place, and a publisher over it. The caller closes the connection."""
    nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1, **connect_options(settings))
    js = nc.jetstream()

    async def send(subject: str, body: bytes, headers: dict[str, str], stream: str) -> None:
        await js.publish(subject, body, headers=headers, stream=stream)

    try:
        await ensure_streams(js)
    except BaseException:
        await nc.close()
        raise
    return nc, js, jetstream_publisher(send)
