"""What to extract: exchanges × symbols × datasets × schedule, from one YAML file or the env.

```yaml
exchanges:
  binance:
    url: http://127.0.0.1:9001      # optional: the simulator (or a proxy); live when absent
    rate_limit_ms: 100              # optional: overrides ccxt's rateLimit
    symbols: [BTC/USDT, ETH/USDT]
    datasets:
      ohlcv: {timeframes: [1m, 5m], since: 2024-01-01T00:00:00Z, poll_interval_s: 10}
      ticker: {poll_interval_s: 5}
      orderbook: {depth: 20, poll_interval_s: 5}
      trades: {poll_interval_s: 5}
```

Any dataset may be streamed instead of polled (`mode: stream`, ccxt pro's `watch*` methods;
stream_jobs.py): `trades: {mode: stream, stall_after_s: 60, batch_max: 1000, batch_ms: 250}`,
`orderbook: {mode: stream, depth: 20, publish_interval_s: 1}`, `ohlcv: {mode: stream,
timeframes: [1m], publish_forming: false}`, `ticker: {mode: stream}`.

Binance's candles may come from its bulk archives first (archive.py): `ohlcv: {source:
binance-archive, since: 2020-01-01T00:00:00Z}` reads the listed monthly and daily zips from `since`
on, then polls REST from where they stop. Its trades likewise (trade_archive.py): `trades: {source:
binance-archive, since: ...}` reads the `trades` zips, then REST by trade id from the last archived
trade; `agg_trades: {source: binance-archive, since: ...}` reads the `aggTrades` zips into
`agg_trades` as they are published (archives only).

Market-wide data comes from aggregators (aggregators.py), each polled for its top coins:

```yaml
aggregators:
  coingecko: {url: http://127.0.0.1:9001, top: 250, poll_interval_s: 60}
  coinpaprika: {poll_interval_s: 300, monthly_quota: 20000, candles: [btc-bitcoin]}
```

Per provider, `history: [<coin id>, ...]` keeps those coins' hourly price history (from
`history_since`) and `candles: [...]` their closed candles (from `candles_since`).

Their API keys are never in this file: EXTRACTOR_COINGECKO_API_KEY and EXTRACTOR_COINPAPRIKA_API_KEY.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, Literal, Protocol, Self, Union, get_args, get_origin

import yaml
from cryptoflow_contracts import TIMEFRAME_MS, Dataset
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .capabilities import capabilities


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_timeframes(value: list[str]) -> list[str]:
    for timeframe in value:
        if timeframe not in TIMEFRAME_MS:
            raise ValueError(f"unknown timeframe {timeframe!r}; known: {', '.join(TIMEFRAME_MS)}")
    return value


def check_unified_symbols(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("at least one symbol is required")
    for symbol in value:
        base, _, quote = symbol.partition("/")
        if not base or not quote or not base.isalnum() or not quote.isalnum():
            raise ValueError(f"{symbol!r} is not a unified symbol like BTC/USDT")
    return value


def check_http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def check_exchange(value: str) -> str:
    """Any exchange ccxt knows, by its ccxt id."""
    try:
        capabilities(value)
    except LookupError as exc:
        raise ValueError(str(exc)) from None
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class EnvJobs(Protocol):
    """The single-exchange settings (`ExtractorSettings`) a dataset's spec is built from without a jobs file."""

    @property
    def timeframes(self) -> list[str]: ...
    @property
    def since(self) -> datetime: ...
    @property
    def until(self) -> datetime | None: ...
    @property
    def poll_interval_s(self) -> float: ...
    @property
    def page_limit(self) -> int: ...
    @property
    def orderbook_depth(self) -> int: ...
    @property
    def mode(self) -> Mode: ...


Mode = Literal["poll", "stream"]


class DatasetSpec(_Spec):
    """One dataset's block of a jobs file; its jobs are built by `datasets.JOB_FACTORIES`."""

    # The unified ccxt method the dataset's jobs call: an exchange without it cannot have the dataset.
    ccxt_method: ClassVar[str]
    # The ccxt pro method its stream jobs call.
    watch_method: ClassVar[str]

    mode: Mode = Field(default="poll", description="poll the REST API, or stream over the exchange's websocket")
    stall_after_s: float = Field(
        default=60.0,
        gt=0,
        description="stream: reconnect (and fill the hole by REST) after this long without a message",
    )
    batch_max: int = Field(default=1000, ge=1, le=10_000, description="stream: most records in one RAW page")
    batch_ms: int = Field(default=250, ge=1, le=60_000, description="stream: longest a record waits for its page")

    @property
    def streamed(self) -> bool:
        return self.mode == "stream"

    def unsupported_by(self, exchange_id: str) -> list[str]:
        """What of this block `exchange_id` does not offer (empty: all of it), each named."""
        offered = capabilities(exchange_id)
        if not offered.offers(self.ccxt_method):
            return [f"exchange {exchange_id!r} does not offer this dataset (ccxt has no {self.ccxt_method} for it)"]
        if self.streamed and not offered.streams(self.watch_method):
            return [
                f"exchange {exchange_id!r} cannot stream this dataset (ccxt pro has no {self.watch_method} for it): "
                "use mode: poll"
            ]
        return []

    @classmethod
    def from_env(cls, env: EnvJobs) -> Self:
        """This dataset's spec from the EXTRACTOR_* variables alone."""
        raise NotImplementedError(f"{cls.__name__} cannot be configured from the environment")


ArchiveMarket = Literal["spot", "futures/um", "futures/cm"]
ARCHIVED_EXCHANGES = ("binance", "binanceusdm", "binancecoinm")


def _archive_problems(exchange_id: str, mode: Mode) -> list[str]:
    problems = []
    if exchange_id not in ARCHIVED_EXCHANGES:
        problems.append(f"source binance-archive: exchange {exchange_id!r} has no Binance bulk archives")
    if mode != "poll":
        problems.append("source binance-archive: the archives are read once, then REST polls (mode: poll)")
    return problems


class OhlcvSpec(DatasetSpec):
    ccxt_method = "fetchOHLCV"
    watch_method = "watchOHLCV"
    timeframes: list[str] = Field(default_factory=lambda: ["1m"])
    since: datetime = Field(default_factory=lambda: datetime.now(UTC) - timedelta(days=1))
    until: datetime | None = None
    poll_interval_s: float = Field(default=10.0, gt=0)
    page_limit: int = Field(default=1000, ge=1, le=1000)
    publish_forming: bool = Field(
        default=False, description="stream: also publish the forming candle (final: false), replaced once closed"
    )
    source: Literal["rest", "binance-archive"] = Field(
        default="rest",
        description="binance-archive: Binance's bulk archives (data.binance.vision) from `since` as far as they "
        "reach, then REST (poll mode)",
    )
    archive_url: str | None = Field(
        default=None, description="archive host (default: the exchange's URL when set, else data.binance.vision)"
    )
    archive_market: ArchiveMarket = Field(default="spot", description="archive tree")

    _timeframes = field_validator("timeframes")(check_timeframes)

    _since_utc = field_validator("since", "until")(_utc)

    def unsupported_by(self, exchange_id: str) -> list[str]:
        problems = super().unsupported_by(exchange_id)
        if self.source == "binance-archive":
            problems += _archive_problems(exchange_id, self.mode)
        offered = capabilities(exchange_id).timeframes
        for timeframe in self.timeframes:
            if offered and timeframe not in offered:
                known = ", ".join(sorted(offered & set(TIMEFRAME_MS), key=TIMEFRAME_MS.__getitem__))
                problems.append(f"exchange {exchange_id!r} does not offer timeframe {timeframe!r} (it offers {known})")
        return problems

    @classmethod
    def from_env(cls, env: EnvJobs) -> Self:
        return cls(
            timeframes=env.timeframes,
            since=env.since,
            until=env.until,
            poll_interval_s=env.poll_interval_s,
            page_limit=env.page_limit,
            mode=env.mode,
        )


class TickerSpec(DatasetSpec):
    ccxt_method = "fetchTicker"
    watch_method = "watchTicker"
    poll_interval_s: float = Field(default=5.0, gt=0)
    publish_interval_s: float = Field(
        default=1.0, gt=0, description="stream: a RAW page of the latest ticker at most this often (LIVE: every one)"
    )

    @classmethod
    def from_env(cls, env: EnvJobs) -> Self:
        return cls(poll_interval_s=env.poll_interval_s, mode=env.mode)


class OrderBookSpec(DatasetSpec):
    ccxt_method = "fetchOrderBook"
    watch_method = "watchOrderBook"
    depth: int = Field(default=20, ge=1, le=1000)
    poll_interval_s: float = Field(default=5.0, gt=0)
    publish_interval_s: float = Field(
        default=1.0, gt=0, description="stream: a top-`depth` snapshot to RAW this often (and at once after a resync)"
    )
    stall_after_s: float = Field(default=30.0, gt=0, description="stream: resync after this long without a delta")

    @classmethod
    def from_env(cls, env: EnvJobs) -> Self:
        return cls(depth=env.orderbook_depth, poll_interval_s=env.poll_interval_s, mode=env.mode)


class TradesSpec(DatasetSpec):
    ccxt_method = "fetchTrades"
    watch_method = "watchTrades"
    since: datetime | None = Field(default=None, description="First trade time; the newest page when unset")
    poll_interval_s: float = Field(default=5.0, gt=0)
    page_limit: int = Field(default=1000, ge=1, le=1000)
    source: Literal["rest", "binance-archive"] = Field(
        default="rest",
        description="binance-archive: Binance's trades archives from `since` (required) as far as they reach, then "
        "REST by trade id from the last archived trade (poll mode)",
    )
    archive_url: str | None = Field(
        default=None, description="archive host (default: the exchange's URL when set, else data.binance.vision)"
    )
    archive_market: ArchiveMarket = Field(default="spot", description="archive tree")

    _since_utc = field_validator("since")(_utc)

    @model_validator(mode="after")
    def _archive_needs_since(self) -> Self:
        if self.source == "binance-archive" and self.since is None:
            raise ValueError("source binance-archive: `since` is required (where the archives start)")
        return self

    def unsupported_by(self, exchange_id: str) -> list[str]:
        problems = super().unsupported_by(exchange_id)
        if self.source == "binance-archive":
            problems += _archive_problems(exchange_id, self.mode)
        return problems

    @classmethod
    def from_env(cls, env: EnvJobs) -> Self:
        return cls(poll_interval_s=env.poll_interval_s, page_limit=env.page_limit, mode=env.mode)


class AggTradesSpec(DatasetSpec):
    """Binance's aggregate trades, from its bulk archives only (decision 0056)."""

    ccxt_method = "fetchTrades"
    watch_method = "watchTrades"
    source: Literal["binance-archive"] = Field(description="binance-archive: the `aggTrades` archive files")
    since: datetime = Field(description="First aggregate time: the archives are read from here")
    poll_interval_s: float = Field(default=3600.0, gt=0, description="how often newly published files are looked for")
    archive_url: str | None = Field(
        default=None, description="archive host (default: the exchange's URL when set, else data.binance.vision)"
    )
    archive_market: ArchiveMarket = Field(default="spot", description="archive tree")

    _since_utc = field_validator("since")(_utc)

    def unsupported_by(self, exchange_id: str) -> list[str]:
        return super().unsupported_by(exchange_id) + _archive_problems(exchange_id, self.mode)

    @classmethod
    def from_env(cls, env: EnvJobs) -> Self:
        # EXTRACTOR_DATASETS=agg_trades: the archives from EXTRACTOR_SINCE (their only source).
        return cls(source="binance-archive", since=env.since, mode=env.mode)


class DatasetsSpec(_Spec):
    """The `datasets:` block: one optional field per dataset, named by its `Dataset` value."""

    ohlcv: OhlcvSpec | None = None
    ticker: TickerSpec | None = None
    orderbook: OrderBookSpec | None = None
    trades: TradesSpec | None = None
    agg_trades: AggTradesSpec | None = None

    def configured(self) -> dict[Dataset, DatasetSpec]:
        """The enabled datasets and their specs, in `Dataset` order."""
        found = {dataset: getattr(self, dataset.value, None) for dataset in Dataset}
        return {dataset: spec for dataset, spec in found.items() if spec is not None}

    def enabled(self) -> list[Dataset]:
        return list(self.configured())

    @classmethod
    def spec_type(cls, dataset: Dataset) -> type[DatasetSpec]:
        """The model of a dataset's block (`OhlcvSpec` for ohlcv...), read from the field."""
        field = cls.model_fields.get(dataset.value)
        annotation = field.annotation if field is not None else None
        options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
        for option in options:
            if isinstance(option, type) and issubclass(option, DatasetSpec):
                return option
        raise LookupError(f"dataset {dataset.value!r} has no spec: add a field to {cls.__name__}")

    @classmethod
    def from_env(cls, datasets: Iterable[Dataset], env: EnvJobs) -> DatasetsSpec:
        """The given datasets, each configured from the EXTRACTOR_* variables."""
        return cls.model_validate({dataset.value: cls.spec_type(dataset).from_env(env) for dataset in datasets})


class ExchangeSpec(_Spec):
    url: str | None = None
    rate_limit_ms: float | None = Field(default=None, gt=0)
    symbols: list[str]
    datasets: DatasetsSpec

    _url = field_validator("url")(check_http_url)
    _symbols = field_validator("symbols")(check_unified_symbols)


Provider = Literal["coingecko", "coinpaprika"]
COINPAPRIKA_MAX_TOP = 500  # /tickers comes in one body; 500 coins stay well under NATS's 1 MiB


class AggregatorSpec(_Spec):
    """One aggregator's block: its market listing (top coins by market cap, in USD), polled."""

    url: str | None = Field(default=None, description="API root replacing the provider's (the simulator)")
    top: int = Field(default=100, ge=1, le=5000, description="coins to list, by market cap")
    poll_interval_s: float = Field(default=300.0, gt=0, description="pause between listings")
    min_request_interval_s: float | None = Field(
        default=None,
        gt=0,
        description="seconds between two requests (the plan's rate limit); the provider's free plan when unset",
    )
    monthly_quota: int | None = Field(
        default=None,
        ge=1,
        description="requests per calendar month (UTC) the plan allows; none are sent once it is spent",
    )
    pro: bool = Field(default=False, description="coingecko: a Pro plan key (pro-api host and header)")
    history: list[str] = Field(
        default_factory=list,
        description="provider coin ids (bitcoin; btc-bitcoin) whose hourly price history to keep in aggregator_prices",
    )
    history_since: datetime = Field(
        default_factory=lambda: datetime.now(UTC) - timedelta(days=30), description="first point of the histories"
    )
    candles: list[str] = Field(
        default_factory=list,
        description="provider coin ids whose closed candles (coingecko: 4h; coinpaprika: 1d) to keep in "
        "aggregator_candles",
    )
    candles_since: datetime = Field(
        default_factory=lambda: datetime.now(UTC) - timedelta(days=30),
        description="first candle's open time (coingecko's 4h candles reach 30 days back)",
    )

    _url = field_validator("url")(check_http_url)
    _history_since_utc = field_validator("history_since")(_utc)
    _candles_since_utc = field_validator("candles_since")(_utc)

    @field_validator("history", "candles")
    @classmethod
    def _coin_ids(cls, value: list[str]) -> list[str]:
        for coin_id in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", coin_id):
                raise ValueError(f"{coin_id!r} is not a provider coin id like bitcoin or btc-bitcoin")
        return value


class JobsConfig(_Spec):
    exchanges: dict[str, ExchangeSpec] = Field(default_factory=dict)
    aggregators: dict[Provider, AggregatorSpec] = Field(default_factory=dict)

    @field_validator("exchanges")
    @classmethod
    def _known_exchanges(cls, value: dict[str, ExchangeSpec]) -> dict[str, ExchangeSpec]:
        for exchange_id in value:
            check_exchange(exchange_id)
        return value

    @model_validator(mode="after")
    def _some_source(self) -> Self:
        if not self.exchanges and not self.aggregators:
            raise ValueError("at least one exchange or aggregator is required")
        paprika = self.aggregators.get("coinpaprika")
        if paprika is not None and paprika.top > COINPAPRIKA_MAX_TOP:
            # Its listing comes in one body, which must fit one NATS message (1 MiB).
            raise ValueError(f"aggregators.coinpaprika.top: at most {COINPAPRIKA_MAX_TOP}, not {paprika.top}")
        return self

    @model_validator(mode="after")
    def _offered_by_the_exchange(self) -> Self:
        problems = [
            f"exchanges.{exchange_id}.datasets.{dataset.value}: {problem}"
            for exchange_id, spec in self.exchanges.items()
            for dataset, dataset_spec in spec.datasets.configured().items()
            for problem in dataset_spec.unsupported_by(exchange_id)
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class JobsConfigError(ValueError):
    """The jobs file is wrong; the message names the file and the setting."""


def load_jobs(path: Path) -> JobsConfig:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise JobsConfigError(f"{path}: cannot read jobs config: {exc}") from exc
    try:
        return JobsConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise JobsConfigError(f"{path}: {problems}") from None
