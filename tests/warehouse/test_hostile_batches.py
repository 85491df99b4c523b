"""Issue 15, findings 4 and 5 at the loader: a BatchReady the transformer could not have produced
is dead-lettered on its first delivery with its reason, and the loader keeps loading.

Before the fix a future schema_version was accepted, a quarantine file was loaded as silver,
and a missing object or a body that is not Parquet was retried up to max_deliver times."""

from __future__ import annotations

import orjson
import polars as pl
from cryptoflow_contracts import BatchReady, Stream
from cryptoflow_runtime.lake import sha256_hex

from .support import LoaderStack, parquet, put_batch, sample


async def publish_raw(stack: LoaderStack, batch: BatchReady, body: bytes, msg_id: str) -> None:
    await stack.publish(batch.subject(), body, msg_id, Stream.SILVER.value)


def letter_for(letters: list[dict[str, object]], event_id: str) -> dict[str, object]:
    (letter,) = [d for d in letters if d["source_event_id"] == event_id or event_id in str(d["payload"])]
    return letter


async def test_batches_no_transformer_produced_are_dead_lettered_at_once(loader_stack: LoaderStack) -> None:
    stack = loader_stack
    rows = sample("ohlcv", 5, symbol="HOST/USDT")
    good = await put_batch(stack.lake, "ohlcv", rows, "hostile-good")

    # A future schema version, published by hand (our own model would refuse to build it).
    future = {**orjson.loads(good.to_json()), "schema_version": 2, "event_id": "BatchReady-future"}
    await publish_raw(stack, good, orjson.dumps(future), "future")

    # A quarantine file, announced with its real checksum.
    quarantine_key = good.key.replace("silver/", "quarantine/")
    quarantine_rows = rows.with_columns(pl.lit("negative_volume").alias("reason"))
    quarantine_bytes = parquet(quarantine_rows, "ohlcv")
    await stack.lake.put(quarantine_key, quarantine_bytes)
    quarantined = good.model_copy(
        update={"key": quarantine_key, "sha256": sha256_hex(quarantine_bytes), "event_id": ""}
    )
    quarantined = BatchReady.model_validate(quarantined.model_dump())
    await stack.publish_batch(quarantined)

    # A key with no object, and a silver key holding bytes that are not Parquet.
    missing = BatchReady.model_validate(
        {**good.model_dump(), "key": good.key.replace("hostile-good", "gone"), "event_id": ""}
    )
    await stack.publish_batch(missing)
    garbage_key = good.key.replace("hostile-good", "garbage")
    await stack.lake.put(garbage_key, b"not parquet at all")
    garbage = BatchReady.model_validate(
        {**good.model_dump(), "key": garbage_key, "sha256": sha256_hex(b"not parquet at all"), "event_id": ""}
    )
    await stack.publish_batch(garbage)

    # Times no market has: announced by a batch whose rows were never checked.
    ancient_key = good.key.replace("hostile-good", "ancient")
    await stack.lake.put(ancient_key, await stack.lake.get(good.key))
    ancient = BatchReady.model_validate(
        {**good.model_dump(), "key": ancient_key, "min_ts": -86_400_000, "event_id": ""}
    )
    await stack.publish_batch(ancient)

    await stack.publish_batch(good)
    await stack.settled()

    letters = [d for d in await stack.dead_letters() if d["stage"] == "warehouse-loader"]
    expected = {
        "BatchReady-future": "schema_version 2",
        quarantined.event_id: "not a silver object",
        missing.event_id: "ObjectMissingError",
        garbage.event_id: "not a Parquet file",
        ancient.event_id: "outside any plausible range",
    }
    for event_id, reason in expected.items():
        letter = letter_for(letters, event_id)
        assert reason in str(letter["reason"]), (event_id, letter["reason"])
        assert letter["deliveries"] == 1, (event_id, letter)  # permanent: never retried
    assert len(letters) == len(expected)
    loaded = await stack.fetch("SELECT count(*) AS n FROM ohlcv WHERE symbol = 'HOST/USDT'")
    assert loaded[0]["n"] == 5  # the good batch, and only it
