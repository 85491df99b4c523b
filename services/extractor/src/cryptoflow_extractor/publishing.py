"""Where the extractor's events go: one function per event kind, over any JetStream sender."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cryptoflow_contracts import (
    DeadLetter,
    Event,
    KnownGap,
    RawSnapshot,
    SchemaDrift,
    Stream,
    dlq_subject,
    drift_subject,
    gaps_subject,
    raw_subject,
)
from cryptoflow_runtime import msg_id_headers
from cryptoflow_runtime.metrics import DEAD_LETTERS

from .session import Publisher

# (subject, body, headers, stream) → published and acknowledged by JetStream.
Send = Callable[[str, bytes, dict[str, str], str], Awaitable[None]]


def jetstream_publisher(send: Send) -> Publisher:
    async def emit(event: Event, subject: str, stream: Stream) -> None:
        await send(subject, event.to_json(), msg_id_headers(event.event_id), stream.value)

    async def snapshot(event: RawSnapshot) -> None:
        await emit(event, raw_subject(event.dataset, event.exchange, event.symbol), Stream.RAW)

    async def dead_letter(letter: DeadLetter) -> None:
        await emit(letter, dlq_subject(letter.stage, letter.dataset), Stream.DLQ)
        DEAD_LETTERS.labels(
            letter.stage.value, letter.dataset.value if letter.dataset else "unknown", letter.error_type
        ).inc()

    async def gap(event: KnownGap) -> None:
        await emit(event, gaps_subject(event.exchange, event.symbol), Stream.GAPS)

    async def drift(event: SchemaDrift) -> None:
        await emit(event, drift_subject(event.exchange, event.dataset), Stream.DRIFT)

    return Publisher(snapshot=snapshot, dead_letter=dead_letter, gap=gap, drift=drift)
