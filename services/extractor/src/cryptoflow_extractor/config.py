"""Extractor settings (env prefix EXTRACTOR_; NATS_URL shared)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from cryptoflow_contracts import TIMEFRAME_MS
from cryptoflow_runtime import ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

SUPPORTED_EXCHANGES = ("binance",)


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ExtractorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXTRACTOR_", extra="ignore", populate_by_name=True)

    exchange: str = Field(default="binance", description="ccxt exchange id")
    exchange_url: str | None = Field(
        default=None, description="Base URL replacing the exchange's API host (the simulator); live when unset"
    )
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTC/USDT", "ETH/USDT"], description="Unified symbols, comma-separated"
    )
    timeframes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["1m"], description="e.g. 1m,5m")
    since: datetime = Field(
        default=datetime(2024, 1, 1, tzinfo=UTC), description="First candle to extract (ISO 8601, UTC)"
    )
    until: datetime | None = Field(default=None, description="Stop after this time (backfills); live when unset")
    poll_interval_s: float = Field(default=10.0, gt=0, description="Pause between polls once caught up")
    page_limit: int = Field(default=1000, ge=1, le=1000, description="Candles per request")
    checkpoint_bucket: str = Field(default="cryptoflow_checkpoints", description="JetStream KV bucket")
    timeout_ms: int = Field(default=10_000, ge=100, description="ccxt request timeout")

    _split_symbols = field_validator("symbols", "timeframes", mode="before")(_split)

    @field_validator("exchange")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        if value not in SUPPORTED_EXCHANGES:
            raise ValueError(f"unknown exchange {value!r}; supported: {', '.join(SUPPORTED_EXCHANGES)}")
        return value

    @field_validator("exchange_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("symbols")
    @classmethod
    def _unified_symbols(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one symbol is required")
        for symbol in value:
            base, _, quote = symbol.partition("/")
            if not base or not quote or not base.isalnum() or not quote.isalnum():
                raise ValueError(f"{symbol!r} is not a unified symbol like BTC/USDT")
        return value

    @field_validator("timeframes")
    @classmethod
    def _known_timeframes(cls, value: list[str]) -> list[str]:
        for timeframe in value:
            if timeframe not in TIMEFRAME_MS:
                raise ValueError(f"unknown timeframe {timeframe!r}; known: {', '.join(TIMEFRAME_MS)}")
        return value

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
