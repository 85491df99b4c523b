"""One step of a series' derived data: from a checkpoint, over the candles after it.

`advance(start, candles)` gives the indicators, resampled candles and anomalies of `candles`, and
the checkpoint after them. Its values equal those of one computation over the whole series, bit
for bit, however the series is cut into steps: a checkpoint holds the recursions' last values and
enough recent candles for every window, and every sum runs in the same order either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from .checkpoints import WARMUP, Bucket, Checkpoint
from .indicators import (
    DAY_MS,
    EMA_FAST,
    EMA_SLOW,
    INDICATOR_COLUMNS,
    RSI_N,
    SIGNAL_N,
    bollinger,
    bollinger_mean,
    ema_alpha,
    recursive_mean,
    rsi,
    seeded_mean_from_start,
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

    windows = (
        frame.with_columns(bollinger_mean(), *anomaly_means(rules))
        .with_columns(*bollinger(), *anomaly_measures(rules))
        .slice(new_from)
    )
    new = windows.with_columns(
        pl.Series("ema_fast", fast),
        pl.Series("ema_slow", slow),
        pl.Series("macd", macd),
        pl.Series("macd_signal", signal),
        pl.Series("avg_gain", avg_gain),
        pl.Series("avg_loss", avg_loss),
    ).with_columns(
        (pl.col("macd") - pl.col("macd_signal")).alias("macd_hist"),
        rsi(pl.col("avg_gain"), pl.col("avg_loss")).alias("rsi_14"),
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


def anomaly_means(rules: AnomalyRules) -> list[pl.Expr]:
    """Each row's return, and the mean return and volume of the `window` rows before it."""
    lags = range(rules.window, 0, -1)
    ret = pl.col("close") / pl.col("close").shift(1) - 1.0
    return [
        ret.alias("ret"),
        (window_fold(ret, lags) / rules.window).alias("ret_mean"),
        (window_fold(pl.col("volume"), lags) / rules.window).alias("volume_mean"),
    ]


def anomaly_measures(rules: AnomalyRules) -> list[pl.Expr]:
    """return_z and volume_ratio of each row against the `window` rows before it (null until full)."""
    w = rules.window
    std_ret = (squared_deviations(pl.col("ret"), range(w, 0, -1), pl.col("ret_mean")) / w).sqrt()
    index = pl.col("index")
    return [
        pl.when((index >= w + 1) & (std_ret > 0))
        .then((pl.col("ret") - pl.col("ret_mean")) / std_ret)
        .alias("return_z"),
        pl.when((index >= w) & (pl.col("volume_mean") > 0))
        .then(pl.col("volume") / pl.col("volume_mean"))
        .alias("volume_ratio"),
    ]


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
    newest_close = candles["ts_ms"].max() + source_ms  # type: ignore[operator]
    for timeframe, step in resample_to.items():
        rows = candles.select("ts_ms", "open", "high", "low", "close", "volume").with_columns(
            (pl.col("ts_ms") - pl.col("ts_ms") % step).alias("bucket")
        )
        if (partial := open_buckets.get(timeframe)) is not None:
            seed = pl.DataFrame(
                {
                    "ts_ms": [partial.last_ts],
                    "open": [partial.open],
                    "high": [partial.high],
                    "low": [partial.low],
                    "close": [partial.close],
                    "volume": [partial.volume],
                    "bucket": [partial.start],
                },
                schema=rows.schema,
            )
            rows = pl.concat([seed, rows])
        grouped = (
            rows.group_by("bucket", maintain_order=True)
            .agg(
                pl.col("open").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").last(),
                pl.col("volume").cum_sum().last(),
                pl.col("ts_ms").max().alias("last_ts"),
            )
            .sort("bucket")
        )
        frames.append(
            grouped.select(
                pl.lit(timeframe).alias("timeframe"),
                pl.col("bucket").alias("ts_ms"),
                "open",
                "high",
                "low",
                "close",
                "volume",
                (pl.col("bucket") + step <= newest_close).alias("final"),
            )
        )
        last = grouped.row(grouped.height - 1, named=True)
        buckets[timeframe] = Bucket(
            start=int(last["bucket"]),
            open=float(last["open"]),
            high=float(last["high"]),
            low=float(last["low"]),
            close=float(last["close"]),
            volume=float(last["volume"]),
            last_ts=int(last["last_ts"]),
        )
    schema = {
        "timeframe": pl.String(),
        "ts_ms": pl.Int64(),
        **dict.fromkeys(["open", "high", "low", "close", "volume"], pl.Float64()),
        "final": pl.Boolean(),
    }
    return (pl.concat(frames) if frames else pl.DataFrame(schema=schema)), buckets
