"""Series checkpoints in a JetStream KV bucket, updated with compare-and-set.

Two transformer replicas (or two concurrent handlers) advancing one series both read revision r;
only the first update to r+1 succeeds, the other re-reads and recomputes. So every committed
state was computed from the state before it and sees every candle committed before it.
"""

from __future__ import annotations

import re
from typing import Protocol

from cryptoflow_contracts import symbol_token
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from .checkpoints import SeriesState

_KEY_UNSAFE = re.compile(r"[^-/_=.a-zA-Z0-9]")


def series_key(exchange: str, symbol: str, timeframe: str) -> str:
    """`binance.BTC-USDT.1m`; characters KV keys do not allow are written as _xx (hex)."""
    raw = f"{exchange}.{symbol_token(symbol)}.{timeframe}"
    return _KEY_UNSAFE.sub(lambda m: f"_{ord(m[0]):02x}", raw)


class StateStore(Protocol):
    async def load(self, key: str) -> tuple[SeriesState, int]:
        """The state and its revision (0: none yet)."""
        ...

    async def save(self, key: str, state: SeriesState, revision: int) -> bool:
        """Store `state` if the key is still at `revision`; False when someone else moved it."""
        ...


class KvStateStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def load(self, key: str) -> tuple[SeriesState, int]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return SeriesState(), 0
        if entry.value is None or entry.revision is None:
            return SeriesState(), 0
        return SeriesState.from_json(entry.value), entry.revision

    async def save(self, key: str, state: SeriesState, revision: int) -> bool:
        try:
            if revision == 0:
                await self.kv.create(key, state.to_json())
            else:
                await self.kv.update(key, state.to_json(), last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True


class MemoryStateStore:
    """Checkpoints kept in this process only (the rebuild, tests): the KV store's compare-and-set
    and its JSON round trip, so a step sees exactly the state the KV store would give it."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[bytes, int]] = {}

    async def load(self, key: str) -> tuple[SeriesState, int]:
        entry = self._entries.get(key)
        if entry is None:
            return SeriesState(), 0
        return SeriesState.from_json(entry[0]), entry[1]

    async def save(self, key: str, state: SeriesState, revision: int) -> bool:
        current = self._entries.get(key, (b"", 0))[1]
        if current != revision:
            return False
        self._entries[key] = (state.to_json(), revision + 1)
        return True
