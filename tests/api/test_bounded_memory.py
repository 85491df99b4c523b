"""A 5M-row range streams with bounded memory: the API runs in this process (uvicorn in a thread),
so the RSS measured here is the server's and the client's together, sampled while the rows flow."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pyarrow as pa
import pytest

from .support import generate_candles, new_key, serve, settings

ROWS = 5_000_000
# Far below what the range weighs (the body is ~ 0.5 GB): only streaming stays under it.
RSS_GROWTH_LIMIT = 200 * 1024 * 1024


class _Body:
    """A file-like view of a streamed response body, for pyarrow's IPC stream reader."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self.total = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self.total += len(chunk)
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def stream_and_measure(url: str, key: str) -> tuple[int, int, int, int]:
    """Rows and bytes read, RSS before and the highest RSS while reading."""
    process = psutil.Process()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
        # A first small request: the libraries' first-use allocations are not the stream's.
        client.get("/v1/ohlcv", params={"format": "arrow", "limit": 1000}).raise_for_status()
        baseline = process.memory_info().rss
        peak = baseline
        rows = 0
        params = {"exchange": "binance", "symbol": "GEN/USDT", "timeframe": "1m", "format": "arrow"}
        with client.stream("GET", "/v1/ohlcv", params=params) as response:
            response.raise_for_status()
            body = _Body(response.iter_bytes())
            reader = pa.ipc.open_stream(pa.PythonFile(body, mode="r"))  # type: ignore[arg-type]
            for batch in reader:
                rows += batch.num_rows
                peak = max(peak, process.memory_info().rss)
        return rows, body.total, baseline, peak


@pytest.mark.timeout(1200)
async def test_a_5m_row_range_streams_with_bounded_rss(
    warehouse_url: str, reader_url: str, nats_url: str, tmp_path: Path
) -> None:
    await generate_candles(warehouse_url, tmp_path, ROWS)
    key = await new_key(warehouse_url)
    with serve(settings(reader_url, nats_url)) as base:
        rows, total, baseline, peak = await asyncio.to_thread(stream_and_measure, base, key)
    assert rows == ROWS
    assert total > 2 * RSS_GROWTH_LIMIT
    assert peak - baseline < RSS_GROWTH_LIMIT, f"RSS grew by {(peak - baseline) / 2**20:.0f} MiB"
