"""Where the extractor's events go: one function per event kind, over any JetStream sender."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cryptoflow_contracts import DeadLetter, Event, LiveUpdate
from cryptoflow_runtime import msg_id_headers
from cryptoflow_runtime.metrics import DEAD_LETTERS

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
