"""Extractor settings (env prefix EXTRACTOR_; NATS_URL shared).

Jobs come from a YAML file (`EXTRACTOR_CONFIG`, see jobs.py) or, without one, from the
single-exchange variables below, so a quick start needs no file at all.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from cryptoflow_contracts import Dataset
from cryptoflow_runtime import ConfigError, ServiceSettings
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from .jobs import (
    DatasetsSpec,
    ExchangeSpec,
    JobsConfig,
    JobsConfigError,
    Mode,
    Provider,
    check_exchange,
    check_http_url,
    check_timeframes,
    check_unified_symbols,
    load_jobs,
)


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ExtractorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXTRACTOR_", extra="ignore", populate_by_name=True)

    config: Path | None = Field(default=None, description="YAML jobs file; the variables below when unset")
    exchange: str = Field(
        default="binance",
        description="ccxt exchange id (without a jobs file): any exchange ccxt knows, e.g. binance, kraken, okx",
    )
    exchange_url: str | None = Field(
        default=None, description="Base URL replacing the exchange's API host (the simulator); live when unset"
    )
    exchange_urls: dict[str, str] = Field(
        default_factory=dict, description='Per-exchange base URLs, JSON: {"bybit": "http://..."}; override the file'
    )
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTC/USDT", "ETH/USDT"], description="Unified symbols, comma-separated"
    )
    datasets: Annotated[list[Dataset], NoDecode] = Field(
        default_factory=lambda: [Dataset.OHLCV],
        description=f"Datasets to extract, comma-separated: {','.join(DatasetsSpec.model_fields)}",
    )
    timeframes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["1m"], description="Candle timeframes, comma-separated (e.g. 1m,5m)"
    )
    since: datetime = Field(
        default=datetime(2024, 1, 1, tzinfo=UTC), description="First candle to extract (ISO 8601, UTC)"
    )
    until: datetime | None = Field(default=None, description="Stop after this time (backfills); live when unset")
    poll_interval_s: float = Field(default=10.0, gt=0, description="Pause between polls once caught up")
    page_limit: int = Field(default=1000, ge=1, le=1000, description="Records per request")
    orderbook_depth: int = Field(default=20, ge=1, le=1000, description="Order-book levels per side")
    mode: Mode = Field(
        default="poll", description="poll: REST polling; stream: the exchange's websocket streams (ccxt pro)"
    )
    rate_limit_ms: float | None = Field(default=None, gt=0, description="Override ccxt's rateLimit (ms/request)")
    checkpoint_bucket: str = Field(
        default="cryptoflow_checkpoints", description="JetStream KV bucket of the jobs' checkpoints"
    )
    lease_bucket: str = Field(
        default="cryptoflow_extractor_leases",
        description="JetStream KV bucket of the job leases replicas share the jobs by (its TTL: the lease time)",
    )
    lease_ttl_s: float = Field(
        default=20.0,
        ge=1.0,
        description="Lease time: a dead replica's jobs move to the others this long after its last renewal",
    )
    replica_id: str | None = Field(
        default=None,
        pattern=r"^[-_=.a-zA-Z0-9]+$",
        description="This replica's name in the lease bucket, unique per running process (default: <hostname>-<pid>)",
    )
    timeout_ms: int = Field(default=10_000, ge=100, description="ccxt request timeout (ms)")
    max_attempts: int = Field(default=6, ge=1, description="Attempts per request before the poll fails")
    breaker_threshold: int = Field(default=5, ge=1, description="Consecutive failures that open the circuit")
    breaker_cooldown_s: float = Field(default=30.0, gt=0, description="Open-circuit cool-down")
    max_poll_backoff_s: float = Field(default=60.0, gt=0, description="Longest wait before re-polling a failing job")
    coingecko_api_key: SecretStr | None = Field(
        default=None, description="CoinGecko API key (Demo; Pro with `pro: true` in the jobs file); never logged"
    )
    coinpaprika_api_key: SecretStr | None = Field(
        default=None, description="CoinPaprika API key (paid plans; the free plan needs none); never logged"
    )

    _split_lists = field_validator("symbols", "timeframes", "datasets", mode="before")(_split)

    _exchange = field_validator("exchange")(check_exchange)
    _url = field_validator("exchange_url")(check_http_url)
    _symbols = field_validator("symbols")(check_unified_symbols)
    _timeframes = field_validator("timeframes")(check_timeframes)

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @property
    def replica(self) -> str:
        """This process's replica name: EXTRACTOR_REPLICA_ID, or one no other process has."""
        return self.replica_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def lease_round_s(self) -> float:
        """How often a replica renews its leases and looks for free ones."""
        return self.lease_ttl_s / 5

    @property
    def request_lease_s(self) -> float:
        """Lease time a job must have left to send a request: the request's timeout, and a second."""
        return self.timeout_ms / 1000 + 1.0

    @model_validator(mode="after")
    def _lease_outlives_requests(self) -> ExtractorSettings:
        # Renewed every round, a lease has at least 4/5 of its time left, 3/5 after one failed round:
        # that must cover a request, or a replica would refuse its own requests.
        if 0.6 * self.lease_ttl_s < self.request_lease_s:
            raise ValueError(
                f"EXTRACTOR_LEASE_TTL_S={self.lease_ttl_s:g} is too short for EXTRACTOR_TIMEOUT_MS={self.timeout_ms}: "
                f"a lease must be at least {self.request_lease_s / 0.6:.1f}s (timeout + 1 s, over 0.6)"
            )
        return self

    def jobs(self) -> JobsConfig:
        """The jobs to run: the file with env URL overrides, or the env alone. Raises ConfigError."""
        if self.config is not None:
            try:
                config = load_jobs(self.config)
            except JobsConfigError as exc:
                raise ConfigError(f"EXTRACTOR_CONFIG: {exc}") from None
        else:
            config = JobsConfig(exchanges={self.exchange: self._env_exchange()})
        for exchange_id, url in self.exchange_urls.items():
            if exchange_id not in config.exchanges:
                raise ConfigError(f"EXTRACTOR_EXCHANGE_URLS: {exchange_id!r} has no jobs configured")
            config.exchanges[exchange_id] = config.exchanges[exchange_id].model_copy(update={"url": url})
        return config

    def aggregator_key(self, provider: Provider) -> SecretStr | None:
        return self.coingecko_api_key if provider == "coingecko" else self.coinpaprika_api_key

    def _env_exchange(self) -> ExchangeSpec:
        datasets = DatasetsSpec.from_env(dict.fromkeys(self.datasets), self)
        return ExchangeSpec(
            url=self.exchange_url, rate_limit_ms=self.rate_limit_ms, symbols=self.symbols, datasets=datasets
        )
