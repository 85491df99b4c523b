"""The lake-writer with snapshots near NATS's max_payload: each fetch fits the connection's budget.

A fetch's messages are sent to the client at once. At 500 snapshots of ~240 KiB (1000 candles with
their native body), nats-server cut the lake-writer's connection as a slow consumer (its 64 MiB
max_pending), and every fetched message waited out ack_wait to come back redelivered, out of order.
"""

from __future__ import annotations

from datetime import UTC, datetime

import nats
from cryptoflow_contracts import Dataset, RawSnapshot, Stream, raw_subject
from cryptoflow_runtime import ensure_streams
from nats.js.errors import NotFoundError

from .harness import Pipeline

T0 = int(datetime(2024, 6, 1, tzinfo=UTC).timestamp() * 1000)
SNAPSHOTS = 100  # 95 MB: well over the 64 MiB (67.1 MB) a client may fall behind
CANDLES_PER_SNAPSHOT = 14_000  # 0.95 MB of JSON: near the 1 MiB max_payload


def big_snapshot(index: int) -> RawSnapshot:
    first = T0 + index * CANDLES_PER_SNAPSHOT * 60_000
    candles = [
        [first + i * 60_000, 100.123456 + i % 7, 101.123456, 99.123456, 100.523456, 3.123456 + i % 5]
        for i in range(CANDLES_PER_SNAPSHOT)
    ]
    return RawSnapshot(
        dataset=Dataset.OHLCV,
        exchange="binance",
        symbol="BTC/USDT" if index % 2 else "ETH/USDT",
        timeframe="1m",
        fetched_at=datetime.fromtimestamp(first / 1000 + CANDLES_PER_SNAPSHOT * 60 + 61, UTC),
        payload=candles,
        first_ts=candles[0][0],
        last_ts=candles[-1][0],
    )


async def test_snapshots_near_max_payload_are_written_without_a_slow_consumer_or_a_redelivery(
    file_pipeline: Pipeline,
) -> None:
    pipe = file_pipeline
    nc = await nats.connect(pipe.nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        sizes = []
        for index in range(SNAPSHOTS):
            snapshot = big_snapshot(index)
            body = snapshot.to_json()
            sizes.append(len(body))
            await js.publish(
                raw_subject(snapshot.dataset, snapshot.exchange, snapshot.symbol),
                body,
                headers={"Nats-Msg-Id": snapshot.event_id},
            )
        assert min(sizes) > 900_000, "the snapshots must be near max_payload for this test to mean anything"
        # Every snapshot is waiting before the lake-writer starts: its first fetches are full ones.
        lake_writer = pipe.start("lake-writer", env={"LAKE_WRITER_BATCH_TIMEOUT_S": "1"})

        async def all_written() -> bool:
            try:
                info = await js.consumer_info(Stream.RAW.value, "lake-writer")
            except NotFoundError:  # not created yet
                return False
            return info.ack_floor.stream_seq >= SNAPSHOTS and not info.num_ack_pending

        await pipe.wait_for("every snapshot written", all_written, timeout=120)
        info = await js.consumer_info(Stream.RAW.value, "lake-writer")
        assert info.num_redelivered == 0, f"{info.num_redelivered} snapshots redelivered\n{lake_writer.log()[-4000:]}"
        announced = (await js.stream_info(Stream.LAKE.value)).state.messages
        assert announced >= 1
        log = lake_writer.log()
        assert "Connection broken" not in log and "slow consumer" not in log.lower(), log[-4000:]
    finally:
        await nc.close()
