"""Where the extractor's events go: one function per event kind, over any JetStream sender."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cryptoflow_contracts import DeadLetter, Event
from cryptoflow_runtime import msg_id_headers
from cryptoflow_runtime.metrics import DEAD_LETTERS

from .session import Publisher

# (subject, body, headers, stream) → published and acknowledged by JetStream.
Send = Callable[[str, bytes, dict[str, str], str], Awaitable[None]]


def jetstream_publisher(send: Send) -> Publisher:
    async def emit(event: Event) -> None:
        # Each event knows its stream and subject (contracts); the id dedupes a retried publish.
        await send(event.subject(), event.to_json(), msg_id_headers(event.event_id), event.STREAM.value)

    async def dead_letter(letter: DeadLetter) -> None:
        await emit(letter)
        DEAD_LETTERS.labels(
            letter.stage.value, letter.dataset.value if letter.dataset else "unknown", letter.error_type
        ).inc()

    return Publisher(snapshot=emit, dead_letter=dead_letter, gap=emit, drift=emit, live=emit)
