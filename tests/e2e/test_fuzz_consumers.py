"""Issue 15, hostile input: every consumed event type fuzzed on its real subject against running
services (real nats-server, PostgreSQL, file lake; the services as OS processes).

For each type, FUZZ_MESSAGES (1,000 in CI, fixed seed; `make fuzz` runs more) generated messages
are published, each on a subject of its own so its DeadLetter can be found. Then: every message
is accounted for — its side effect, or exactly one DeadLetter with a reason (DLQ count + stored
count = sent); no service crashed or stalls (consumers drained); no lake object outside its
layer and partition; nothing implausible in the warehouse.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats
import orjson
import polars as pl
import pytest
from cryptoflow_contracts import (
    PLAUSIBLE_MAX_TS_MS,
    PLAUSIBLE_MIN_TS_MS,
    BatchReady,
    DeadLetter,
    Event,
    KnownGap,
    ObjectWritten,
    RawSnapshot,
    RunReport,
)
from cryptoflow_runtime.lake import FileLake, checked_key, open_lake
from pydantic import ValidationError
from transformer.bronze import candle_pages, recorded_candles, write_bronze
from warehouse.support import parquet, put_batch, sample

from .fuzzing import MESSAGES, from_bases, generate, known_gaps, raw_snapshots, run_reports
from .harness import Pipeline

pytestmark = pytest.mark.timeout(600)

LAYER_KEY = re.compile(
    r"(bronze|silver|quarantine)/[a-z_]+/exchange=[a-z0-9_-]+/symbol=[A-Za-z0-9_:-]+/date=\d{4}-\d{2}-\d{2}/[^/]+"
    r"|dead-letters/[a-z-]+/date=\d{4}-\d{2}-\d{2}/[^/]+"
)
MAX_ABS_VALUE = 1e15


@dataclass
class Sent:
    subject: str
    body: bytes


@dataclass
class Outcome:
    """What became of the messages of one type: where each one ended."""

    stored: int = 0
    dead_lettered: int = 0
    unaccounted: list[str] = field(default_factory=list)
    both: list[str] = field(default_factory=list)  # more than one letter for one message


async def publish_all(nats_url: str, stream: str, prefix: str, bodies: Sequence[bytes]) -> list[Sent]:
    """Each body on its own subject (no Nats-Msg-Id: a repeated body is consumed again)."""
    sent = []
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for index, body in enumerate(bodies):
            subject = f"{prefix}.m{index}"
            await js.publish(subject, body, stream=stream)
            sent.append(Sent(subject, body))
    finally:
        await nc.close()
    return sent


async def drained(pipe: Pipeline, consumers: Sequence[tuple[str, str]], timeout: float = 240) -> None:
    """Every consumer has settled everything (nothing pending, nothing unacked), services alive."""

    await pipe.wait_for(f"{consumers} drained", lambda: pipe.drained(consumers), timeout=timeout, interval=0.5)
    for proc in pipe.procs:
        assert proc.popen.poll() is None, f"{proc.name} exited with {proc.popen.returncode}\n{proc.log()}"


async def letters_of(pipe: Pipeline, stage: str) -> dict[str, list[dict[str, Any]]]:
    """The stage's DeadLetters by the subject of the input they are about."""
    found: dict[str, list[dict[str, Any]]] = {}
    for msg in await pipe.stream_messages("DLQ"):
        if not msg.subject.startswith(f"cryptoflow.dlq.{stage}."):
            continue  # the fuzzed letters the loader consumes are in DLQ too
        letter = orjson.loads(msg.data)
        if letter.get("source_subject"):
            found.setdefault(letter["source_subject"], []).append(letter)
    return found


def account(
    sent: Sequence[Sent],
    letters: dict[str, list[dict[str, Any]]],
    model: type[Event],
    stored: Callable[[Any], bool],
) -> Outcome:
    """Each message: dead-lettered (exactly one letter, with a reason), or not and decodable with
    its side effect present. (A letter does not exclude the side effect: another message may carry
    the same event, e.g. a batch announced twice, once with a hostile field.)"""
    outcome = Outcome()
    for message in sent:
        own = letters.get(message.subject, [])
        if len(own) > 1:
            outcome.both.append(f"{message.subject}: {len(own)} letters")
        elif own and own[0]["reason"]:
            outcome.dead_lettered += 1
        else:
            try:
                event = model.model_validate_json(message.body)
            except ValidationError:
                event = None
            if event is not None and stored(event):
                outcome.stored += 1
            else:
                outcome.unaccounted.append(f"{message.subject}: {message.body[:200]!r}")
    return outcome


def assert_accounted(outcome: Outcome, sent: int, what: str) -> None:
    assert not outcome.unaccounted, f"{what}: {len(outcome.unaccounted)} unaccounted, e.g. {outcome.unaccounted[:3]}"
    assert not outcome.both, f"{what}: dead-lettered more than once: {outcome.both[:3]}"
    assert outcome.stored + outcome.dead_lettered == sent, (what, outcome)
    # The fuzzing is worth something only when both outcomes occur.
    assert outcome.stored and outcome.dead_lettered, (what, outcome)


async def assert_lake_is_tidy(lake_url: str) -> None:
    lake = await open_lake(lake_url)
    try:
        keys = await lake.list("")
    finally:
        await lake.close()
    for key in keys:
        checked_key(key)
        assert LAYER_KEY.fullmatch(key), f"lake object outside its layer or partition: {key}"


async def assert_warehouse_is_plausible(pipe: Pipeline) -> None:
    low = datetime.fromtimestamp(PLAUSIBLE_MIN_TS_MS / 1000, UTC)
    high = datetime.fromtimestamp(PLAUSIBLE_MAX_TS_MS / 1000, UTC)
    numeric = {
        "ohlcv": ["open", "high", "low", "close", "volume"],
        "trades": ["price", "amount"],
        "tickers": ["bid", "ask", "last"],
        "order_books": ["price", "amount"],
    }
    for table, columns in numeric.items():
        row = await pipe.fetch(
            f"SELECT min(ts) AS lo, max(ts) AS hi, {', '.join(f'max(abs({c})) AS {c}' for c in columns)} FROM {table}"
        )
        values = dict(row[0])
        if values["lo"] is not None:
            assert low <= values["lo"] <= values["hi"] < high, (table, values)
        for column in columns:
            assert values[column] is None or values[column] <= MAX_ABS_VALUE, (table, column, values[column])
    partitions = await pipe.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '_data_[0-9]{6}$' ORDER BY relname"
    )
    for record in partitions:
        month = int(str(record["relname"])[-6:-2])
        assert 2009 <= month < 2100, f"a partition for a hostile month: {record['relname']}"


async def test_fuzzed_raw_snapshots_are_stored_or_dead_lettered(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    await pipe.wait_for("streams", lambda: _streams_exist(pipe.nats_url), timeout=60)
    limit = await _max_payload(pipe.nats_url)
    # At the size limit (a body the server just takes), besides the generated ones.
    at_limit = orjson.dumps({"dataset": "ohlcv", "padding": "x" * (limit - 100)})[:limit]
    bodies = [*generate(raw_snapshots()), at_limit]
    sent = await publish_all(pipe.nats_url, "RAW", "cryptoflow.raw.fuzz.x", bodies)
    # Over it: the server refuses the publish, so nothing is consumed that could be lost.
    with pytest.raises(nats.errors.MaxPayloadError):
        await publish_all(pipe.nats_url, "RAW", "cryptoflow.raw.fuzz.over", [b"x" * (limit + 1)])
    await drained(pipe, [("RAW", "lake-writer"), ("LAKE", "transformer"), ("SILVER", "warehouse-loader")])

    announced = {
        event_id
        for msg in await pipe.stream_messages("LAKE")
        for event_id in orjson.loads(msg.data)["source_event_ids"]
    }
    outcome = account(
        sent, await letters_of(pipe, "lake-writer"), RawSnapshot, lambda event: event.event_id in announced
    )
    assert_accounted(outcome, len(sent), "RawSnapshot")
    await assert_lake_is_tidy(pipe.lake_url)
    await assert_warehouse_is_plausible(pipe)


async def test_fuzzed_object_written_events_are_transformed_or_dead_lettered(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    lake = FileLake(pipe.lake_url)
    frame = recorded_candles("XRPETH-1m.csv").head(400)
    written = await write_bronze(lake, candle_pages(frame, "XRP/ETH", "1m", [100]))
    bases = [orjson.loads(w.to_json()) for w in written]
    for base in list(bases[:2]):
        bases.append({**base, "key": base["key"].replace(".ndjson.zst", "-gone.ndjson.zst"), "event_id": ""})
    for base in bases:
        base.pop("event_id", None)
    pipe.start("transformer")
    await pipe.wait_for("streams", lambda: _streams_exist(pipe.nats_url), timeout=60)
    bodies = generate(from_bases(bases, ["exchange", "key", "dataset"], []))
    sent = await publish_all(pipe.nats_url, "LAKE", "cryptoflow.lake.fuzz.x", bodies)
    await drained(pipe, [("LAKE", "transformer")])

    silver_keys = {orjson.loads(m.data)["key"] for m in await pipe.stream_messages("SILVER")}

    def transformed(event: ObjectWritten) -> bool:
        name = event.key.removeprefix("bronze").removesuffix(".ndjson.zst")
        return f"silver{name}.parquet" in silver_keys

    outcome = account(sent, await letters_of(pipe, "transformer"), ObjectWritten, transformed)
    assert_accounted(outcome, len(sent), "ObjectWritten")
    await assert_lake_is_tidy(pipe.lake_url)


async def test_fuzzed_loader_events_are_stored_or_dead_lettered(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    lake = FileLake(pipe.lake_url)
    batches = [
        await put_batch(lake, table, sample(table, 20, symbol="FUZZ/USDT", start=i * 20), f"fuzz-{table}-{i}")
        for table in ("ohlcv", "trades", "tickers", "order_books")
        for i in range(2)
    ]
    batch_bases = [orjson.loads(b.to_json()) for b in batches]
    batch_bases.append({**batch_bases[0], "key": batch_bases[0]["key"].replace("fuzz-", "gone-")})
    quarantine_key = batches[0].key.replace("silver/", "quarantine/")
    rejected = sample("ohlcv", 3, symbol="FUZZ/USDT").with_columns(pl.lit("negative_volume").alias("reason"))
    await lake.put(quarantine_key, parquet(rejected, "ohlcv"))
    letter_base = orjson.loads(
        DeadLetter(
            stage="transformer",  # type: ignore[arg-type]
            dataset="ohlcv",  # type: ignore[arg-type]
            reason="3 row(s) quarantined",
            error_type="RowsQuarantined",
            details={"quarantine_key": quarantine_key, "source_key": batches[0].key, "table": "ohlcv"},
        ).to_json()
    )
    for base in (*batch_bases, letter_base):
        base.pop("event_id", None)
    pipe.start("warehouse-loader", env={"WAREHOUSE_LOADER_ALERT_RULES": "[]"})
    await pipe.wait_for("streams", lambda: _streams_exist(pipe.nats_url), timeout=60)

    plans = {
        "BatchReady": (
            generate(from_bases(batch_bases, ["exchange", "key", "table"], ["min_ts", "max_ts"])),
            "SILVER",
            "cryptoflow.silver.fuzz.x",
        ),
        "KnownGap": (generate(known_gaps()), "GAPS", "cryptoflow.gaps.fuzz"),
        "RunReport": (generate(run_reports()), "RUNS", "cryptoflow.runs.fuzz"),
        "DeadLetter": (
            generate(from_bases([letter_base], ["stage", "reason"], [])),
            "DLQ",
            "cryptoflow.dlq.transformer.fuzz",
        ),
    }
    sent = {
        name: await publish_all(pipe.nats_url, stream, prefix, bodies)
        for name, (bodies, stream, prefix) in plans.items()
    }
    await drained(
        pipe,
        [
            ("SILVER", "warehouse-loader"),
            ("GAPS", "warehouse-loader-gaps"),
            ("RUNS", "warehouse-loader-runs"),
            ("DLQ", "warehouse-loader-quarantine"),
        ],
        timeout=400,
    )
    letters = await letters_of(pipe, "warehouse-loader")
    ledger = {r["batch_id"] for r in await pipe.fetch("SELECT batch_id FROM batches")}
    gaps = {
        (r["exchange"], r["symbol"], r["dataset"], r["timeframe"], r["gap_start"], r["gap_end"])
        for r in await pipe.fetch("SELECT * FROM known_gaps")
    }
    runs = {r["run_id"] for r in await pipe.fetch("SELECT run_id FROM service_runs")}
    kept = {r["quarantine_key"] for r in await pipe.fetch("SELECT DISTINCT quarantine_key FROM quarantine")}

    def gap_kept(gap: KnownGap) -> bool:
        start = datetime.fromtimestamp(gap.start_ts / 1000, UTC)
        end = datetime.fromtimestamp(gap.end_ts / 1000, UTC)
        return (gap.exchange, gap.symbol, gap.dataset.value, gap.timeframe or "", start, end) in gaps

    def letter_kept(letter: DeadLetter) -> bool:
        key = letter.details.get("quarantine_key")
        # A letter without a quarantine object is not the loader's to keep: acked, nothing stored.
        return key in kept if isinstance(key, str) and key else True

    oracles: dict[str, tuple[type[Event], Callable[[Any], bool]]] = {
        "BatchReady": (BatchReady, lambda batch: batch.event_id in ledger),
        "KnownGap": (KnownGap, gap_kept),
        "RunReport": (RunReport, lambda report: report.run_id in runs),
        "DeadLetter": (DeadLetter, letter_kept),
    }
    for name, (model, stored) in oracles.items():
        assert_accounted(account(sent[name], letters, model, stored), len(sent[name]), name)
    await assert_warehouse_is_plausible(pipe)


async def _max_payload(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        return int(nc.max_payload)
    finally:
        await nc.close()


async def _streams_exist(nats_url: str) -> bool:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            await js.stream_info("DLQ")
            return True
        except nats.js.errors.NotFoundError:
            return False
    finally:
        await nc.close()


def test_the_generated_messages_are_many_and_varied() -> None:
    """The generator itself: the configured count, the same on every run, hostile and valid mixed."""
    first = generate(raw_snapshots())
    assert len(first) == MESSAGES
    assert first == generate(raw_snapshots())
    decodable = 0
    for body in first:
        try:
            RawSnapshot.model_validate_json(body)
            decodable += 1
        except ValidationError:
            pass
    assert 0.15 * MESSAGES < decodable < 0.85 * MESSAGES, decodable
