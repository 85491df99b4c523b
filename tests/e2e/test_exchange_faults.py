"""Exchange faults: 429 + Retry-After, 5xx burst, timeout, cut and truncated bodies, a missing
and an added field. The extractor waits and retries as specified, dead-letters the bad pages,
reports the drift, and the warehouse ends complete and duplicate-free."""

from __future__ import annotations

import json

import aiohttp
import orjson

from .harness import Pipeline
from .test_end_to_end import N, assert_ohlcv_equals_simulator, start_random_walk

OHLCV = "binance.ohlcv"
PLAN = [
    {"kind": "rate_limit", "endpoint": OHLCV, "after": 2, "retry_after": 1.5},
    {"kind": "server_error", "endpoint": OHLCV, "after": 4, "count": 3},
    {"kind": "delay", "endpoint": OHLCV, "after": 8, "seconds": 3},
    {"kind": "truncate", "endpoint": OHLCV, "after": 10, "cut": "connection"},
    {"kind": "truncate", "endpoint": OHLCV, "after": 12, "cut": "body"},
    {"kind": "drop_field", "endpoint": OHLCV, "after": 14, "field": "close"},
    {"kind": "add_field", "endpoint": OHLCV, "after": 16, "field": "12", "value": "extra"},
]


async def sim_stats(sim_url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(f"{sim_url}/_sim/stats") as response:
        stats: dict[str, object] = await response.json()
    return stats


async def test_exchange_faults_are_survived_and_the_warehouse_is_complete(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    plan = pipe.workdir / "faults.json"
    plan.write_text(json.dumps(PLAN))
    start_random_walk(pipe, ["--faults", str(plan)])
    pipe.extra_env.update(
        {"EXTRACTOR_PAGE_LIMIT": "20", "EXTRACTOR_TIMEOUT_MS": "1500", "EXTRACTOR_SYMBOLS": "BTC/USDT,ETH/USDT"}
    )
    pipe.start_all()

    async def complete() -> bool:
        return await pipe.ohlcv_count() == 2 * N

    await pipe.wait_for(f"{2 * N} rows despite the faults", complete, timeout=180)
    await assert_ohlcv_equals_simulator(pipe)
    assert pipe.sim_url
    stats = await sim_stats(pipe.sim_url)

    served = stats["faults_served"][OHLCV]  # type: ignore[index]
    assert served == {"rate_limit": 1, "server_error": 3, "delay": 1, "truncate": 2, "drop_field": 1, "add_field": 1}

    # Retry-After honoured by every job of the exchange: apart from a request already on the wire
    # when the 429 went out, nothing reached the exchange until 1.5 s after it.
    log = [entry for entry in stats["log"] if entry["endpoint"] == OHLCV]  # type: ignore[union-attr]
    limited_at = next(entry["t_ms"] for entry in log if "rate_limit" in entry["faults"])
    during_pause = [e["t_ms"] - limited_at for e in log if limited_at + 100 < e["t_ms"] < limited_at + 1500]
    assert during_pause == [], f"requests {during_pause} ms after the 429"
    assert any(e["t_ms"] >= limited_at + 1500 for e in log)

    letters = [orjson.loads(m.data) for m in await pipe.stream_messages("DLQ")]
    extractor_letters = [d for d in letters if d["stage"] == "extractor"]
    reasons = sorted(d["reason"] for d in extractor_letters)
    assert any(r == "response is not valid JSON" for r in reasons), reasons
    assert any(r.startswith("schema drift: vanished") for r in reasons), reasons
    assert all(d["payload"] for d in extractor_letters), "a dead-lettered page carries the raw body"

    drifts = [orjson.loads(m.data) for m in await pipe.stream_messages("DRIFT")]
    assert any(d["breaking"] and d["vanished"] for d in drifts)
    assert any(not d["breaking"] and "$[][12]" in d["appeared"] for d in drifts)
