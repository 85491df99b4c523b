"""The events services exchange over JetStream.

Each event is immutable, carries `schema_version`, and a deterministic
`event_id` derived from what makes it *this* event (never from wall-clock time
or randomness), so a retried publish carries the same `Nats-Msg-Id` and
JetStream's duplicate window drops it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from . import subjects
from .datasets import Dataset
from .subjects import Stage, Stream

# What makes an event unique, as JSON-able values: hashed into its `event_id`.
IdentityPart = str | int | float | bool | None | Sequence["IdentityPart"] | Mapping[str, "IdentityPart"]
Identity = list[IdentityPart]

_EXCHANGE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MARKET_PART = r"[A-Za-z0-9_-]{1,64}"
_SYMBOL = re.compile(rf"{_MARKET_PART}/{_MARKET_PART}(:{_MARKET_PART})?")


def _exchange_id(value: str) -> str:
    """A ccxt exchange id: it becomes a subject token and a lake partition, so a safe alphabet only."""
    if not _EXCHANGE_ID.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not an exchange id (lowercase letters, digits, '_' or '-')")
    return value


def _market_symbol(value: str) -> str:
    """A unified symbol, BASE/QUOTE[:SETTLE]: it becomes a subject token and a lake partition."""
    if not _SYMBOL.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a unified symbol like BTC/USDT (letters, digits, '_', '-')")
    return value


ExchangeId = Annotated[str, AfterValidator(_exchange_id)]
MarketSymbol = Annotated[str, AfterValidator(_market_symbol)]

AlertKind = Literal["price_move", "spread", "staleness", "price_divergence"]
RunStatus = Literal["running", "ok", "failed"]
AnomalyKind = Literal["return_zscore", "volume_spike"]
# no_records: the source has no records there; archive_missing: a bulk archive lacks the file of a
# day (its records come by REST, and the day is recorded for source_coverage).
GapKind = Literal["no_records", "archive_missing"]


def content_hash(value: Any) -> str:
    """sha256 of the canonical JSON of a value (sorted keys)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Routing: the stream an event is published to, its subject template (subjects.py), who
    # publishes it and what it says. `subject()` fills the template in; nothing else spells a subject.
    STREAM: ClassVar[Stream]
    SUBJECT: ClassVar[str]
    PRODUCERS: ClassVar[str]
    ABOUT: ClassVar[str]  # what its channel carries, for the AsyncAPI document

    # The newest schema version this code reads and writes: an event from a newer producer is
    # refused (DeadLetter with the reason) rather than half-understood.
    SCHEMA_VERSION: ClassVar[int] = 1

    schema_version: int = Field(default=1, description="Version of this event's schema")
    event_id: str = Field(default="", description="Deterministic id; used as Nats-Msg-Id")

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if not 1 <= version <= cls.SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version} is not one this reader knows (1..{cls.SCHEMA_VERSION}); "
                "upgrade the consumer or replay it later"
            )
        return version

    def identity(self) -> Identity:
        """What makes this event unique; hashed into `event_id`."""
        raise NotImplementedError

    def subject(self) -> str:
        """The concrete subject this event is published on."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _fill_event_id(self) -> Event:
        if not self.event_id:
            kind = type(self).__name__
            try:
                digest = content_hash([kind, self.schema_version, self.identity()])[:32]
            except TypeError as exc:  # e.g. an integer beyond 64 bits: no JSON we publish can hold it
                raise ValueError(f"{kind} cannot be serialized: {exc}") from None
            object.__setattr__(self, "event_id", f"{kind}-{digest}")
        return self

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, data: bytes | str) -> Any:
        return cls.model_validate_json(data)


class NativeResponse(BaseModel):
    """One HTTP response as the exchange sent it, with the request it answered; or one websocket
    frame as received (`method` "WS", `path` the socket's URL, `headers` its receive time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = Field(description="HTTP method, e.g. GET; WS for a websocket frame")
    path: str = Field(description="URL path of the request, e.g. /api/v3/klines; a websocket frame's socket URL")
    params: dict[str, str] = Field(default_factory=dict, description="Query parameters, credentials removed")
    status: int | None = Field(default=None, description="HTTP status")
    headers: dict[str, str] = Field(
        default_factory=dict, description="The response headers that matter (rate-limit weight, dates)"
    )
    body: str = Field(description="The response body exactly as received")


class NativeCall(BaseModel):
    """One unified ccxt call and every response it read: enough to parse it again, offline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ccxt_version: str
    method: str = Field(description="The unified ccxt method, e.g. fetchOHLCV")
    args: list[Any] = Field(description="Its arguments, e.g. [symbol, timeframe, since, limit, params]")
    market: dict[str, Any] | None = Field(default=None, description="The ccxt market of the symbol, as loaded")
    options: dict[str, Any] = Field(default_factory=dict, description="ccxt options the exchange was built with")
    responses: list[NativeResponse]


class RawSnapshot(Event):
    """One page of what ccxt returned for one exchange·symbol·dataset, untouched.

    From schema version 2, `native` holds what the exchange sent (every response body of the
    calls that made the page, as received, with their requests): silver is parsed from it, so a
    newer parser can be replayed over history. Version 1 snapshots carry ccxt's result only.
    """

    SCHEMA_VERSION: ClassVar[int] = 2

    STREAM: ClassVar[Stream] = Stream.RAW
    SUBJECT: ClassVar[str] = subjects.RAW_SUBJECT
    PRODUCERS: ClassVar[str] = "extractor"
    ABOUT: ClassVar[str] = "One page of what the exchange returned for one exchange·symbol·dataset, untouched."

    dataset: Dataset
    exchange: ExchangeId
    symbol: MarketSymbol = Field(description="Unified ccxt symbol, e.g. BTC/USDT")
    timeframe: str | None = Field(default=None, description="OHLCV timeframe, e.g. 1m")
    fetched_at: datetime
    request: dict[str, Any] = Field(default_factory=dict, description="The ccxt call's arguments")
    payload: Any = Field(
        description="ccxt's unified result (OHLCV: [[ts, o, h, l, c, v], ...]); null on a bulk-archive page, "
        "whose records are parsed from `native`"
    )
    first_ts: int | None = Field(default=None, description="Earliest record time in payload, ms")
    last_ts: int | None = Field(default=None, description="Latest record time in payload, ms")
    final: bool = Field(default=True, description="True when every record is closed and final")
    native: list[NativeCall] | None = Field(
        default=None, description="What the exchange sent for this page (schema version 2 on)"
    )

    @model_validator(mode="after")
    def _native_from_version_2(self) -> RawSnapshot:
        if self.native is not None and self.schema_version < 2:
            raise ValueError("native responses come with schema_version 2")
        return self

    @field_validator("payload")
    @classmethod
    def _serializable(cls, payload: Any) -> Any:
        # Checked on arrival so that one page that cannot be written back as JSON (an integer
        # beyond 64 bits) is refused alone, not when the lake-writer serializes its whole batch.
        try:
            orjson.dumps(payload)
        except TypeError as exc:
            raise ValueError(f"payload cannot be serialized: {exc}") from None
        return payload

    @field_validator("first_ts", "last_ts")
    @classmethod
    def _int64(cls, value: int | None) -> int | None:
        if value is not None and not -(2**63) <= value < 2**63:
            raise ValueError(f"{value} is not a 64-bit integer")
        return value

    def subject(self) -> str:
        return subjects.raw_subject(self.dataset, self.exchange, self.symbol)

    def _bodies(self) -> list[str]:
        return [response.body for call in self.native or [] for response in call.responses]

    def identity(self) -> Identity:
        return [
            self.dataset.value,
            self.exchange,
            self.symbol,
            self.timeframe,
            self.first_ts,
            self.last_ts,
            # A page without a payload (a bulk-archive page) is what its responses say.
            content_hash(self.payload) if self.payload is not None else content_hash(self._bodies()),
            # A file page is its text *as read by its mapping*: the same part under another mapping
            # is another page (`cryptoflow ingest`).
            *([content_hash(self.request["mapping"])] if "mapping" in self.request else []),
            # A forming candle and the same candle closed (same values) are different pages; final
            # pages keep the identity they always had.
            *([] if self.final else ["forming"]),
        ]


class ObjectWritten(Event):
    """A bronze object is durable in the lake."""

    STREAM: ClassVar[Stream] = Stream.LAKE
    SUBJECT: ClassVar[str] = subjects.LAKE_SUBJECT
    PRODUCERS: ClassVar[str] = "lake-writer"
    ABOUT: ClassVar[str] = "A bronze object (zstd NDJSON of RawSnapshots) is durable in the lake."

    dataset: Dataset
    exchange: ExchangeId
    lake_url: str = Field(description="Lake root, e.g. s3://bucket or file:///data/lake")
    key: str
    sha256: str
    bytes: int
    records: int = Field(description="RawSnapshot events in the object")
    source_event_ids: list[str]

    def subject(self) -> str:
        return subjects.lake_subject(self.dataset, self.exchange, subjects.partition_symbol(self.key))

    def identity(self) -> Identity:
        return [self.lake_url, self.key, self.sha256]


class BatchReady(Event):
    """A validated silver Parquet batch is durable in the lake."""

    STREAM: ClassVar[Stream] = Stream.SILVER
    SUBJECT: ClassVar[str] = subjects.SILVER_SUBJECT
    PRODUCERS: ClassVar[str] = "transformer"
    ABOUT: ClassVar[str] = (
        "A validated silver Parquet batch is durable in the lake (`lake_url` + `key`); its columns: libs/contracts silver.py, table `table`."
    )

    dataset: Dataset
    table: str = Field(description="Silver table the batch belongs to (see silver.TABLES), e.g. ohlcv, trades")
    exchange: ExchangeId
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
    check_failures: dict[str, int] = Field(
        default_factory=dict, description="Quarantined rows of the source object per failed check"
    )

    def subject(self) -> str:
        return subjects.silver_subject(self.table, self.exchange, subjects.partition_symbol(self.key))

    def identity(self) -> Identity:
        return [self.lake_url, self.key, self.sha256]


class Loaded(Event):
    """A silver batch is committed in the warehouse."""

    STREAM: ClassVar[Stream] = Stream.WAREHOUSE
    SUBJECT: ClassVar[str] = subjects.WAREHOUSE_SUBJECT
    PRODUCERS: ClassVar[str] = "warehouse-loader"
    ABOUT: ClassVar[str] = "A silver batch is committed in PostgreSQL."

    dataset: Dataset
    table: str
    batch_event_id: str
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    already_loaded: bool = Field(description="True when the ledger showed the batch as loaded before")

    def subject(self) -> str:
        return subjects.warehouse_subject(self.dataset)

    def identity(self) -> Identity:
        return [self.table, self.batch_event_id]


class DeadLetter(Event):
    """Input a stage could not process, with the reason; the stage went on."""

    STREAM: ClassVar[Stream] = Stream.DLQ
    SUBJECT: ClassVar[str] = subjects.DLQ_SUBJECT
    PRODUCERS: ClassVar[str] = "every stage"
    ABOUT: ClassVar[str] = (
        "Input a stage could not process, with the reason (dataset `unknown` when undecodable). The transformer's also point at quarantined rows."
    )

    stage: Stage
    dataset: Dataset | None
    reason: str
    error_type: str
    source_subject: str | None = None
    source_event_id: str | None = None
    deliveries: int | None = None
    payload: str | None = Field(default=None, description="The failed input (text, or base64 of bytes)")
    details: dict[str, Any] = Field(default_factory=dict)

    def subject(self) -> str:
        return subjects.dlq_subject(self.stage, self.dataset)

    def identity(self) -> Identity:
        return [self.stage.value, self.source_subject, self.source_event_id, self.reason, self.payload]


class KnownGap(Event):
    """An interval the exchange itself has no records for (an outage, an illiquid market); or,
    `kind` archive_missing, a day a bulk archive has no file for (read by REST instead).

    Recorded once, never retried: the extractor moves past it.
    """

    STREAM: ClassVar[Stream] = Stream.GAPS
    SUBJECT: ClassVar[str] = subjects.GAPS_SUBJECT
    PRODUCERS: ClassVar[str] = "extractor"
    ABOUT: ClassVar[str] = "An interval the exchange itself has no records for."

    exchange: ExchangeId
    symbol: MarketSymbol
    dataset: Dataset
    timeframe: str | None = None
    start_ts: int = Field(description="First missing record time, ms (inclusive)")
    end_ts: int = Field(description="Last missing record time, ms (inclusive)")
    missing: int = Field(
        description="Number of missing records (candles); 0 when unknown (trades the exchange no longer serves)"
    )
    detected_at: datetime
    kind: GapKind = Field(
        default="no_records",
        description="no_records: the source has none there; archive_missing: the bulk archive lacks that day's file",
    )

    def subject(self) -> str:
        return subjects.gaps_subject(self.exchange, self.symbol)

    def identity(self) -> Identity:
        # Gaps of the first kind keep the ids they always had.
        kind = [] if self.kind == "no_records" else [self.kind]
        return [self.exchange, self.symbol, self.dataset.value, self.timeframe, self.start_ts, self.end_ts, *kind]


class SchemaDrift(Event):
    """The exchange's raw payload changed shape against the learned baseline."""

    STREAM: ClassVar[Stream] = Stream.DRIFT
    SUBJECT: ClassVar[str] = subjects.DRIFT_SUBJECT
    PRODUCERS: ClassVar[str] = "extractor"
    ABOUT: ClassVar[str] = "The exchange's raw payload changed shape."

    exchange: ExchangeId
    dataset: Dataset
    symbol: MarketSymbol | None = None
    appeared: dict[str, str] = Field(default_factory=dict, description="field path → JSON type")
    vanished: dict[str, str] = Field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = Field(default_factory=dict, description="field path → (was, now)")
    breaking: bool = Field(description="True when fields vanished or changed type; the page was dead-lettered")
    detected_at: datetime

    def subject(self) -> str:
        return subjects.drift_subject(self.exchange, self.dataset)

    def identity(self) -> Identity:
        return [self.exchange, self.dataset.value, self.appeared, self.vanished, self.changed]


class Alert(Event):
    """A warehouse threshold rule fired (price move, cross-exchange spread, staleness).

    Published on `cryptoflow.alerts.<rule>` (stream ALERTS) by the warehouse-loader, which also
    keeps every alert in its `alerts` table. One alert per rule·series·observed data time: the
    same condition seen again on the same data is the same event (same `event_id`).
    """

    STREAM: ClassVar[Stream] = Stream.ALERTS
    SUBJECT: ClassVar[str] = subjects.ALERTS_SUBJECT
    PRODUCERS: ClassVar[str] = "warehouse-loader"
    ABOUT: ClassVar[str] = "A warehouse threshold rule fired."

    rule: str = Field(description="Configured rule name; the last subject token")
    kind: AlertKind = Field(description="price_move, spread, staleness or price_divergence")
    symbol: MarketSymbol
    exchanges: list[str] = Field(
        description="One exchange, the two of a spread (sorted), or a price divergence's exchange and aggregator"
    )
    table: str | None = Field(default=None, description="Warehouse table the rule looked at")
    timeframe: str | None = None
    observed_at: datetime = Field(description="Time of the data that triggered the rule")
    value: float = Field(description="What was measured: %, or seconds for staleness")
    threshold: float
    message: str
    triggered_at: datetime

    def subject(self) -> str:
        return subjects.alerts_subject(self.rule)

    def identity(self) -> Identity:
        return [
            self.rule,
            self.symbol,
            sorted(self.exchanges),
            self.table,
            self.timeframe,
            self.observed_at.isoformat(),
        ]


class RunReport(Event):
    """How one run of a service is going: counts, errors, status.

    A service publishes one at start, whenever its counts change (at most every few seconds)
    and at exit, on `cryptoflow.runs.<service>` (stream RUNS); the warehouse-loader keeps the
    latest (highest `seq`) per `run_id` in its `service_runs` table (`cryptoflow runs`).
    """

    STREAM: ClassVar[Stream] = Stream.RUNS
    SUBJECT: ClassVar[str] = subjects.RUNS_SUBJECT
    PRODUCERS: ClassVar[str] = "services reporting their runs (warehouse-loader)"
    ABOUT: ClassVar[str] = "How one run of a service is going: counts, errors, status."

    service: str
    run_id: str = Field(description="Unique per process run, e.g. <service>-<host>-<pid>-<start ms>")
    instance: str = Field(description="Host/pod and pid")
    seq: int = Field(ge=0, description="Report number within the run; a higher seq supersedes")
    status: RunStatus = Field(description="running, ok (ended cleanly) or failed")
    started_at: datetime
    reported_at: datetime
    ended_at: datetime | None = None
    counts: dict[str, int] = Field(default_factory=dict, description="e.g. batches_loaded, rows_inserted")
    errors: int = 0
    last_error: str | None = None

    def subject(self) -> str:
        return subjects.runs_subject(self.service)

    def identity(self) -> Identity:
        return [self.service, self.run_id, self.seq]


class Anomaly(Event):
    """A candle that stands out from the ones before it (return z-score or volume spike)."""

    STREAM: ClassVar[Stream] = Stream.ANOMALIES
    SUBJECT: ClassVar[str] = subjects.ANOMALIES_SUBJECT
    PRODUCERS: ClassVar[str] = "transformer (when TRANSFORMER_ANOMALIES is on)"
    ABOUT: ClassVar[str] = "A candle that stands out from the ones before it."

    exchange: ExchangeId
    symbol: MarketSymbol
    timeframe: str
    ts: int = Field(description="Candle open time, ms since epoch (UTC)")
    kind: AnomalyKind = Field(description="return_zscore | volume_spike")
    value: float = Field(description="The z-score, or the volume over the window's mean volume")
    threshold: float = Field(description="|value| at or above which a candle is flagged")
    window: int = Field(description="Candles before this one the value is measured against")
    close: float
    volume: float
    source_event_id: str = Field(description="event_id of the RawSnapshot that carried the candle")

    def subject(self) -> str:
        return subjects.anomaly_subject(self.exchange, self.symbol)

    def identity(self) -> Identity:
        # The value is part of it: a candle revised later is flagged anew, a redelivery is not.
        return [self.exchange, self.symbol, self.timeframe, self.ts, self.kind, self.value, self.window]


class LiveUpdate(Event):
    """One update of a streamed market as it arrived, for consumers that want every update at once.

    Published by the extractor's stream jobs on `cryptoflow.live.<dataset>.<exchange>.<BASE-QUOTE>`
    (stream LIVE, short retention) as soon as the exchange's message is parsed, before the update
    is batched into a RawSnapshot page for the lake: trades as ccxt parsed them, a ticker, a candle
    (`final` once the exchange closed it), or an order book's top levels with the exchange's
    sequence number. The lake and warehouse get the same data through RAW; LIVE is for latency.
    """

    STREAM: ClassVar[Stream] = Stream.LIVE
    SUBJECT: ClassVar[str] = subjects.LIVE_SUBJECT
    PRODUCERS: ClassVar[str] = "extractor (stream mode)"
    ABOUT: ClassVar[str] = "One update of a streamed market as it arrived (trades, ticker, candle, book)."

    dataset: Dataset
    exchange: ExchangeId
    symbol: MarketSymbol
    timeframe: str | None = Field(default=None, description="OHLCV timeframe, e.g. 1m")
    exchange_ts: int | None = Field(default=None, description="The exchange's event time, ms (newest in the update)")
    received_at: datetime = Field(description="When the extractor received the message")
    final: bool = Field(default=True, description="False for a candle still forming")
    data: Any = Field(
        description=(
            "ccxt's unified structure(s): a list of trades; a ticker; [ts, o, h, l, c, v] for a candle; "
            "for a book {bids, asks, nonce, resynced} (top levels)"
        )
    )

    def subject(self) -> str:
        return subjects.live_subject(self.dataset, self.exchange, self.symbol)

    def identity(self) -> Identity:
        return [
            self.dataset.value,
            self.exchange,
            self.symbol,
            self.timeframe,
            self.exchange_ts,
            content_hash(self.data),
        ]


ALL_EVENTS: tuple[type[Event], ...] = (
    RawSnapshot,
    ObjectWritten,
    BatchReady,
    Loaded,
    DeadLetter,
    KnownGap,
    SchemaDrift,
    Alert,
    RunReport,
    Anomaly,
    LiveUpdate,
)
