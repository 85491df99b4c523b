"""The read API on a running pipeline: a candle file ingested through every stage comes back from
`GET /v1/ohlcv?…&format=csv` exactly as the file has it, and SSE and WebSocket clients receive
the pipeline's silver events in the order the SILVER stream holds them.

The brief names a DASH/BTC candle fixture; the repository has none (tests/fixtures/candles holds
ADA/BTC, ETH/BTC and XRP/ETH, see its README), so the gap-free ETH/BTC 5m file is used.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
from cryptoflow_api.keys import create_key
from websockets.asyncio.client import connect

from .harness import Pipeline, Proc
from .test_ingest import ingest

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
FIXTURE = Path(__file__).parent.parent / "fixtures" / "candles" / "binance" / "ETHBTC-5m.csv"
MAPPING = """\
columns: {ts: column_1, open: column_2, high: column_3, low: column_4, close: column_5, volume: column_6}
header: false
ts_unit: ms
exchange: binance
symbol: ETH/BTC
timeframe: 5m
"""


async def reader_login(database_url: str) -> str:
    admin = await asyncpg.connect(database_url)
    try:
        name = f"api_{uuid.uuid4().hex[:8]}"
        await admin.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE cryptoflow_reader')
    finally:
        await admin.close()
    parts = urlsplit(database_url)
    return parts._replace(netloc=f"{name}@{parts.hostname}:{parts.port}").geturl()


async def api_ready(pipe: Pipeline, proc: Proc) -> str:
    base = f"http://127.0.0.1:{proc.http_port}"

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{base}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await pipe.wait_for("the API ready", ready, timeout=60)
    return base


async def collect_sse(
    base: str, key: str, subjects: str, into: list[dict[str, Any]], subscribed: asyncio.Event
) -> None:
    async with (
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=None) as client,
        client.stream("GET", "/v1/stream", params={"subjects": subjects}) as response,
    ):
        async for line in response.aiter_lines():
            if line == ": connected":
                subscribed.set()
            elif line.startswith("data: "):
                into.append(orjson.loads(line[6:]))


async def collect_ws(
    base: str, key: str, subjects: list[str], into: list[dict[str, Any]], subscribed: asyncio.Event
) -> None:
    url = base.replace("http://", "ws://") + "/v1/ws"
    async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as socket:
        await socket.send(json.dumps({"subscribe": subjects}))
        assert "subscribed" in json.loads(await socket.recv())
        subscribed.set()
        async for message in socket:
            into.append(json.loads(message))


async def test_ohlcv_csv_of_an_ingested_candle_file_is_the_file_and_live_clients_get_silver_in_order(
    file_pipeline: Pipeline,
) -> None:
    pipe = file_pipeline
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    await pipe.wait_for(
        "the warehouse migrated", lambda: pipe.fetchval("SELECT to_regclass('api_keys') IS NOT NULL", default=False)
    )
    conn = await asyncpg.connect(pipe.database_url)
    try:
        _, key = await create_key(conn, "e2e")
    finally:
        await conn.close()
    api = pipe.start("api", env={"DATABASE_URL": await reader_login(pipe.database_url)})
    base = await api_ready(pipe, api)

    sse_events: list[dict[str, Any]] = []
    ws_events: list[dict[str, Any]] = []
    sse_on, ws_on = asyncio.Event(), asyncio.Event()
    clients = [
        asyncio.create_task(collect_sse(base, key, "cryptoflow.silver.>", sse_events, sse_on)),
        asyncio.create_task(collect_ws(base, key, ["cryptoflow.silver.ohlcv.>"], ws_events, ws_on)),
    ]
    try:
        await asyncio.wait_for(asyncio.gather(sse_on.wait(), ws_on.wait()), 30)
        mapping = pipe.workdir / "candles.yaml"
        mapping.write_text(MAPPING)
        ingest(pipe, FIXTURE, "ohlcv", mapping)
        candles = [line.split(",") for line in FIXTURE.read_text().splitlines()]

        async def loaded() -> bool:
            return await pipe.fetchval("SELECT count(*) FROM ohlcv", default=0) == len(candles)

        await pipe.wait_for("the file's candles loaded", loaded, timeout=120)

        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            response = await client.get(
                "/v1/ohlcv",
                params={"exchange": "binance", "symbol": "ETH/BTC", "timeframe": "5m", "format": "csv"},
                # The caller's trace: the API's span for the request is its child.
                headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
            )
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        header, *rows = list(csv.reader(io.StringIO(response.text)))
        assert header[:9] == ["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
        got = [
            (int(datetime.fromisoformat(row[3]).timestamp() * 1000), *(float(value) for value in row[4:9]))
            for row in rows
        ]
        assert got == [(int(c[0]), *(float(value) for value in c[1:6])) for c in candles]
        assert {tuple(row[:3]) for row in rows} == {("binance", "ETH/BTC", "5m")}

        # Live: every BatchReady the SILVER stream holds, in its order, on both clients.
        silver = [(m.subject, orjson.loads(m.data)["event_id"]) for m in await pipe.stream_messages("SILVER")]
        assert silver

        async def relayed() -> bool:
            return len(sse_events) >= len(silver) and len(ws_events) >= len(silver)

        await pipe.wait_for("the silver events relayed", relayed, timeout=30)
        assert [(e["subject"], e["data"]["event_id"]) for e in sse_events] == silver
        assert [(e["subject"], e["data"]["event_id"]) for e in ws_events] == silver
        # Its request lines name the key's name, never the key.
        log = api.log()
        assert '"caller":"e2e"' in log and key not in log
        assert f'"trace_id":"{TRACE_ID}"' in log
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
