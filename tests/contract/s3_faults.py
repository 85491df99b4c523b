"""A fault-injecting HTTP proxy in front of the S3 endpoint: answers chosen PUTs with S3 errors.

Real HTTP, real botocore retry handling: the proxy forwards everything else to the real endpoint
(moto server) untouched, and counts what it saw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

# Hop-by-hop and length headers: aiohttp sets its own when it re-sends a body.
_DROP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class FaultPlan:
    """Answer the first `count` requests (PUTs unless `methods` says otherwise) whose path contains
    `path_contains` with `status`/`code`."""

    count: int
    path_contains: str = "/bronze/"
    methods: tuple[str, ...] = ("PUT",)
    status: int = 503
    code: str = "SlowDown"
    injected: int = 0
    forwarded_puts: list[str] = field(default_factory=list)

    def matches(self, request: web.Request) -> bool:
        return request.method in self.methods and self.path_contains in request.path

    def error_body(self) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{self.code}</Code><Message>injected by the test proxy</Message>"
            "<RequestId>fault</RequestId></Error>"
        ).encode()


@asynccontextmanager
async def faulty_s3_proxy(upstream: str, plan: FaultPlan) -> AsyncIterator[str]:
    """Serve the proxy on a free 127.0.0.1 port; yield its URL."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if plan.matches(request) and plan.injected < plan.count:
            plan.injected += 1
            return web.Response(status=plan.status, body=plan.error_body(), content_type="application/xml")
        if plan.matches(request):
            plan.forwarded_puts.append(request.path)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        async with session.request(
            request.method, upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as upstream_response:
            payload = await upstream_response.read()
            reply_headers = {k: v for k, v in upstream_response.headers.items() if k.lower() not in _DROP}
            return web.Response(status=upstream_response.status, body=payload, headers=reply_headers)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()
