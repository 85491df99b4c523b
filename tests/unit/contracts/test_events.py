"""Events: deterministic ids, JSON round-trips, for every event type."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from cryptoflow_contracts import (
    ALL_EVENTS,
    Anomaly,
    BatchReady,
    Dataset,
    DeadLetter,
    Event,
    Loaded,
    ObjectWritten,
    RawSnapshot,
    Stage,
)
from cryptoflow_contracts.events import Alert, KnownGap, LiveUpdate, RunReport, SchemaDrift
from pydantic import ValidationError

FETCHED_AT = datetime(2024, 6, 1, 12, 0, 5, tzinfo=UTC)


def raw_snapshot(**overrides: Any) -> RawSnapshot:
    fields: dict[str, Any] = {
        "dataset": Dataset.OHLCV,
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "timeframe": "1m",
        "fetched_at": FETCHED_AT,
        "request": {"symbol": "BTC/USDT", "timeframe": "1m", "since": 1717243200000, "limit": 2},
        "payload": [
            [1717243200000, 67000.5, 67010.0, 66990.25, 67005.0, 12.345],
            [1717243260000, 67005.0, 67020.0, 0.09946999000000001, 67001.0, 3.0],
        ],
        "first_ts": 1717243200000,
        "last_ts": 1717243260000,
    }
    fields.update(overrides)
    return RawSnapshot(**fields)


def object_written(**overrides: Any) -> ObjectWritten:
    fields: dict[str, Any] = {
        "dataset": Dataset.OHLCV,
        "exchange": "binance",
        "lake_url": "s3://lake",
        "key": "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/1717243200000-abc.ndjson.zst",
        "sha256": "a" * 64,
        "bytes": 1234,
        "records": 2,
        "source_event_ids": ["RawSnapshot-1", "RawSnapshot-2"],
    }
    fields.update(overrides)
    return ObjectWritten(**fields)


def batch_ready(**overrides: Any) -> BatchReady:
    fields: dict[str, Any] = {
        "dataset": Dataset.OHLCV,
        "table": "ohlcv",
        "exchange": "binance",
        "lake_url": "s3://lake",
        "key": "silver/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/1717243200000-abc.parquet",
        "sha256": "b" * 64,
        "rows": 10,
        "quarantined_rows": 1,
        "min_ts": 1717243200000,
        "max_ts": 1717243740000,
        "source_key": "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/1717243200000-abc.ndjson.zst",
        "source_event_id": "ObjectWritten-1",
        "quality_score": 10 / 11,
    }
    fields.update(overrides)
    return BatchReady(**fields)


def loaded(**overrides: Any) -> Loaded:
    fields: dict[str, Any] = {
        "dataset": Dataset.OHLCV,
        "table": "ohlcv",
        "batch_event_id": "BatchReady-1",
        "rows_inserted": 7,
        "rows_updated": 2,
        "rows_unchanged": 1,
        "already_loaded": False,
    }
    fields.update(overrides)
    return Loaded(**fields)


def dead_letter(**overrides: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "stage": Stage.TRANSFORMER,
        "dataset": Dataset.OHLCV,
        "reason": "3 row(s) quarantined: null_field ×3",
        "error_type": "RowsQuarantined",
        "source_subject": "cryptoflow.lake.ohlcv.binance",
        "source_event_id": "ObjectWritten-1",
        "deliveries": 2,
        "payload": "base64:AAEC",
        "details": {"reasons": {"null_field": 3}},
    }
    fields.update(overrides)
    return DeadLetter(**fields)


def known_gap(**overrides: Any) -> KnownGap:
    fields: dict[str, Any] = {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "dataset": Dataset.OHLCV,
        "timeframe": "1m",
        "start_ts": 1717243260000,
        "end_ts": 1717243380000,
        "missing": 3,
        "detected_at": FETCHED_AT,
    }
    fields.update(overrides)
    return KnownGap(**fields)


def schema_drift(**overrides: Any) -> SchemaDrift:
    fields: dict[str, Any] = {
        "exchange": "binance",
        "dataset": Dataset.TICKER,
        "symbol": "BTC/USDT",
        "appeared": {"info.newField": "string"},
        "vanished": {"info.oldField": "number"},
        "changed": {"info.price": ("number", "string")},
        "breaking": True,
        "detected_at": FETCHED_AT,
    }
    fields.update(overrides)
    return SchemaDrift(**fields)


def anomaly(**overrides: Any) -> Anomaly:
    fields: dict[str, Any] = {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "timeframe": "1m",
        "ts": 1717243200000,
        "kind": "return_zscore",
        "value": 5.25,
        "threshold": 4.0,
        "window": 30,
        "close": 67005.0,
        "volume": 12.345,
        "source_event_id": "RawSnapshot-1",
    }
    fields.update(overrides)
    return Anomaly(**fields)


def alert(**overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "rule": "price-move-24h",
        "kind": "price_move",
        "symbol": "BTC/USDT",
        "exchanges": ["binance"],
        "table": "ohlcv",
        "timeframe": "1m",
        "observed_at": FETCHED_AT,
        "value": 12.5,
        "threshold": 10.0,
        "message": "binance BTC/USDT moved 12.50% over 24h (threshold 10%)",
        "triggered_at": FETCHED_AT + timedelta(seconds=3),
    }
    fields.update(overrides)
    return Alert(**fields)


def run_report(**overrides: Any) -> RunReport:
    fields: dict[str, Any] = {
        "service": "warehouse-loader",
        "run_id": "warehouse-loader-host-1-1717243200000",
        "instance": "host:1",
        "seq": 3,
        "status": "running",
        "started_at": FETCHED_AT,
        "reported_at": FETCHED_AT + timedelta(seconds=30),
        "counts": {"batches_loaded": 4, "rows_inserted": 4000},
        "errors": 1,
        "last_error": "PoisonMessageError: database rejected batch",
    }
    fields.update(overrides)
    return RunReport(**fields)


def live_update(**overrides: Any) -> LiveUpdate:
    fields: dict[str, Any] = {
        "dataset": Dataset.TRADES,
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "exchange_ts": 1717243200123,
        "received_at": FETCHED_AT,
        "data": [{"id": "1", "timestamp": 1717243200123, "price": 67000.5, "amount": 0.01, "side": "buy"}],
    }
    fields.update(overrides)
    return LiveUpdate(**fields)


FACTORIES = {
    RawSnapshot: raw_snapshot,
    LiveUpdate: live_update,
    Anomaly: anomaly,
    ObjectWritten: object_written,
    BatchReady: batch_ready,
    Loaded: loaded,
    DeadLetter: dead_letter,
    KnownGap: known_gap,
    SchemaDrift: schema_drift,
    Alert: alert,
    RunReport: run_report,
}

# For each event type, a change to one field that is part of what makes the event unique.
IDENTITY_CHANGES: dict[type[Event], dict[str, Any]] = {
    Anomaly: {"value": 5.5},
    RawSnapshot: {"payload": [[1717243200000, 67000.5, 67010.0, 66990.25, 67005.0, 12.346]]},
    ObjectWritten: {"sha256": "c" * 64},
    BatchReady: {"key": "silver/other.parquet"},
    Loaded: {"batch_event_id": "BatchReady-2"},
    DeadLetter: {"reason": "something else"},
    KnownGap: {"end_ts": 1717243440000},
    SchemaDrift: {"vanished": {}},
    Alert: {"observed_at": FETCHED_AT + timedelta(minutes=1)},
    RunReport: {"seq": 4},
    LiveUpdate: {"exchange_ts": 1717243200124},
}


def test_every_event_type_has_a_sample() -> None:
    assert set(FACTORIES) == set(ALL_EVENTS)
    assert set(IDENTITY_CHANGES) == set(ALL_EVENTS)


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_event_id_has_kind_prefix_and_digest(cls: type[Event]) -> None:
    event = FACTORIES[cls]()
    assert re.fullmatch(rf"{cls.__name__}-[0-9a-f]{{32}}", event.event_id), event.event_id


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_same_content_gives_same_event_id(cls: type[Event]) -> None:
    first, second = FACTORIES[cls](), FACTORIES[cls]()
    assert first is not second
    assert first.event_id == second.event_id


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_different_identity_gives_different_event_id(cls: type[Event]) -> None:
    assert FACTORIES[cls]().event_id != FACTORIES[cls](**IDENTITY_CHANGES[cls]).event_id


def test_raw_snapshot_id_ignores_fetch_time() -> None:
    # A retried fetch of the same page must carry the same Nats-Msg-Id.
    later = raw_snapshot(fetched_at=FETCHED_AT + timedelta(minutes=3))
    assert later.event_id == raw_snapshot().event_id


def test_raw_snapshot_id_depends_on_every_payload_value() -> None:
    base = raw_snapshot()
    for row in range(2):
        for col in range(6):
            payload = [list(candle) for candle in base.payload]
            payload[row][col] = payload[row][col] + 1
            assert raw_snapshot(payload=payload).event_id != base.event_id, (row, col)


def test_different_event_types_with_same_identity_do_not_collide() -> None:
    # ObjectWritten and BatchReady both use [lake_url, key, sha256] as identity.
    ow = object_written(key="k", sha256="d" * 64)
    br = batch_ready(key="k", sha256="d" * 64)
    assert ow.identity() == br.identity()
    assert ow.event_id != br.event_id


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_json_round_trip(cls: type[Event]) -> None:
    event = FACTORIES[cls]()
    data = event.to_json()
    assert isinstance(data, bytes)
    back = cls.from_json(data)
    assert type(back) is cls
    assert back == event
    assert back.event_id == event.event_id
    # Also from str, and the serialised form is stable.
    assert cls.from_json(data.decode()) == event
    assert back.to_json() == data


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_event_id_recomputed_after_json_round_trip(cls: type[Event]) -> None:
    """A consumer that rebuilds the event from its JSON without the id derives the same id."""
    event = FACTORIES[cls]()
    document = json.loads(event.to_json())
    assert document["event_id"] == event.event_id
    assert document["schema_version"] == 1
    del document["event_id"]
    rebuilt = cls.model_validate_json(json.dumps(document))
    assert rebuilt.event_id == event.event_id


def test_raw_snapshot_payload_floats_survive_round_trip_exactly() -> None:
    snapshot = raw_snapshot()
    back = RawSnapshot.from_json(snapshot.to_json())
    assert back.payload[1][3] == 0.09946999000000001
    assert back.payload == snapshot.payload
    assert back.fetched_at == FETCHED_AT


def test_events_are_immutable_and_strict() -> None:
    event = loaded()
    with pytest.raises(ValidationError):  # frozen instance
        event.rows_inserted = 99  # type: ignore[misc]
    with pytest.raises(ValidationError):  # extra="forbid"
        Loaded(**{**json.loads(event.to_json()), "surprise": 1})


def test_to_json_is_plain_json_with_enum_values() -> None:
    document = orjson.loads(dead_letter().to_json())
    assert document["stage"] == "transformer"
    assert document["dataset"] == "ohlcv"


def test_an_event_from_a_newer_schema_is_refused_with_the_reason() -> None:
    """Issue 15, finding 4: a future schema_version used to be accepted as if understood."""
    good = RawSnapshot(
        dataset=Dataset.OHLCV,
        exchange="binance",
        symbol="BTC/USDT",
        fetched_at=datetime(2024, 1, 1, tzinfo=UTC),
        payload=[],
    )
    newer = orjson.loads(good.to_json()) | {"schema_version": RawSnapshot.SCHEMA_VERSION + 1}
    with pytest.raises(
        ValidationError, match=f"schema_version {RawSnapshot.SCHEMA_VERSION + 1} is not one this reader knows"
    ):
        RawSnapshot.model_validate(newer)
    with pytest.raises(ValidationError):
        RawSnapshot.model_validate(orjson.loads(good.to_json()) | {"schema_version": 0})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("symbol", "../../etc/passwd"),
        ("symbol", "BTC/USDT/x"),
        ("symbol", "BTC.X/USDT"),
        ("symbol", "BTC/USDT'; DROP TABLE ohlcv;--"),
        ("symbol", "ＢＴＣ/USDT"),
        ("exchange", "Binance"),
        ("exchange", "bin/ance"),
        ("exchange", "bin.ance"),
        ("exchange", ""),
    ],
)
def test_names_outside_the_safe_alphabet_are_refused(field: str, value: str) -> None:
    """Names become subject tokens and lake partitions: only a safe alphabet gets in."""
    fields = {
        "dataset": "ohlcv",
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "fetched_at": "2024-01-01T00:00:00Z",
        "payload": [],
        field: value,
    }
    with pytest.raises(ValidationError):
        RawSnapshot.model_validate(fields)


def test_futures_symbols_and_ccxt_ids_pass() -> None:
    snapshot = RawSnapshot.model_validate(
        {
            "dataset": "ohlcv",
            "exchange": "binance_us-2",
            "symbol": "BTC/USDT:USDT",
            "fetched_at": "2024-01-01T00:00:00Z",
            "payload": [],
        }
    )
    assert snapshot.subject() == "cryptoflow.raw.ohlcv.binance_us-2.BTC-USDT:USDT"


def test_a_forming_page_and_the_same_page_closed_are_different_events() -> None:
    # The closed candle often has the forming one's last values: it must not be dropped as its duplicate.
    closed = raw_snapshot()
    assert raw_snapshot(final=False).event_id != closed.event_id
    assert raw_snapshot(final=True).event_id == closed.event_id
