"""Live relay against a real nats-server: SSE and WebSocket clients get the allowed subjects in
order; a subject outside the allow-list is refused; a client that stops reading is dropped while
another keeps receiving."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
import orjson
import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect

from .support import new_key, serve, settings

SUBJECT = "cryptoflow.live.trades.binance.BTC-USDT"


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield orjson.loads(line[6:])


async def ws_connect(base: str, key: str, subjects: list[str]) -> ClientConnection:
    socket_ = await connect(
        base.replace("http://", "ws://") + "/v1/ws", additional_headers={"Authorization": f"Bearer {key}"}
    )
    await socket_.send(json.dumps({"subscribe": subjects}))
    assert json.loads(await socket_.recv()) == {"subscribed": subjects}
    return socket_


async def test_sse_and_websocket_clients_receive_the_live_subjects_in_order(
    warehouse_url: str, reader_url: str, fresh_nats_url: str
) -> None:
    key = await new_key(warehouse_url)
    nc = await nats.connect(fresh_nats_url)
    with serve(settings(reader_url, fresh_nats_url)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            async with client.stream(
                "GET", "/v1/stream", params={"subjects": "cryptoflow.live.>,cryptoflow.silver.>"}
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.aiter_lines()
                assert await anext(lines) == ": connected"  # subscribed before this line is sent
                ws = await ws_connect(base, key, ["cryptoflow.live.trades.>"])
                for seq in range(200):
                    await nc.publish(SUBJECT, orjson.dumps({"seq": seq}))
                    await nc.publish("cryptoflow.raw.trades.binance.BTC-USDT", b'{"not": "public"}')
                await nc.flush()
                received_ws = [json.loads(await ws.recv()) for _ in range(200)]
                received_sse: list[dict[str, Any]] = []
                async for line in lines:
                    if line.startswith("data: "):
                        received_sse.append(orjson.loads(line[6:]))
                        if len(received_sse) == 200:
                            break
                await ws.close()
    await nc.close()
    expected = [{"subject": SUBJECT, "data": {"seq": seq}} for seq in range(200)]
    assert received_ws == expected
    assert received_sse == expected


async def test_subjects_outside_the_allow_list_are_refused(
    warehouse_url: str, reader_url: str, fresh_nats_url: str
) -> None:
    key = await new_key(warehouse_url)
    with serve(settings(reader_url, fresh_nats_url)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            for subjects in ("cryptoflow.raw.>", ">", "cryptoflow.*.trades.binance.BTC-USDT", "cryptoflow.dlq.>"):
                refused = await client.get("/v1/stream", params={"subjects": subjects})
                assert refused.status_code == 403, subjects
                assert refused.headers["content-type"] == "application/problem+json"
            assert (await client.get("/v1/stream", params={"subjects": "a..b"})).status_code == 400
            anonymous = await client.get("/v1/stream", params={"subjects": SUBJECT}, headers={"Authorization": ""})
            assert anonymous.status_code == 401
        ws = await connect(
            base.replace("http://", "ws://") + "/v1/ws", additional_headers={"Authorization": f"Bearer {key}"}
        )
        await ws.send(json.dumps({"subscribe": ["cryptoflow.raw.>"]}))
        answer = json.loads(await ws.recv())
        assert answer["status"] == 403
        await ws.wait_closed()
        assert ws.close_code == 1008
        # Without a key the WebSocket is closed before it is accepted.
        with pytest.raises(Exception):  # noqa: B017 - websockets raises InvalidStatus or ConnectionClosed by version
            unauthenticated = await connect(base.replace("http://", "ws://") + "/v1/ws")
            await unauthenticated.recv()


def _dropped(transport: str) -> float:
    return REGISTRY.get_sample_value("cryptoflow_api_live_dropped_total", {"transport": transport}) or 0.0


def _slow_sse_client(base: str, key: str) -> socket.socket:
    """An SSE client that reads its response headers and then nothing: a tiny receive buffer."""
    parts = urlsplit(base)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((parts.hostname, parts.port))
    slow.sendall(
        f"GET /v1/stream?subjects=cryptoflow.live.%3E HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = b""
    while b": connected" not in head:
        head += slow.recv(1024)
    assert head.startswith(b"HTTP/1.1 200")
    return slow


def _read_to_end(slow: socket.socket) -> bytes:
    slow.settimeout(60)
    received = bytearray()
    while chunk := slow.recv(1 << 16):
        received += chunk
    return bytes(received)


async def test_a_client_that_stops_reading_is_dropped_while_another_keeps_receiving(
    warehouse_url: str, reader_url: str, fresh_nats_url: str
) -> None:
    key = await new_key(warehouse_url)
    nc = await nats.connect(fresh_nats_url)
    padding = "x" * 4000
    with serve(settings(reader_url, fresh_nats_url, live_queue_messages=20)) as base:
        slow = await asyncio.to_thread(_slow_sse_client, base, key)
        fast = await ws_connect(base, key, ["cryptoflow.live.>"])
        dropped_before = _dropped("sse")
        seq = 0
        received: list[int] = []
        # Rounds of 10 messages, each read by the fast client before the next: it is never behind,
        # while the slow one's socket buffers and then its queue fill up.
        while _dropped("sse") == dropped_before:
            assert seq < 20_000, "the slow client was never dropped"
            for _ in range(10):
                await nc.publish(SUBJECT, orjson.dumps({"seq": seq, "padding": padding}))
                seq += 1
            await nc.flush()
            for _ in range(10):
                received.append(json.loads(await fast.recv())["data"]["seq"])
        # The fast client keeps receiving after the drop.
        for _ in range(10):
            await nc.publish(SUBJECT, orjson.dumps({"seq": seq, "padding": padding}))
            seq += 1
        await nc.flush()
        for _ in range(10):
            received.append(json.loads(await fast.recv())["data"]["seq"])
        assert received == list(range(seq))
        # The slow client's connection was closed: what it had not read, then the end.
        leftover = await asyncio.to_thread(_read_to_end, slow)
        slow.close()
        assert 0 < leftover.count(b"event: message") < seq
        await fast.close()
    await nc.close()


async def test_browser_clients_may_pass_the_key_as_a_query_parameter(
    warehouse_url: str, reader_url: str, fresh_nats_url: str
) -> None:
    # EventSource and the browser WebSocket cannot set headers: `api_key=` stands for the header.
    key = await new_key(warehouse_url)
    nc = await nats.connect(fresh_nats_url)
    with serve(settings(reader_url, fresh_nats_url)) as base:
        url = base.replace("http://", "ws://") + f"/v1/ws?api_key={key}&subjects=cryptoflow.alerts.%3E"
        async with connect(url) as ws:
            assert json.loads(await ws.recv()) == {"subscribed": ["cryptoflow.alerts.>"]}
            await nc.publish("cryptoflow.alerts.stale", b'{"rule": "stale"}')
            assert json.loads(await ws.recv()) == {"subject": "cryptoflow.alerts.stale", "data": {"rule": "stale"}}
        async with httpx.AsyncClient(base_url=base) as client:
            refused = await client.get("/v1/series", params={"api_key": "cfk_wrong"})
            assert refused.status_code == 401
    await nc.close()
