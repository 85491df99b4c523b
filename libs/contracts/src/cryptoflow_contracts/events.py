"""The events services exchange over JetStream.

Each event is immutable, carries `schema_version`, and a deterministic
`event_id` derived from what makes it *this* event (never from wall-clock time
or randomness), so a retried publish carries the same `Nats-Msg-Id` and
JetStream's duplicate window drops it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .datasets import Dataset
from .subjects import Stage


def content_hash(value: Any) -> str:
    """sha256 of the canonical JSON of a value (sorted keys)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: int = Field(default=1, description="Version of this event's schema")
    event_id: str = Field(default="", description="Deterministic id; used as Nats-Msg-Id")

    def identity(self) -> Any:
        """What makes this event unique; hashed into `event_id`."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _fill_event_id(self) -> Event:
        if not self.event_id:
            kind = type(self).__name__
            digest = content_hash([kind, self.schema_version, self.identity()])[:32]
            object.__setattr__(self, "event_id", f"{kind}-{digest}")
        return self

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, data: bytes | str) -> Any:
        return cls.model_validate_json(data)


class RawSnapshot(Event):
    """One page of what ccxt returned for one exchange·symbol·dataset, untouched."""

    dataset: Dataset
    exchange: str
    symbol: str = Field(description="Unified ccxt symbol, e.g. BTC/USDT")
    timeframe: str | None = Field(default=None, description="OHLCV timeframe, e.g. 1m")
    fetched_at: datetime
    request: dict[str, Any] = Field(default_factory=dict, description="The ccxt call's arguments")
    payload: Any = Field(description="ccxt's unified result (OHLCV: [[ts, o, h, l, c, v], ...])")
    first_ts: int | None = Field(default=None, description="Earliest record time in payload, ms")
    last_ts: int | None = Field(default=None, description="Latest record time in payload, ms")
    final: bool = Field(default=True, description="True when every record is closed and final")

    def identity(self) -> Any:
        return [
            self.dataset.value,
            self.exchange,
            self.symbol,
            self.timeframe,
            self.first_ts,
            self.last_ts,
            content_hash(self.payload),
        ]


class ObjectWritten(Event):
    """A bronze object is durable in the lake."""

    dataset: Dataset
    exchange: str
    lake_url: str = Field(description="Lake root, e.g. s3://bucket or file:///data/lake")
    key: str
    sha256: str
    bytes: int
    records: int = Field(description="RawSnapshot events in the object")
    source_event_ids: list[str]

    def identity(self) -> Any:
        return [self.lake_url, self.key, self.sha256]


class BatchReady(Event):
    """A validated silver Parquet batch is durable in the lake."""

    dataset: Dataset
    table: str = Field(description="Silver table the batch belongs to (see silver.TABLES), e.g. ohlcv, trades")
    exchange: str
    lake_url: str
    key: str = Field(description="Silver Parquet object key")
    sha256: str
    rows: int
    quarantined_rows: int
    min_ts: int | None
    max_ts: int | None
    source_key: str = Field(description="Bronze object the batch was built from")
    source_event_id: str = Field(description="event_id of the ObjectWritten it came from")
    quality_score: float = Field(description="Share of input rows that passed every check")

    def identity(self) -> Any:
        return [self.lake_url, self.key, self.sha256]


class Loaded(Event):
    """A silver batch is committed in the warehouse."""

    dataset: Dataset
    table: str
    batch_event_id: str
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    already_loaded: bool = Field(description="True when the ledger showed the batch as loaded before")

    def identity(self) -> Any:
        return [self.table, self.batch_event_id]


class DeadLetter(Event):
    """Input a stage could not process, with the reason; the stage went on."""

    stage: Stage
    dataset: Dataset | None
    reason: str
    error_type: str
    source_subject: str | None = None
    source_event_id: str | None = None
    deliveries: int | None = None
    payload: str | None = Field(default=None, description="The failed input (text, or base64 of bytes)")
    details: dict[str, Any] = Field(default_factory=dict)

    def identity(self) -> Any:
        return [self.stage.value, self.source_subject, self.source_event_id, self.reason, self.payload]


class KnownGap(Event):
    """An interval the exchange itself has no records for (an outage, an illiquid market).

    Recorded once, never retried: the extractor moves past it.
    """

    exchange: str
    symbol: str
    dataset: Dataset
    timeframe: str | None = None
    start_ts: int = Field(description="First missing record time, ms (inclusive)")
    end_ts: int = Field(description="Last missing record time, ms (inclusive)")
    missing: int = Field(description="Number of missing records (candles)")
    detected_at: datetime

    def identity(self) -> Any:
        return [self.exchange, self.symbol, self.dataset.value, self.timeframe, self.start_ts, self.end_ts]


class SchemaDrift(Event):
    """The exchange's raw payload changed shape against the learned baseline."""

    exchange: str
    dataset: Dataset
    symbol: str | None = None
    appeared: dict[str, str] = Field(default_factory=dict, description="field path → JSON type")
    vanished: dict[str, str] = Field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = Field(default_factory=dict, description="field path → (was, now)")
    breaking: bool = Field(description="True when fields vanished or changed type; the page was dead-lettered")
    detected_at: datetime

    def identity(self) -> Any:
        return [self.exchange, self.dataset.value, self.appeared, self.vanished, self.changed]


ALL_EVENTS: tuple[type[Event], ...] = (
    RawSnapshot,
    ObjectWritten,
    BatchReady,
    Loaded,
    DeadLetter,
    KnownGap,
    SchemaDrift,
)
