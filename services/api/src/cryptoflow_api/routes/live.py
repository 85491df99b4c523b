"""GET /v1/stream (Server-Sent Events) and /v1/ws (WebSocket): public subjects as they arrive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, WebSocket
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from ..live import LiveClient, check_subjects
from ..metrics import LIVE_CLIENTS, LIVE_DROPPED, LIVE_MESSAGES
from ..problems import ProblemError
from ..state import api_state, caller

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
_SUBJECTS_HELP = "Comma-separated NATS subject patterns within the allow-list, e.g. cryptoflow.live.trades.binance.>"


async def _pump_until_done(pump: Any, client: LiveClient, receive_closed: Any) -> str:
    """Run `pump` until it ends, the client disconnects, or the client is dropped: which one."""
    tasks = {
        asyncio.create_task(pump, name="pump"): "ended",
        asyncio.create_task(client.dropped.wait(), name="dropped"): "dropped",
        asyncio.create_task(receive_closed, name="disconnected"): "disconnected",
    }
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    first = next(iter(done))
    if first.exception() is not None and tasks[first] == "ended":
        return "disconnected"  # a send failed: the client is gone
    return tasks[first]


class EventStream(Response):
    """An SSE response relaying one LiveClient; when it is dropped the response ends unfinished,
    which makes the server close the connection (nothing more can be written to it anyway)."""

    media_type = "text/event-stream"

    def __init__(self, client: LiveClient) -> None:
        # Not Response.__init__: it would add `content-length: 0` for the empty body.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def pump() -> None:
            await send({"type": "http.response.body", "body": b": connected\n\n", "more_body": True})
            while True:
                try:
                    message = await asyncio.wait_for(self.client.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                    continue
                frame = b"event: message\ndata: " + message.json() + b"\n\n"
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                LIVE_MESSAGES.labels("sse").inc()

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        LIVE_CLIENTS.labels("sse").inc()
        try:
            outcome = await _pump_until_done(pump(), self.client, disconnected())
        finally:
            LIVE_CLIENTS.labels("sse").dec()
            await self.client.close()
        if outcome == "dropped":
            LIVE_DROPPED.labels("sse").inc()
            log.info("slow live client dropped", extra={"transport": "sse"})


def router() -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["live"])

    @routes.get(
        "/stream",
        dependencies=[Depends(caller)],
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {}}, "description": "One `message` event per NATS message"}},
        summary="Public subjects as Server-Sent Events",
    )
    async def stream(request: Request, subjects: str = Query(description=_SUBJECTS_HELP)) -> Response:
        state = api_state(request)
        wanted = check_subjects(
            subjects.split(","), state.settings.live_subject_patterns, state.settings.live_max_subjects
        )
        return EventStream(await state.relay.open(wanted))

    @routes.websocket("/ws")
    async def websocket(socket: WebSocket) -> None:
        """Send `{"subscribe": [patterns]}` (or pass `subjects=`); each message comes as a text frame
        `{"subject", "data"}`. A client that falls behind is closed with code 1013 (try again later)."""
        state = api_state(socket)
        try:
            await state.gate.admit(socket)
        except ProblemError as problem:
            await socket.close(code=1008, reason=problem.detail[:120])
            return
        await socket.accept()
        try:
            if requested := socket.query_params.get("subjects"):
                patterns = requested.split(",")
            else:
                request = await socket.receive_json()
                patterns = list(request.get("subscribe", [])) if isinstance(request, dict) else []
            wanted = check_subjects(
                [str(p) for p in patterns], state.settings.live_subject_patterns, state.settings.live_max_subjects
            )
            client = await state.relay.open(wanted)
        except ProblemError as problem:
            await socket.send_json({"error": problem.detail, "status": problem.status})
            await socket.close(code=1008)
            return
        except (WebSocketDisconnect, ValueError):
            return
        await socket.send_json({"subscribed": wanted})

        async def pump() -> None:
            while True:
                message = await client.queue.get()
                await socket.send_text(message.json().decode())
                LIVE_MESSAGES.labels("ws").inc()

        async def disconnected() -> None:
            while True:
                if (await socket.receive())["type"] == "websocket.disconnect":
                    return

        LIVE_CLIENTS.labels("ws").inc()
        try:
            outcome = await _pump_until_done(pump(), client, disconnected())
        finally:
            LIVE_CLIENTS.labels("ws").dec()
            await client.close()
        if outcome == "dropped":
            LIVE_DROPPED.labels("ws").inc()
            log.info("slow live client dropped", extra={"transport": "ws"})
            # The close frame may not get through a full buffer: give it a moment, then let go.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(code=1013, reason="too slow: dropped"), 1.0)

    return routes
