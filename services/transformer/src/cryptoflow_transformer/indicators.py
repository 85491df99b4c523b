"""Indicator definitions, as Polars expressions and series operations (no per-candle Python).

Exact definitions (docs/decisions/0012):
* rsi_14: Wilder. change = close − previous close; first average gain/loss = simple mean of the first
  14 changes, then avg = (prev·13 + x)/14; rsi = 100·gain/(gain + loss), 50 when both are 0.
* macd = EMA12(close) − EMA26(close); macd_signal = EMA9(macd); macd_hist = macd − macd_signal.
  Every EMA: α = 2/(n+1), seeded with the simple mean of its first n inputs.
* bb_mid/upper/lower: 20-candle simple mean of close ± 2 × population std (ddof 0).
* vwap: Σ(typical·volume)/Σ volume since the UTC day began, typical = (high+low+close)/3; null
  while the day has no volume.
A value is null until its window is full; gaps are not filled (the candles that exist, in order).

Sums run in one fixed order (oldest first) and recursions step one candle at a time, so a value
depends only on the candles up to it, never on where a computation started.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

FloatArray = npt.NDArray[np.float64]

RSI_N = 14
EMA_FAST, EMA_SLOW, SIGNAL_N = 12, 26, 9
BB_N, BB_K = 20, 2.0
DAY_MS = 86_400_000
INDICATOR_COLUMNS = ["rsi_14", "macd", "macd_signal", "macd_hist", "bb_mid", "bb_upper", "bb_lower", "vwap"]


def ema_alpha(n: int) -> float:
    return 2.0 / (n + 1)


def recursive_mean(seed: float, inputs: pl.Series, alpha: float) -> pl.Series:
    """y₀ = seed; yₜ = (1−α)·yₜ₋₁ + α·xₜ for each input, one step at a time (Polars' ewm, adjust=False)."""
    chain = pl.concat([pl.Series([seed], dtype=pl.Float64), inputs.cast(pl.Float64)])
    return chain.ewm_mean(alpha=alpha, adjust=False).slice(1)


def seeded_mean_from_start(inputs: pl.Series, n: int, alpha: float) -> pl.Series:
    """The recursion over a series from its very start (leading nulls: inputs not defined yet).

    Null until n inputs exist; the nth value is their simple mean (summed oldest first), then
    each next value steps the recursion.
    """
    out = pl.Series([None] * inputs.len(), dtype=pl.Float64)
    first = inputs.is_not_null().arg_true()
    if first.len() == 0 or first[0] + n > inputs.len():
        return out
    start = int(first[0])
    seed_at = start + n - 1
    seed = float(inputs.slice(start, n).cum_sum()[-1]) / n
    values = pl.concat([pl.Series([None] * seed_at, dtype=pl.Float64), pl.Series([seed])])
    if seed_at + 1 < inputs.len():
        values = pl.concat([values, recursive_mean(seed, inputs.slice(seed_at + 1), alpha)])
    return values


def continued(prev: float | None, inputs: pl.Series, new_from: int, n: int, alpha: float) -> pl.Series:
    """The recursion for `inputs[new_from:]`: on from `prev` (its value just before), or, when it has
    not been seeded yet, from the series start (then `inputs` holds the whole series)."""
    if prev is not None:
        return recursive_mean(prev, inputs.slice(new_from), alpha)
    return seeded_mean_from_start(inputs, n, alpha).slice(new_from)


def shifted(values: FloatArray, lag: int) -> FloatArray:
    """`values` moved `lag` rows down (Polars' shift): NaN, standing for null, where nothing precedes."""
    out = np.full(values.shape[0], np.nan)
    if lag < values.shape[0]:
        out[lag:] = values[: values.shape[0] - lag]
    return out


def window_fold(values: FloatArray, lags: range) -> FloatArray:
    """Σ of `values` at each lag, added in the order given (oldest first): ((x₋ₖ + x₋ₖ₊₁) + …).

    NumPy, not Polars expressions: the same IEEE additions one row at a time (no pairwise or
    fused arithmetic), NaN where a term is missing as null is in Polars; for the few hundred rows
    of a step a NumPy pass costs microseconds, where planning a 30-term Polars expression costs
    milliseconds.
    """
    terms = iter(lags)
    total = shifted(values, next(terms))
    for lag in terms:
        total = total + shifted(values, lag)
    return total


def per(n: int) -> float:
    """1/n: a mean over n terms is their sum times 1/n. Polars computes `sum / n`, n a literal, as
    `sum * (1/n)`, which every value computed so far (and every checkpoint) carries; so does this."""
    return 1.0 / n


def squared_deviations(values: FloatArray, lags: range, mean: FloatArray) -> FloatArray:
    """Σ (x − mean)² over the lags, oldest first (two passes: exact for flat windows, unlike Σx² − n·mean²)."""
    terms = iter(lags)
    deviation = shifted(values, next(terms)) - mean
    total = deviation * deviation
    for lag in terms:
        deviation = shifted(values, lag) - mean
        total = total + deviation * deviation
    return total


def bollinger(close: FloatArray, index: npt.NDArray[np.int64]) -> dict[str, FloatArray]:
    """bb_mid/upper/lower of each row: mean of the 20 closes ending there ± 2 × their population std
    (NaN, i.e. null, until the series has 20 candles; rows need 19 predecessors in the arrays)."""
    lags = range(BB_N - 1, -1, -1)
    mean = window_fold(close, lags) * per(BB_N)
    std = np.sqrt(squared_deviations(close, lags, mean) * per(BB_N))
    full = index >= BB_N - 1
    return {
        "bb_mid": np.where(full, mean, np.nan),
        "bb_upper": np.where(full, mean + BB_K * std, np.nan),
        "bb_lower": np.where(full, mean - BB_K * std, np.nan),
    }


def rsi(avg_gain: pl.Expr, avg_loss: pl.Expr) -> pl.Expr:
    total = avg_gain + avg_loss
    return pl.when(total > 0).then(100.0 * avg_gain / total).when(total == 0).then(50.0).otherwise(None)


def typical_price_volume() -> pl.Expr:
    return ((pl.col("high") + pl.col("low") + pl.col("close")) / 3.0) * pl.col("volume")
