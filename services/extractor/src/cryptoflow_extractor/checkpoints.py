"""Where each exchange·symbol·dataset·timeframe stopped, in a JetStream KV bucket."""

from __future__ import annotations

from typing import Any

import orjson
from cryptoflow_contracts import Dataset, symbol_token
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue


def checkpoint_key(exchange: str, symbol: str, dataset: Dataset, timeframe: str | None) -> str:
    parts = [exchange, symbol_token(symbol), dataset.value]
    if timeframe:
        parts.append(timeframe)
    return ".".join(parts)


class CheckpointStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def next_since(self, key: str) -> int | None:
        """Time (ms) of the first record not yet published, or None when never run."""
        state = await self.state(key)
        return None if state is None else int(state["next_since"])

    async def advance(self, key: str, next_since: int, last_ts: int) -> None:
        await self.put_state(key, {"next_since": next_since, "last_ts": last_ts})

    async def state(self, key: str) -> dict[str, Any] | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        value: dict[str, Any] = orjson.loads(entry.value)
        return value

    async def put_state(self, key: str, state: dict[str, Any]) -> None:
        await self.kv.put(key, orjson.dumps(state))
