"""An independent reference: the definitions of docs/decisions/0012, as plain Python loops.

Written from the definitions, not from the transformer's code: no Polars, no shared helpers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Candle = tuple[int, float, float, float, float, float]  # ts, open, high, low, close, volume


def ema(values: Sequence[float | None], n: int) -> list[float | None]:
    """α = 2/(n+1), seeded with the simple mean of the first n defined inputs."""
    alpha = 2.0 / (n + 1)
    out: list[float | None] = []
    seen: list[float] = []
    prev: float | None = None
    for x in values:
        if x is None:
            out.append(None)
            continue
        if prev is None:
            seen.append(x)
            if len(seen) == n:
                prev = sum(seen) / n
            out.append(prev)
        else:
            prev = alpha * x + (1 - alpha) * prev
            out.append(prev)
    return out


def wilder_rsi(closes: Sequence[float], n: int = 14) -> list[float | None]:
    out: list[float | None] = [None]
    gains: list[float] = []
    losses: list[float] = []
    avg_gain = avg_loss = None
    for i in range(1, len(closes)):
        change = closes[i] - closes[i - 1]
        gain, loss = max(change, 0.0), max(-change, 0.0)
        if avg_gain is None or avg_loss is None:
            gains.append(gain)
            losses.append(loss)
            if len(gains) == n:
                avg_gain, avg_loss = sum(gains) / n, sum(losses) / n
        else:
            avg_gain = (avg_gain * (n - 1) + gain) / n
            avg_loss = (avg_loss * (n - 1) + loss) / n
        if avg_gain is None or avg_loss is None:
            out.append(None)
        elif avg_gain + avg_loss == 0:
            out.append(50.0)
        else:
            out.append(100.0 - 100.0 / (1.0 + avg_gain / avg_loss) if avg_loss > 0 else 100.0)
    return out


def indicators(candles: Sequence[Candle]) -> list[dict[str, float | None]]:
    closes = [c[4] for c in candles]
    fast, slow = ema(closes, 12), ema(closes, 26)
    macd = [f - s if f is not None and s is not None else None for f, s in zip(fast, slow, strict=True)]
    signal = ema(macd, 9)
    rsi = wilder_rsi(closes)
    rows: list[dict[str, float | None]] = []
    day = None
    pv = v = 0.0
    for i, (ts, _open, high, low, close, volume) in enumerate(candles):
        if ts // 86_400_000 != day:
            day, pv, v = ts // 86_400_000, 0.0, 0.0
        pv += (high + low + close) / 3.0 * volume
        v += volume
        row: dict[str, float | None] = {
            "rsi_14": rsi[i],
            "macd": macd[i],
            "macd_signal": signal[i],
            "macd_hist": macd[i] - signal[i] if macd[i] is not None and signal[i] is not None else None,  # type: ignore[operator]
            "vwap": pv / v if v > 0 else None,
            "bb_mid": None,
            "bb_upper": None,
            "bb_lower": None,
        }
        if i >= 19:
            window = closes[i - 19 : i + 1]
            mean = sum(window) / 20
            std = math.sqrt(sum((x - mean) ** 2 for x in window) / 20)
            row.update(bb_mid=mean, bb_upper=mean + 2 * std, bb_lower=mean - 2 * std)
        rows.append(row)
    return rows


def resample(
    candles: Sequence[Candle], step_ms: int, source_ms: int = 60_000
) -> list[tuple[int, float, float, float, float, float, bool]]:
    """(bucket, open, high, low, close, volume, final) over the candles that exist; final once the
    newest candle has closed at or after the bucket's end."""
    newest_close = max(c[0] for c in candles) + source_ms
    buckets: dict[int, list[Candle]] = {}
    for candle in sorted(candles):
        buckets.setdefault(candle[0] - candle[0] % step_ms, []).append(candle)
    out = []
    for start, members in sorted(buckets.items()):
        volume = 0.0
        for m in members:
            volume += m[5]
        out.append(
            (
                start,
                members[0][1],
                max(m[2] for m in members),
                min(m[3] for m in members),
                members[-1][4],
                volume,
                start + step_ms <= newest_close,
            )
        )
    return out


def anomalies(candles: Sequence[Candle], window: int, z: float, spike: float) -> list[tuple[int, str, float]]:
    out = []
    closes = [c[4] for c in candles]
    returns = [None] + [closes[i] / closes[i - 1] - 1.0 for i in range(1, len(closes))]
    for i, candle in enumerate(candles):
        if i >= window + 1:
            past = returns[i - window : i]
            mean = sum(past) / window  # type: ignore[arg-type]
            std = math.sqrt(sum((r - mean) ** 2 for r in past) / window)  # type: ignore[operator]
            if std > 0 and abs((returns[i] - mean) / std) >= z:  # type: ignore[operator]
                out.append((candle[0], "return_zscore", (returns[i] - mean) / std))  # type: ignore[operator]
        if i >= window:
            mean_volume = sum(c[5] for c in candles[i - window : i]) / window
            if mean_volume > 0 and candle[5] / mean_volume >= spike:
                out.append((candle[0], "volume_spike", candle[5] / mean_volume))
    return sorted(out)
