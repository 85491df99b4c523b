"""One step of a series' derived data: from a checkpoint, over the candles after it.

`advance(start, candles)` gives the indicators, resampled candles and anomalies of `candles`, and
the checkpoint after them. Its values equal those of one computation over the whole series, bit
for bit, however the series is cut into steps: a checkpoint holds the recursions' last values and
enough recent candles for every window, and every sum runs in the same order either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from .checkpoints import WARMUP, Bucket, Checkpoint
from .indicators import (
    DAY_MS,
    EMA_FAST,
    EMA_SLOW,
    INDICATOR_COLUMNS,
    RSI_N,
    SIGNAL_N,
    FloatArray,
    bollinger,
    ema_alpha,
    per,
    recursive_mean,
    rsi,
    seeded_mean_from_start,
    shifted,
    squared_deviations,
    typical_price_volume,
    window_fold,
)

CANDLE_SCHEMA = pl.Schema(
    {
        "ts_ms": pl.Int64(),
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Float64(),
        "source_event_id": pl.String(),
    }
)


RESAMPLED_SCHEMA = pl.Schema(
    {
        "timeframe": pl.String(),
        "ts_ms": pl.Int64(),
        **dict.fromkeys(["open", "high", "low", "close", "volume"], pl.Float64()),
        "final": pl.Boolean(),
    }
)


@dataclass(frozen=True)
class AnomalyRules:
    """Return z-score: the candle's simple return against the `window` returns before it (population
    std); volume spike: the candle's volume over the mean volume of the `window` candles before it."""

    window: int = 30
    return_z: float = 4.0
    volume_spike: float = 5.0


@dataclass(frozen=True)
class Advanced:
    indicators: pl.DataFrame  # ts_ms, INDICATOR_COLUMNS, source_event_id: one row per candle
    resampled: pl.DataFrame  # timeframe, ts_ms, open, high, low, close, volume, final
    anomalies: pl.DataFrame  # ts_ms, kind, value, threshold, close, volume, source_event_id
    end: Checkpoint


def tail_length(rules: AnomalyRules) -> int:
    return max(WARMUP, rules.window + 2)


def advance(
    start: Checkpoint | None,
    candles: pl.DataFrame,
    resample_to: dict[str, int],
    rules: AnomalyRules,
) -> Advanced:
    """`candles` (CANDLE_SCHEMA, sorted by ts_ms, all after `start`) → their derived data and the next checkpoint."""
    count_before = start.count if start else 0
    tail = pl.DataFrame(
        {
            "ts_ms": start.tail_ts if start else [],
            "close": start.tail_close if start else [],
            "volume": start.tail_volume if start else [],
        },
        schema={"ts_ms": pl.Int64(), "close": pl.Float64(), "volume": pl.Float64()},
    )
    new_from = tail.height
    frame = (
        pl.concat([tail, candles.select(CANDLE_SCHEMA.names())], how="diagonal_relaxed")
        .with_row_index("local")
        .with_columns((pl.col("local").cast(pl.Int64) + (count_before - new_from)).alias("index"))
    )
    closes = frame["close"]
    # While a series is younger than WARMUP its checkpoint holds all of it: compute from its start.
    # Later every recursion is seeded, and goes on from the checkpoint's values.
    from_start = start is None or count_before < WARMUP
    change = closes - closes.shift(1)
    gains, losses = change.clip(lower_bound=0.0), (-change).clip(lower_bound=0.0)
    if from_start:
        fast = seeded_mean_from_start(closes, EMA_FAST, ema_alpha(EMA_FAST))
        slow = seeded_mean_from_start(closes, EMA_SLOW, ema_alpha(EMA_SLOW))
        macd_all = fast - slow
        signal = seeded_mean_from_start(macd_all, SIGNAL_N, ema_alpha(SIGNAL_N)).slice(new_from)
        avg_gain = seeded_mean_from_start(gains, RSI_N, 1.0 / RSI_N).slice(new_from)
        avg_loss = seeded_mean_from_start(losses, RSI_N, 1.0 / RSI_N).slice(new_from)
        fast, slow = fast.slice(new_from), slow.slice(new_from)
    else:
        assert start is not None and None not in (start.ema_fast, start.ema_slow, start.macd_signal)
        new_closes = closes.slice(new_from)
        fast = recursive_mean(start.ema_fast, new_closes, ema_alpha(EMA_FAST))  # type: ignore[arg-type]
        slow = recursive_mean(start.ema_slow, new_closes, ema_alpha(EMA_SLOW))  # type: ignore[arg-type]
        signal = recursive_mean(start.macd_signal, fast - slow, ema_alpha(SIGNAL_N))  # type: ignore[arg-type]
        avg_gain = recursive_mean(start.avg_gain, gains.slice(new_from), 1.0 / RSI_N)  # type: ignore[arg-type]
        avg_loss = recursive_mean(start.avg_loss, losses.slice(new_from), 1.0 / RSI_N)  # type: ignore[arg-type]
    macd = fast - slow

    close = closes.to_numpy()
    index = frame["index"].to_numpy()
    measures = {
        **bollinger(close, index),
        **anomaly_measures(close, frame["volume"].to_numpy(), index, rules),
    }
    new = (
        frame.slice(new_from)
        .with_columns(
            *(pl.Series(name, values[new_from:], nan_to_null=True) for name, values in measures.items()),
            pl.Series("ema_fast", fast),
            pl.Series("ema_slow", slow),
            pl.Series("macd", macd),
            pl.Series("macd_signal", signal),
            pl.Series("avg_gain", avg_gain),
            pl.Series("avg_loss", avg_loss),
        )
        .with_columns(
            (pl.col("macd") - pl.col("macd_signal")).alias("macd_hist"),
            rsi(pl.col("avg_gain"), pl.col("avg_loss")).alias("rsi_14"),
        )
    )
    new, vwap_end = with_vwap(new, start)
    indicators = new.select("ts_ms", *INDICATOR_COLUMNS, "source_event_id")
    resampled, buckets = resample(candles, start.buckets if start else {}, resample_to)

    keep = tail_length(rules)
    recent = frame.select("ts_ms", "close", "volume").tail(keep)
    last = new.row(new.height - 1, named=True)
    end = Checkpoint(
        last_ts=int(last["ts_ms"]),
        count=count_before + candles.height,
        tail_ts=recent["ts_ms"].to_list(),
        tail_close=recent["close"].to_list(),
        tail_volume=recent["volume"].to_list(),
        ema_fast=last["ema_fast"],
        ema_slow=last["ema_slow"],
        macd_signal=last["macd_signal"],
        avg_gain=last["avg_gain"],
        avg_loss=last["avg_loss"],
        vwap_day=vwap_end[0],
        vwap_pv=vwap_end[1],
        vwap_volume=vwap_end[2],
        buckets=buckets,
    )
    return Advanced(indicators=indicators, resampled=resampled, anomalies=anomalies(new, rules), end=end)


def with_vwap(new: pl.DataFrame, start: Checkpoint | None) -> tuple[pl.DataFrame, tuple[int, float, float]]:
    """Cumulative Σ(typical·volume) and Σ volume per UTC day, going on from the checkpoint's day."""
    rows = new.select(
        (pl.col("ts_ms") // DAY_MS).alias("day"), typical_price_volume().alias("pv"), pl.col("volume").alias("v")
    )
    seeded = start is not None and start.vwap_day is not None
    if seeded:
        assert start is not None
        seed = pl.DataFrame(
            {"day": [start.vwap_day], "pv": [start.vwap_pv], "v": [start.vwap_volume]}, schema=rows.schema
        )
        rows = pl.concat([seed, rows])
    sums = rows.select(
        pl.col("day"), pl.col("pv").cum_sum().over("day").alias("pv"), pl.col("v").cum_sum().over("day").alias("v")
    )
    if seeded:
        sums = sums.slice(1)
    vwap = pl.when(pl.col("v") > 0).then(pl.col("pv") / pl.col("v")).otherwise(None)
    last = sums.row(sums.height - 1)
    return new.with_columns(sums.select(vwap.alias("vwap")).to_series()), (int(last[0]), float(last[1]), float(last[2]))


def anomaly_measures(
    close: FloatArray, volume: FloatArray, index: npt.NDArray[np.int64], rules: AnomalyRules
) -> dict[str, FloatArray]:
    """return_z and volume_ratio of each row against the `window` rows before it (NaN, i.e. null,
    until full): the row's simple return against the mean and population std of the returns of
    the `window` rows before it; its volume over their mean volume."""
    w = rules.window
    lags = range(w, 0, -1)
    ret = close / shifted(close, 1) - 1.0
    ret_mean = window_fold(ret, lags) * per(w)
    volume_mean = window_fold(volume, lags) * per(w)
    std_ret = np.sqrt(squared_deviations(ret, lags, ret_mean) * per(w))
    with np.errstate(invalid="ignore", divide="ignore"):  # the rows masked out below
        return_z = np.where((index >= w + 1) & (std_ret > 0), (ret - ret_mean) / std_ret, np.nan)
        volume_ratio = np.where((index >= w) & (volume_mean > 0), volume / volume_mean, np.nan)
    return {"return_z": return_z, "volume_ratio": volume_ratio}


def anomalies(new: pl.DataFrame, rules: AnomalyRules) -> pl.DataFrame:
    common = [pl.col("ts_ms"), pl.col("close"), pl.col("volume"), pl.col("source_event_id")]
    returns = new.filter(pl.col("return_z").abs() >= rules.return_z).select(
        *common,
        pl.lit("return_zscore").alias("kind"),
        pl.col("return_z").alias("value"),
        pl.lit(rules.return_z).alias("threshold"),
    )
    volumes = new.filter(pl.col("volume_ratio") >= rules.volume_spike).select(
        *common,
        pl.lit("volume_spike").alias("kind"),
        pl.col("volume_ratio").alias("value"),
        pl.lit(rules.volume_spike).alias("threshold"),
    )
    return pl.concat([returns, volumes]).sort("ts_ms", "kind")


def resample(
    candles: pl.DataFrame, open_buckets: dict[str, Bucket], resample_to: dict[str, int], source_ms: int = 60_000
) -> tuple[pl.DataFrame, dict[str, Bucket]]:
    """Candles of each target timeframe from these (finer) candles and the checkpoint's open buckets.

    Buckets are UTC epoch multiples of the target; open = first, high = max, low = min, close = last,
    volume = Σ (oldest first) of the candles that exist. final: the bucket's end ≤ the newest candle's close
    (ts + `source_ms`), i.e. no candle of the bucket can still arrive.
    Every bucket the candles touch is returned, and the checkpoint's open bucket too (now final, or grown).
    """
    frames = []
    buckets: dict[str, Bucket] = {}
    ts = candles["ts_ms"].to_numpy()
    values = {name: candles[name].to_numpy() for name in ("open", "high", "low", "close", "volume")}
    newest_close = int(ts.max()) + source_ms
    for timeframe, step in resample_to.items():
        rows_ts, rows = ts, values
        if (partial := open_buckets.get(timeframe)) is not None:
            rows_ts = np.concatenate(([partial.last_ts], ts))
            rows = {name: np.concatenate(([getattr(partial, name)], column)) for name, column in values.items()}
        grouped = group_buckets(rows_ts, rows, step)
        frames.append(
            pl.DataFrame(
                {
                    "timeframe": [timeframe] * grouped["bucket"].shape[0],
                    "ts_ms": grouped["bucket"],
                    **{name: grouped[name] for name in ("open", "high", "low", "close", "volume")},
                    "final": grouped["bucket"] + step <= newest_close,
                },
                schema=RESAMPLED_SCHEMA,
            )
        )
        buckets[timeframe] = Bucket(
            start=int(grouped["bucket"][-1]),
            open=float(grouped["open"][-1]),
            high=float(grouped["high"][-1]),
            low=float(grouped["low"][-1]),
            close=float(grouped["close"][-1]),
            volume=float(grouped["volume"][-1]),
            last_ts=int(grouped["last_ts"][-1]),
        )
    return (pl.concat(frames) if frames else pl.DataFrame(schema=RESAMPLED_SCHEMA)), buckets


def group_buckets(ts: npt.NDArray[np.int64], rows: dict[str, FloatArray], step: int) -> dict[str, npt.NDArray[Any]]:
    """Per bucket (ts − ts mod step), in bucket order, rows in their order within it: open first,
    high max, low min, close last, volume summed one row at a time from the first (Polars'
    `cum_sum().last()`: the same additions in the same order), last_ts the newest."""
    bucket = ts - ts % step
    order = np.argsort(bucket, kind="stable")
    if not (order == np.arange(order.shape[0])).all():
        bucket, ts = bucket[order], ts[order]
        rows = {name: column[order] for name, column in rows.items()}
    starts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    ends = np.concatenate((starts[1:], [bucket.shape[0]]))
    volume = rows["volume"]
    return {
        "bucket": bucket[starts],
        "open": rows["open"][starts],
        "high": np.maximum.reduceat(rows["high"], starts),
        "low": np.minimum.reduceat(rows["low"], starts),
        "close": rows["close"][ends - 1],
        "volume": np.array([np.add.accumulate(volume[a:b])[-1] for a, b in zip(starts, ends, strict=True)]),
        "last_ts": np.maximum.reduceat(ts, starts),
    }
