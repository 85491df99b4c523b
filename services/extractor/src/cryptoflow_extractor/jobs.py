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
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from cryptoflow_contracts import TIMEFRAME_MS, Dataset
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SUPPORTED_EXCHANGES = ("binance", "bybit", "gate")


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
    if value not in SUPPORTED_EXCHANGES:
        raise ValueError(f"unknown exchange {value!r}; supported: {', '.join(SUPPORTED_EXCHANGES)}")
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class OhlcvSpec(_Spec):
    timeframes: list[str] = Field(default_factory=lambda: ["1m"])
    since: datetime = Field(default_factory=lambda: datetime.now(UTC) - timedelta(days=1))
    until: datetime | None = None
    poll_interval_s: float = Field(default=10.0, gt=0)
    page_limit: int = Field(default=1000, ge=1, le=1000)

    _timeframes = field_validator("timeframes")(check_timeframes)

    _since_utc = field_validator("since", "until")(_utc)


class TickerSpec(_Spec):
    poll_interval_s: float = Field(default=5.0, gt=0)


class OrderBookSpec(_Spec):
    depth: int = Field(default=20, ge=1, le=1000)
    poll_interval_s: float = Field(default=5.0, gt=0)


class TradesSpec(_Spec):
    since: datetime | None = Field(default=None, description="First trade time; the newest page when unset")
    poll_interval_s: float = Field(default=5.0, gt=0)
    page_limit: int = Field(default=1000, ge=1, le=1000)

    _since_utc = field_validator("since")(_utc)


class DatasetsSpec(_Spec):
    ohlcv: OhlcvSpec | None = None
    ticker: TickerSpec | None = None
    orderbook: OrderBookSpec | None = None
    trades: TradesSpec | None = None

    def enabled(self) -> list[Dataset]:
        return [dataset for dataset in Dataset if getattr(self, dataset.value) is not None]


class ExchangeSpec(_Spec):
    url: str | None = None
    rate_limit_ms: float | None = Field(default=None, gt=0)
    symbols: list[str]
    datasets: DatasetsSpec

    _url = field_validator("url")(check_http_url)
    _symbols = field_validator("symbols")(check_unified_symbols)


class JobsConfig(_Spec):
    exchanges: dict[str, ExchangeSpec]

    @field_validator("exchanges")
    @classmethod
    def _known_exchanges(cls, value: dict[str, ExchangeSpec]) -> dict[str, ExchangeSpec]:
        if not value:
            raise ValueError("at least one exchange is required")
        for exchange_id in value:
            check_exchange(exchange_id)
        return value


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
