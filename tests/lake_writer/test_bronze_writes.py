"""The lake-writer's write step against real NATS and real lakes: ack only after durable, conflicts reported."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats
import orjson
import pytest
import zstandard
from contract.s3_faults import FaultPlan, faulty_s3_proxy
from cryptoflow_contracts import Dataset, RawSnapshot, Stream, raw_subject
from cryptoflow_lake_writer.app import NAME, consumer
from cryptoflow_lake_writer.app import write_batch as write_snapshots
from cryptoflow_lake_writer.config import LakeWriterSettings
from cryptoflow_lake_writer.objects import build_objects
from cryptoflow_runtime import Outcome, deliver_batch, ensure_streams
from cryptoflow_runtime.lake import FileLake, Lake, S3Lake, open_lake
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from prometheus_client import REGISTRY


async def write_batch(broker: NatsBroker, lake: Lake, settings: LakeWriterSettings, msgs: list[Msg]) -> None:
    """The lake-writer's batch handler on its consume path, as the service runs it."""

    async def on_raw(items: list[RawSnapshot]) -> list[Outcome]:
        return await write_snapshots(broker, lake, settings, items)

    await deliver_batch(broker, consumer(settings), on_raw, msgs, NAME, lake)


T0 = int(datetime(2024, 6, 1, tzinfo=UTC).timestamp() * 1000)
SETTINGS = LakeWriterSettings(max_deliver=5)


def snapshots(n: int = 3) -> list[RawSnapshot]:
    out = []
    for i in range(n):
        ts = T0 + i * 60_000
        out.append(
            RawSnapshot(
                dataset=Dataset.OHLCV,
                exchange="binance",
                symbol="BTC/USDT",
                timeframe="1m",
                fetched_at=datetime.fromtimestamp(ts / 1000 + 61, UTC),
                payload=[[ts, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 3.0]],
                first_ts=ts,
                last_ts=ts,
            )
        )
    return out


@dataclass
class Raw:
    """RAW on a fresh nats-server, a pull consumer on it, and a FastStream broker to publish with."""

    js: JetStreamContext
    broker: NatsBroker
    sub: JetStreamContext.PullSubscription

    async def publish(self, items: list[RawSnapshot]) -> None:
        for s in items:
            await self.js.publish(
                raw_subject(s.dataset, s.exchange, s.symbol), s.to_json(), headers={"Nats-Msg-Id": s.event_id}
            )

    async def fetch(self, n: int) -> list[Msg]:
        return await self.sub.fetch(n, timeout=5)

    async def acked(self, expect: int = 0) -> int:
        """The consumer's ack floor, once it reaches `expect` (acks are sent without waiting) or after 5 s."""
        for _ in range(50):
            info = await self.js.consumer_info(Stream.RAW.value, "lake-writer-test")
            floor = int(info.ack_floor.stream_seq or 0)
            if floor >= expect:
                return floor
            await asyncio.sleep(0.1)
        return floor

    async def messages(self, stream: Stream) -> list[dict[str, object]]:
        count = (await self.js.stream_info(stream.value)).state.messages
        if not count:
            return []
        sub = await self.js.subscribe(
            f"cryptoflow.{stream.value.lower()}.>", stream=stream.value, ordered_consumer=True
        )
        try:
            return [orjson.loads((await sub.next_msg(timeout=5)).data) for _ in range(count)]
        finally:
            await sub.unsubscribe()


@pytest.fixture
async def raw(fresh_nats_url: str) -> AsyncIterator[Raw]:
    nc = await nats.connect(fresh_nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    sub = await js.pull_subscribe(
        "cryptoflow.raw.>",
        durable="lake-writer-test",
        stream=Stream.RAW.value,
        config=ConsumerConfig(ack_wait=30, max_deliver=SETTINGS.max_deliver + 1),
    )
    broker = NatsBroker(fresh_nats_url)
    await broker.connect()
    yield Raw(js, broker, sub)
    await broker.stop()
    await nc.close()


async def test_nothing_is_acked_until_the_object_is_durable(
    raw: Raw, s3_credentials: None, s3_endpoint_url: str, s3_bucket: str
) -> None:
    items = snapshots()
    await raw.publish(items)
    plan = FaultPlan(count=10_000)  # S3 answers SlowDown to every bronze PUT
    direct = await open_lake(f"s3://{s3_bucket}", s3_endpoint_url)
    async with faulty_s3_proxy(s3_endpoint_url, plan) as proxy:
        lake = S3Lake(f"s3://{s3_bucket}", proxy, max_attempts=1)
        try:
            await write_batch(raw.broker, lake, SETTINGS, await raw.fetch(3))
            assert plan.injected == 2  # the first try and one retry, then the PUT gave up
            assert await raw.acked() == 0
            assert await direct.list("bronze/") == []
            assert await raw.messages(Stream.LAKE) == []
            plan.count = 0  # S3 recovers; the nak'd messages come back after their delay
            await asyncio.sleep(1.2)
            await write_batch(raw.broker, lake, SETTINGS, await raw.fetch(3))
        finally:
            await lake.close()
    (obj,) = build_objects(items)
    assert await direct.get(obj.key) == obj.data
    assert await raw.acked(expect=3) == 3
    (announced,) = await raw.messages(Stream.LAKE)
    assert announced["key"] == obj.key and announced["records"] == 3
    await direct.close()


def conflicts() -> float:
    return REGISTRY.get_sample_value("cryptoflow_lake_conflicts_total", {"layer": "bronze"}) or 0.0


async def test_a_conflicting_object_is_refused_reported_and_its_messages_dead_lettered(
    raw: Raw, tmp_path: Path
) -> None:
    items = snapshots()
    (obj,) = build_objects(items)
    lake: Lake = FileLake(f"file://{tmp_path / 'lake'}")
    await lake.put(obj.key, b"someone else's bytes")
    before = conflicts()
    await raw.publish(items)
    await write_batch(raw.broker, lake, SETTINGS, await raw.fetch(3))

    assert await lake.get(obj.key) == b"someone else's bytes"
    assert conflicts() == before + 1
    assert await raw.acked(expect=3) == 3  # settled: no retry can store them
    assert await raw.messages(Stream.LAKE) == []
    letters = await raw.messages(Stream.DLQ)
    # One letter per snapshot, each naming the conflict (keys, checksums) and keeping the snapshot.
    assert all(d["error_type"] == "ObjectConflictError" for d in letters)
    assert all(d["stage"] == "lake-writer" and obj.key in str(d["reason"]) for d in letters)
    assert all(d["details"]["key"] == obj.key for d in letters)  # type: ignore[index]
    assert sorted(d["source_event_id"] for d in letters) == sorted(s.event_id for s in items)
    assert all(d["payload"] for d in letters)  # the snapshots themselves are kept in the letters


async def test_the_same_content_compressed_otherwise_is_announced_not_refused(raw: Raw, tmp_path: Path) -> None:
    items = snapshots()
    (obj,) = build_objects(items, zstd_level=3)
    other = zstandard.ZstdCompressor(level=19).compress(zstandard.ZstdDecompressor().decompress(obj.data))
    assert other != obj.data
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    await lake.put(obj.key, other)
    await raw.publish(items)
    await write_batch(raw.broker, lake, SETTINGS, await raw.fetch(3))
    assert await raw.acked(expect=3) == 3
    (announced,) = await raw.messages(Stream.LAKE)
    assert announced["bytes"] == len(other)
    assert await raw.messages(Stream.DLQ) == []


def test_a_partition_over_max_object_bytes_is_split_deterministically() -> None:
    items = snapshots(10)
    line = len(items[0].to_json()) + 1
    objects = build_objects(items, max_object_bytes=3 * line + 5)
    assert [len(o.event_ids) for o in objects] == [3, 3, 3, 1]
    assert all(o.ndjson_bytes <= 3 * line + 5 for o in objects)
    assert [e for o in objects for e in o.event_ids] == [s.event_id for s in items]
    assert len({o.key for o in objects}) == 4
    shuffled = list(reversed(items))
    assert [(o.key, o.data) for o in build_objects(shuffled, max_object_bytes=3 * line + 5)] == [
        (o.key, o.data) for o in objects
    ]
    (whole,) = build_objects(items)  # default cap: one object per partition
    assert len(whole.event_ids) == 10


async def test_one_bad_snapshot_in_a_fetch_fails_alone_and_at_once(raw: Raw, tmp_path: Path) -> None:
    """Issue 15, finding 3a: a symbol that would escape the lake and a timestamp far out of range
    used to fail the whole fetched batch, and the messages vanished once redeliveries ran out."""
    good = snapshots(2)
    far = good[0].model_copy(update={"first_ts": 10**16, "last_ts": 10**16, "payload": [[10**16, 1, 1, 1, 1, 1]]})
    far = RawSnapshot.model_validate({**far.model_dump(), "event_id": ""})
    escaping = orjson.loads(good[1].to_json()) | {"symbol": "../../etc/passwd", "event_id": "RawSnapshot-escape"}
    await raw.publish([good[0], far])
    await raw.js.publish("cryptoflow.raw.ohlcv.binance.X-Y", orjson.dumps(escaping))
    await raw.publish([good[1]])
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    await write_batch(raw.broker, lake, SETTINGS, await raw.fetch(4))

    assert await raw.acked(expect=4) == 4  # every message settled on its first delivery
    (letter,) = await raw.messages(Stream.DLQ)
    assert letter["source_subject"] == "cryptoflow.raw.ohlcv.binance.X-Y" and letter["deliveries"] == 1
    assert "not a unified symbol" in str(letter["reason"])
    announced = await raw.messages(Stream.LAKE)
    stored = {event_id for obj in announced for event_id in obj["source_event_ids"]}  # type: ignore[attr-defined]
    # The far-future page is kept as sent (partitioned by its fetch day); the transformer
    # quarantines its row. The good ones are stored as always.
    assert stored == {good[0].event_id, good[1].event_id, far.event_id}
    assert not any(".." in key for key in await lake.list(""))


async def test_a_dead_letter_too_large_for_nats_points_at_the_full_input_in_the_lake(raw: Raw, tmp_path: Path) -> None:
    """Issue 15, finding 3b: a DeadLetter larger than the server's max_payload could not be
    published, so the message disappeared."""
    # Not UTF-8: the letter carries it as base64, a third larger, so the letter is over 1 MiB.
    body = bytes(range(256)) * 3_500
    await raw.js.publish("cryptoflow.raw.ohlcv.binance.BTC-USDT", body, headers={"Nats-Msg-Id": "huge"})
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    await write_batch(raw.broker, lake, SETTINGS, await raw.fetch(1))

    assert await raw.acked(expect=1) == 1
    (letter,) = await raw.messages(Stream.DLQ)
    details = letter["details"]
    assert isinstance(details, dict) and details["payload_truncated"] is True
    assert details["payload_bytes"] == len(body)
    assert len(str(letter["payload"])) <= 16 * 1024
    assert await lake.get(str(details["payload_key"])) == body  # nothing of the input is lost


async def test_a_deleted_output_stream_is_recreated_and_nothing_is_dead_lettered(raw: Raw, tmp_path: Path) -> None:
    """Issue 15, finding 1: after the LAKE stream was deleted, the lake-writer dead-lettered genuine
    snapshots (NoStreamResponseError) and nothing recreated the stream."""
    items = snapshots()
    await raw.publish(items)
    await raw.js.delete_stream(Stream.LAKE.value)
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    await write_batch(raw.broker, lake, SETTINGS, await raw.fetch(3))

    assert await raw.acked(expect=3) == 3
    (announced,) = await raw.messages(Stream.LAKE)  # the stream is back, with the object in it
    assert sorted(announced["source_event_ids"]) == sorted(s.event_id for s in items)  # type: ignore[arg-type]
    assert await raw.messages(Stream.DLQ) == []
