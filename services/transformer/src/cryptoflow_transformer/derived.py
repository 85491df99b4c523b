"""Derived series of a silver OHLCV batch: resampled candles, indicators, anomalies.

Per exchange·symbol·timeframe: load the series' checkpoints (KV), go on from the newest one before
the batch (a batch after everything seen needs nothing but itself; a late one re-reads the silver
candles after an older checkpoint), compare-and-set the new checkpoint, then write the outputs under
content-derived keys and return the events announcing them. Rationale: docs/decisions/0012.

Derived series are of closed candles only. A candle still forming (`final` false: a stream's
`publish_forming` page) is in silver and the warehouse until the closed one replaces it, but no
series step takes it (nor the history a late batch re-reads, series_history.py): its indicators
and anomalies would describe a candle that is not what the exchange closed (an anomaly, once
announced, cannot be withdrawn), and a resampled bucket is final once the newest 1m candle's close
reaches the bucket's end, which a forming candle's has not. The closed candle then comes as the
next candle of its series, so it costs no recomputation either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
from cryptoflow_contracts import Anomaly, BatchReady, Dataset, ObjectWritten, symbol_token
from cryptoflow_contracts.silver import INDICATORS, OHLCV
from cryptoflow_native import OHLCV_EXTRAS
from cryptoflow_runtime import Lake
from cryptoflow_runtime.lake import sha256_hex

from .indicators import INDICATOR_COLUMNS
from .schemas import polars_schema
from .series import Advanced, AnomalyRules, advance
from .series_history import RESAMPLED_PREFIX, candle_columns, candles_after, merged
from .silver_files import to_parquet
from .state_store import StateStore, series_key

log = logging.getLogger(__name__)


class SeriesContentionError(Exception):
    """Other writers kept moving a series' checkpoint; the batch is retried later."""


@dataclass(frozen=True)
class DerivedConfig:
    resample_to: dict[str, int] = field(default_factory=dict)  # target timeframe → ms, from 1m candles
    indicators: bool = False
    anomalies: bool = False
    rules: AnomalyRules = field(default_factory=AnomalyRules)
    checkpoints_kept: int = 16
    cas_attempts: int = 8

    @property
    def enabled(self) -> bool:
        return bool(self.resample_to) or self.indicators or self.anomalies


@dataclass
class DerivedOutputs:
    batches: list[BatchReady] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)


@dataclass(frozen=True)
class SeriesStep:
    exchange: str
    symbol: str
    timeframe: str
    advanced: Advanced
    from_ts: int  # the batch's first candle: outputs before it did not change


async def derive(
    lake: Lake, store: StateStore, config: DerivedConfig, silver: pl.DataFrame, written: ObjectWritten
) -> DerivedOutputs:
    """Everything derived from one silver OHLCV batch (native, closed candles only), written and ready to announce."""
    outputs = DerivedOutputs()
    native = silver.filter(~pl.col("resampled") & pl.col("final"))
    for exchange, symbol, timeframe in native.select("exchange", "symbol", "timeframe").unique().sort(pl.all()).rows():
        rows = native.filter(
            (pl.col("exchange") == exchange) & (pl.col("symbol") == symbol) & (pl.col("timeframe") == timeframe)
        )
        batch = rows.select(candle_columns()).sort("ts_ms")
        step = await advance_series(lake, store, config, exchange, symbol, timeframe, batch)
        await write_outputs(lake, config, step, written, outputs)
    return outputs


async def advance_series(
    lake: Lake,
    store: StateStore,
    config: DerivedConfig,
    exchange: str,
    symbol: str,
    timeframe: str,
    batch: pl.DataFrame,
) -> SeriesStep:
    key = series_key(exchange, symbol, timeframe)
    targets = config.resample_to if timeframe == "1m" else {}
    first = int(batch["ts_ms"].min())  # type: ignore[arg-type]
    for _ in range(config.cas_attempts):
        state, revision = await store.load(key)
        start = state.before(first)
        if start is not None and start == state.newest:
            candles = batch  # in order: nothing after the checkpoint but this batch
        else:
            history = await candles_after(lake, exchange, symbol, timeframe, start.last_ts if start else None)
            candles = merged(history, batch)
            log.info(
                "series recomputed from an earlier checkpoint",
                extra={"series": key, "from_ts": start.last_ts if start else None, "candles": candles.height},
            )
        advanced = advance(start, candles, targets, config.rules)
        if await store.save(key, state.advanced(first, advanced.end, config.checkpoints_kept), revision):
            return SeriesStep(exchange, symbol, timeframe, advanced, first)
    raise SeriesContentionError(f"{key}: checkpoint moved by others {config.cas_attempts} times in a row")


def derived_key(table_folder: str, exchange: str, symbol: str, first_ts: int, data: bytes, prefix: str = "") -> str:
    date = datetime.fromtimestamp(first_ts / 1000, UTC).strftime("%Y-%m-%d")
    partition = f"silver/{table_folder}/exchange={exchange}/symbol={symbol_token(symbol)}/date={date}"
    return f"{partition}/{prefix}{first_ts}-{sha256_hex(data)[:24]}.parquet"


async def write_outputs(
    lake: Lake, config: DerivedConfig, step: SeriesStep, written: ObjectWritten, outputs: DerivedOutputs
) -> None:
    identity = [
        pl.lit(step.exchange).alias("exchange"),
        pl.lit(step.symbol).alias("symbol"),
    ]
    if config.indicators:
        rows = step.advanced.indicators.filter(pl.col("ts_ms") >= step.from_ts).select(
            *identity,
            pl.lit(step.timeframe).alias("timeframe"),
            pl.from_epoch("ts_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
            *INDICATOR_COLUMNS,
            "source_event_id",
        )
        frame = rows.cast(pl.Schema(polars_schema(INDICATORS)))
        outputs.batches.append(await store_batch(lake, INDICATORS.name, frame, written, step, prefix=""))
    if step.advanced.resampled.height:
        rows = step.advanced.resampled.select(
            *identity,
            "timeframe",
            pl.from_epoch("ts_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
            "open",
            "high",
            "low",
            "close",
            "volume",
            # The kline extras are the exchange's own, for its own candles: none on resampled ones.
            *[pl.lit(None, dtype=pl.Float64).alias(name) for name in OHLCV_EXTRAS],
            pl.lit(True).alias("resampled"),
            "final",
            pl.lit(written.event_id).alias("source_event_id"),
        )
        frame = rows.cast(pl.Schema(polars_schema(OHLCV)))
        outputs.batches.append(await store_batch(lake, OHLCV.name, frame, written, step, prefix=RESAMPLED_PREFIX))
    if config.anomalies:
        found = step.advanced.anomalies.filter(pl.col("ts_ms") >= step.from_ts)
        outputs.anomalies.extend(
            Anomaly(
                exchange=step.exchange,
                symbol=step.symbol,
                timeframe=step.timeframe,
                ts=row["ts_ms"],
                kind=row["kind"],
                value=row["value"],
                threshold=row["threshold"],
                window=config.rules.window,
                close=row["close"],
                volume=row["volume"],
                source_event_id=row["source_event_id"],
            )
            for row in found.iter_rows(named=True)  # one event per flagged candle: few, by definition
        )


async def store_batch(
    lake: Lake, table: str, frame: pl.DataFrame, written: ObjectWritten, step: SeriesStep, prefix: str
) -> BatchReady:
    parquet = to_parquet(frame, table)
    ts_ms = frame["ts"].dt.epoch("ms")
    first, last = int(ts_ms.min()), int(ts_ms.max())  # type: ignore[arg-type]
    key = derived_key(table, step.exchange, step.symbol, first, parquet, prefix)
    await lake.put(key, parquet)
    return BatchReady(
        dataset=Dataset.OHLCV,
        table=table,
        exchange=step.exchange,
        lake_url=lake.url,
        key=key,
        sha256=sha256_hex(parquet),
        rows=frame.height,
        quarantined_rows=0,
        min_ts=first,
        max_ts=last,
        source_key=written.key,
        source_event_id=written.event_id,
        quality_score=1.0,
    )
