"""Hostile messages for every consumed event type, generated with hypothesis (fixed seed).

Each message starts from a valid event of its type and is then left alone or damaged one way:
a field dropped, added or given a hostile value (NaN, ±inf, 1e308, negative, out-of-range times,
unicode, path and SQL-looking names), a future schema version, bytes that are not JSON, JSON cut
short, or a large padding field. The oracle (`Accounting`) then demands that each one ended in
exactly one place: its side effect, or a DeadLetter naming its subject.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

MESSAGES = int(os.environ.get("FUZZ_MESSAGES", "1000"))
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))

HOSTILE_NAMES = [
    "../../etc",
    "bin/ance",
    "bin.ance",
    "BINANCE",
    "ｂｉｎａｎｃｅ",
    "x' OR '1'='1",
    "",
    "a" * 300,
    "*",
    ">",
    "nul\x00l",
]
HOSTILE_SYMBOLS = [
    "../../x/y",
    "BTC/USDT'; DROP TABLE ohlcv;--",
    "BTC.X/USDT",
    "€/$",
    "BTC/USDT/EXTRA",
    "*/>",
    "BTC",
    "ＢＴＣ/USDT",
]
HOSTILE_TIMES = [-60_000, 0, 7_258_118_400_000, 10**16, 2**63 - 1, -(2**63), 2**64]
HOSTILE_NUMBERS: list[Any] = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, -1.0, 0.0, 5e-324, 10**30]
HOSTILE_VALUES: list[Any] = [*HOSTILE_NAMES, *HOSTILE_TIMES, *HOSTILE_NUMBERS, None, [], {}, [[1]], {"$ne": 1}, True]

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
minute_times = st.integers(min_value=0, max_value=60 * 24 * 30).map(lambda m: T0 + m * 60_000)
prices = st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)
hostile = st.sampled_from(HOSTILE_VALUES) | st.text(max_size=40) | st.integers() | st.floats()


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@st.composite
def candle(draw: st.DrawFn) -> list[Any]:
    ts = draw(minute_times)
    low = draw(prices)
    high = low * draw(st.floats(min_value=1.0, max_value=1.1))
    return [ts, low, high, low, high, draw(st.floats(min_value=0, max_value=1e5))]


@st.composite
def damaged(draw: st.DrawFn, base: dict[str, Any], names: list[str], times: list[str]) -> bytes:
    """The valid event `base`, left alone or damaged one way, as the bytes published."""
    event = dict(base)
    how = draw(
        st.sampled_from(
            ["valid", "valid", "valid", "drop", "extra", "retype", "future", "name", "time", "garbage", "cut", "pad"]
        )
    )
    if how == "drop" and event:
        event.pop(draw(st.sampled_from(sorted(event))))
    elif how == "extra":
        event[draw(st.text(min_size=1, max_size=12))] = draw(hostile)
    elif how == "retype":
        event[draw(st.sampled_from(sorted(event)))] = draw(hostile)
    elif how == "future":
        event["schema_version"] = draw(st.integers(min_value=2, max_value=10**9))
    elif how == "name" and names:
        event[draw(st.sampled_from(names))] = draw(st.sampled_from(HOSTILE_NAMES + HOSTILE_SYMBOLS))
    elif how == "time" and times:
        event[draw(st.sampled_from(times))] = draw(st.sampled_from(HOSTILE_TIMES))
    elif how == "garbage":
        return draw(st.binary(min_size=0, max_size=200))
    elif how == "pad":
        event["padding"] = "x" * draw(st.integers(min_value=1_000, max_value=64_000))
    text = json.dumps(event, allow_nan=True)  # NaN and Infinity as their (non-standard) literals
    if how == "cut":
        text = text[: draw(st.integers(min_value=0, max_value=max(len(text) - 1, 0)))]
    return text.encode()


def generate(strategy: st.SearchStrategy[bytes], count: int = MESSAGES) -> list[bytes]:
    """`count` messages drawn from `strategy`, the same ones on every run (fixed seed)."""
    drawn: list[bytes] = []

    @seed(SEED)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(message: bytes) -> None:
        drawn.append(message)

    collect()
    # hypothesis may stop early when a space is small; top up with its own draws, never with guesses
    while len(drawn) < count:
        more = len(drawn)
        collect()
        if len(drawn) == more:
            break
    return drawn[:count]


def raw_snapshots() -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        candles = draw(st.lists(candle(), min_size=1, max_size=5))
        if draw(st.booleans()):  # a hostile number inside an otherwise good page
            row = draw(st.integers(min_value=0, max_value=len(candles) - 1))
            candles[row][draw(st.integers(min_value=0, max_value=5))] = draw(
                st.sampled_from(HOSTILE_NUMBERS + HOSTILE_TIMES)
            )
        ts = [c[0] for c in candles if isinstance(c[0], int)]
        base = {
            "dataset": draw(st.sampled_from(["ohlcv", "ohlcv", "ohlcv", "trades"])),
            "exchange": draw(st.sampled_from(["binance", "gate"])),
            "symbol": draw(st.sampled_from(["BTC/USDT", "ETH/USDT", "SOL/USDT:USDT"])),
            "timeframe": "1m",
            "fetched_at": iso(T0),
            "request": {"limit": len(candles)},
            "payload": candles,
            "first_ts": min(ts) if ts else None,
            "last_ts": max(ts) if ts else None,
        }
        return draw(damaged(base, ["exchange", "symbol"], ["first_ts", "last_ts"]))

    return build()


def from_bases(bases: list[dict[str, Any]], names: list[str], times: list[str]) -> st.SearchStrategy[bytes]:
    """Valid events (real objects, real files) drawn from `bases`, then damaged or not."""
    return st.sampled_from(bases).flatmap(lambda base: damaged(base, names, times))


@st.composite
def known_gaps(draw: st.DrawFn) -> bytes:
    start = draw(minute_times)
    missing = draw(st.integers(min_value=1, max_value=500))
    base = {
        "exchange": draw(st.sampled_from(["binance", "gate", "bybit"])),
        "symbol": draw(st.sampled_from(["BTC/USDT", "ETH/USDT"])),
        "dataset": "ohlcv",
        "timeframe": "1m",
        "start_ts": start,
        "end_ts": start + (missing - 1) * 60_000,
        "missing": missing,
        "detected_at": iso(T0),
    }
    return draw(damaged(base, ["exchange", "symbol"], ["start_ts", "end_ts", "missing"]))


@st.composite
def run_reports(draw: st.DrawFn) -> bytes:
    base = {
        "service": draw(st.sampled_from(["extractor", "transformer"])),
        "run_id": f"fuzz-{draw(st.integers(min_value=0, max_value=10**6))}",
        "instance": "fuzz-host",
        "seq": draw(st.integers(min_value=0, max_value=1000)),
        "status": draw(st.sampled_from(["running", "ok", "failed"])),
        "started_at": iso(T0),
        "reported_at": iso(T0 + 60_000),
        "counts": draw(st.dictionaries(st.sampled_from(["rows", "batches"]), st.integers(0, 10**6), max_size=2)),
    }
    return draw(damaged(base, ["service", "run_id"], ["seq"]))
