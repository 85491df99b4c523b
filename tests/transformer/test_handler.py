"""The transformer's handler against a real nats-server: what it publishes, and when it refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import orjson
import pytest
from cryptoflow_contracts import Dataset, ObjectWritten, Stream
from cryptoflow_runtime import deliver_each, ensure_streams
from cryptoflow_runtime.lake import FileLake, sha256_hex
from cryptoflow_transformer.app import NAME, Derivation, consumer, transform
from cryptoflow_transformer.batches import layer_key
from cryptoflow_transformer.config import TransformerSettings
from cryptoflow_transformer.state_store import KvStateStore
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from .bronze import candle_pages, recorded_candles, snapshot, write_bronze

SETTINGS = TransformerSettings(
    resample_to="5m,1h", indicators=True, anomalies=True, anomaly_window=20, anomaly_return_z=3.0
)


async def handle(
    broker: NatsBroker, lake: FileLake, settings: TransformerSettings, msg: Msg, derivation: Derivation | None
) -> None:
    """The transformer's handler on its consume path, as the service runs it."""

    async def on_object(written: ObjectWritten) -> None:
        await transform(broker, lake, written, derivation)

    await deliver_each(broker, consumer(settings), on_object, [msg], NAME)


@dataclass
class Bus:
    js: JetStreamContext
    broker: NatsBroker
    sub: JetStreamContext.PullSubscription

    async def deliver(self, written: ObjectWritten) -> nats.aio.msg.Msg:
        await self.js.publish(written.subject(), written.to_json())
        (msg,) = await self.sub.fetch(1, timeout=5)
        return msg

    async def messages(self, stream: Stream) -> list[tuple[str, dict[str, object]]]:
        count = (await self.js.stream_info(stream.value)).state.messages
        if not count:
            return []
        sub = await self.js.subscribe(
            f"cryptoflow.{stream.value.lower()}.>", stream=stream.value, ordered_consumer=True
        )
        try:
            msgs = [await sub.next_msg(timeout=5) for _ in range(count)]
        finally:
            await sub.unsubscribe()
        return [(m.subject, orjson.loads(m.data)) for m in msgs]

    async def acked(self) -> int:
        for _ in range(50):
            info = await self.js.consumer_info(Stream.LAKE.value, "transformer-test")
            if info.ack_floor.stream_seq:
                break
            await asyncio.sleep(0.1)
        return int(info.ack_floor.stream_seq or 0)


@pytest.fixture
async def bus(fresh_nats_url: str) -> AsyncIterator[Bus]:
    nc = await nats.connect(fresh_nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    sub = await js.pull_subscribe("cryptoflow.lake.>", durable="transformer-test", stream=Stream.LAKE.value)
    broker = NatsBroker(fresh_nats_url)
    await broker.connect()
    yield Bus(js, broker, sub)
    await broker.stop()
    await nc.close()


async def test_ohlcv_batch_announces_silver_resampled_indicators_and_anomalies(bus: Bus, lake: FileLake) -> None:
    derivation = Derivation(SETTINGS.derived(), KvStateStore(await bus.js.create_key_value(bucket="series_state")))
    frame = recorded_candles("XRPETH-1m.csv").head(600)
    (written,) = await write_bronze(lake, candle_pages(frame, "XRP/ETH", "1m", [600]))
    await handle(bus.broker, lake, SETTINGS, await bus.deliver(written), derivation)

    assert await bus.acked() == 1
    silver = await bus.messages(Stream.SILVER)
    tables = sorted((d["table"], str(d["key"]).split("/")[-1].startswith("resampled-")) for _, d in silver)
    assert tables == [("indicators", False), ("ohlcv", False), ("ohlcv", True)]
    # The table leads the subject, then exchange and market: one table of one market is one subject.
    assert sorted({subject for subject, _ in silver}) == [
        "cryptoflow.silver.indicators.binance.XRP-ETH",
        "cryptoflow.silver.ohlcv.binance.XRP-ETH",
    ]
    anomalies = await bus.messages(Stream.ANOMALIES)
    assert anomalies and all(subject == "cryptoflow.anomalies.binance.XRP-ETH" for subject, _ in anomalies)
    assert {d["kind"] for _, d in anomalies} <= {"return_zscore", "volume_spike"}
    assert await bus.messages(Stream.DLQ) == []


async def test_a_silver_key_holding_other_bytes_is_refused_and_dead_lettered(bus: Bus, lake: FileLake) -> None:
    frame = recorded_candles("XRPETH-1m.csv").head(10)
    (written,) = await write_bronze(lake, candle_pages(frame, "XRP/ETH", "1m", [10]))
    silver_key = layer_key(written.key, "silver")
    await lake.put(silver_key, b"written by an older transformer")
    before = REGISTRY.get_sample_value("cryptoflow_lake_conflicts_total", {"layer": "silver"}) or 0.0

    await handle(bus.broker, lake, SETTINGS, await bus.deliver(written), None)

    assert await lake.get(silver_key) == b"written by an older transformer"
    assert REGISTRY.get_sample_value("cryptoflow_lake_conflicts_total", {"layer": "silver"}) == before + 1
    assert await bus.acked() == 1  # settled at once: retrying cannot help
    assert await bus.messages(Stream.SILVER) == []
    ((subject, letter),) = await bus.messages(Stream.DLQ)
    assert subject == "cryptoflow.dlq.transformer.ohlcv"
    assert letter["error_type"] == "ObjectConflictError"
    assert letter["details"]["key"] == silver_key  # type: ignore[index]
    assert letter["source_event_id"] == written.event_id
    assert written.dataset is Dataset.OHLCV


async def test_implausible_rows_are_quarantined_one_by_one_and_the_page_goes_on(bus: Bus, lake: FileLake) -> None:
    """Issue 15, findings 3c and 4: candles dated 1969 and 2200 and a value of 1e308 passed every
    check (then made warehouse partitions and overflowed sums), or failed the whole page."""
    t0 = 1_717_200_000_000
    good = [[t0 + i * 60_000, 10.0, 11.0, 9.0, 10.5, 1.0] for i in range(3)]
    hostile = [
        [-60_000, 10.0, 11.0, 9.0, 10.5, 1.0],  # 1969
        [7_258_118_400_000, 10.0, 11.0, 9.0, 10.5, 1.0],  # 2200
        [t0 + 3 * 60_000, 10.0, 1e308, 9.0, 10.5, 1.0],
    ]
    page = snapshot(Dataset.OHLCV, [*good, *hostile], first_ts=-60_000, last_ts=7_258_118_400_000, timeframe="1m")
    (written,) = await write_bronze(lake, [page])
    await handle(bus.broker, lake, SETTINGS, await bus.deliver(written), None)

    assert await bus.acked() == 1
    ((_, batch),) = await bus.messages(Stream.SILVER)
    assert batch["rows"] == 3 and batch["min_ts"] == t0 and batch["max_ts"] == t0 + 120_000
    assert batch["check_failures"] == {"ts_out_of_range": 2, "value_out_of_range": 1}
    ((_, letter),) = await bus.messages(Stream.DLQ)
    assert letter["error_type"] == "RowsQuarantined"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "ObjectMissingError"),
        ("outside", "escapes the lake root"),
        ("not_zstd", "not a zstd object"),
    ],
)
async def test_permanent_errors_are_dead_lettered_on_the_first_delivery(
    bus: Bus, lake: FileLake, case: str, reason: str
) -> None:
    """Issue 15, finding 5: a missing key, a path outside the lake, a body that is not zstd were
    retried as if transient (5 deliveries, minutes) before the DLQ."""
    frame = recorded_candles("XRPETH-1m.csv").head(5)
    (written,) = await write_bronze(lake, candle_pages(frame, "XRP/ETH", "1m", [5]))
    if case == "missing":
        changes = {"key": written.key.replace(".ndjson.zst", "-gone.ndjson.zst")}
    elif case == "outside":
        changes = {"key": "bronze/ohlcv/exchange=binance/symbol=XRP-ETH/../../../../../etc/passwd"}
    else:
        key = written.key.replace(".ndjson.zst", "-plain.ndjson.zst")
        await lake.put(key, b"plain text, not zstd")
        changes = {"key": key, "sha256": sha256_hex(b"plain text, not zstd")}
    hostile = ObjectWritten.model_validate({**written.model_dump(), **changes, "event_id": ""})
    await handle(bus.broker, lake, SETTINGS, await bus.deliver(hostile), None)

    assert await bus.acked() == 1
    ((_, letter),) = await bus.messages(Stream.DLQ)
    assert letter["deliveries"] == 1 and reason in str(letter["reason"]), letter
    assert await bus.messages(Stream.SILVER) == []
