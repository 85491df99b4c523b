"""Transformer settings (env prefix TRANSFORMER_; NATS_URL, LAKE_URL, S3_ENDPOINT_URL shared)."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptoflow_contracts import PLAUSIBLE_MIN_TS_MS, TIMEFRAME_MS
from cryptoflow_runtime import LakeSettings, ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from .bounds import Bounds
from .derived import DerivedConfig
from .series import AnomalyRules


class TransformerSettings(ServiceSettings, LakeSettings):
    model_config = SettingsConfigDict(env_prefix="TRANSFORMER_", extra="ignore", populate_by_name=True)

    max_deliver: int = Field(default=5, ge=1, description="Deliveries before a message is dead-lettered")
    ack_wait_s: float = Field(default=120.0, gt=0, description="Redelivery timeout of an unacked message")
    durable: str = Field(default="transformer", description="JetStream durable consumer name")
    # 1: objects of one series are transformed in stream order, so each derived-series checkpoint
    # is advanced once instead of being recomputed by concurrent objects (bench/e2e.py: +43%
    # candles/s, a third fewer rows to load). More helps only when one series never has two
    # objects in flight.
    concurrency: int = Field(default=1, ge=1, le=64, description="Bronze objects processed at once")

    # Derived series (docs/decisions/0012). Off by default until the warehouse loads `indicators`
    # and keeps resampled candles apart from native ones (they share the ohlcv key).
    resample_to: str = Field(
        default="", description="Timeframes built from 1m candles, comma-separated (e.g. 5m,15m,1h,4h,1d)"
    )
    indicators: bool = Field(default=False, description="Compute indicators per exchange·symbol·timeframe")
    anomalies: bool = Field(default=False, description="Publish Anomaly events on cryptoflow.anomalies.>")
    anomaly_window: int = Field(default=30, ge=2, le=500, description="Candles an anomaly is measured against")
    anomaly_return_z: float = Field(default=4.0, gt=0, description="|return z-score| that flags a candle")
    anomaly_volume_spike: float = Field(default=5.0, gt=1, description="Volume / window mean that flags a candle")
    state_bucket: str = Field(default="cryptoflow_series_state", description="JetStream KV bucket of checkpoints")
    state_checkpoints: int = Field(default=16, ge=1, le=64, description="Checkpoints kept per series")

    # Plausible rows (bounds.py): a row outside is quarantined as ts_out_of_range / value_out_of_range.
    min_ts: datetime = Field(
        default=datetime.fromtimestamp(PLAUSIBLE_MIN_TS_MS / 1000, UTC),
        description="Earliest record time a row may carry (ISO 8601)",
    )
    max_ts_ahead_s: float = Field(
        default=86_400, ge=0, description="How far past the transformer's clock a record time may be, seconds"
    )
    max_abs_value: float = Field(
        default=1e15, gt=0, description="Largest absolute price, amount or volume a row may carry"
    )

    @field_validator("resample_to")
    @classmethod
    def _timeframes(cls, value: str) -> str:
        for timeframe in filter(None, (part.strip() for part in value.split(","))):
            if timeframe not in TIMEFRAME_MS or TIMEFRAME_MS[timeframe] <= TIMEFRAME_MS["1m"]:
                raise ValueError(f"{timeframe!r} is not a timeframe coarser than 1m ({', '.join(TIMEFRAME_MS)})")
        return value

    def bounds(self) -> Bounds:
        min_ts = self.min_ts if self.min_ts.tzinfo else self.min_ts.replace(tzinfo=UTC)
        return Bounds(
            min_ts_ms=int(min_ts.timestamp() * 1000),
            max_ts_ahead_ms=int(self.max_ts_ahead_s * 1000),
            max_abs_value=self.max_abs_value,
        )

    def derived(self) -> DerivedConfig:
        targets = [part.strip() for part in self.resample_to.split(",") if part.strip()]
        return DerivedConfig(
            resample_to={tf: TIMEFRAME_MS[tf] for tf in targets},
            indicators=self.indicators,
            anomalies=self.anomalies,
            rules=AnomalyRules(self.anomaly_window, self.anomaly_return_z, self.anomaly_volume_spike),
            checkpoints_kept=self.state_checkpoints,
        )
