"""Trades: incremental by (timestamp, id), never the same trade twice across pages or restarts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptoflow_contracts import Dataset, RawSnapshot

from .checkpoints import CheckpointStore, checkpoint_key
from .metrics import FRESHNESS_LAG, NEWEST_RECORD, TRADES_PUBLISHED
from .session import ExchangeSession
from .validation import validate_trades

log = logging.getLogger(__name__)


def new_trades(trades: list[dict[str, Any]], after_ts: int | None, seen_ids_at_ts: set[str]) -> list[dict[str, Any]]:
    """Trades after the cursor. Many trades share one millisecond, so the cursor is the last
    timestamp plus the ids already published at exactly that timestamp."""
    fresh = []
    for trade in trades:
        ts = trade["timestamp"]
        if after_ts is not None and (ts < after_ts or (ts == after_ts and str(trade["id"]) in seen_ids_at_ts)):
            continue
        fresh.append(trade)
    # Unique by id, in (timestamp, id) order: overlapping pages can repeat trades.
    unique = {str(t["id"]): t for t in fresh}
    return sorted(unique.values(), key=lambda t: (t["timestamp"], _id_order(t["id"])))


def _id_order(trade_id: Any) -> tuple[int, str]:
    text = str(trade_id)
    return (int(text), text) if text.isdigit() else (0, text)


@dataclass
class TradesJob:
    session: ExchangeSession
    symbol: str
    since_ms: int | None
    page_limit: int
    checkpoints: CheckpointStore

    @property
    def key(self) -> str:
        return checkpoint_key(self.session.exchange_id, self.symbol, Dataset.TRADES, None)

    @property
    def name(self) -> str:
        return f"{self.session.exchange_id} {self.symbol} trades"

    async def catch_up(self, now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> int:
        state = await self.checkpoints.state(self.key)
        after_ts: int | None = state.get("last_ts", self.since_ms) if state else self.since_ms
        seen: set[str] = set(state.get("ids_at_last_ts", [])) if state else set()
        exchange = self.session.exchange
        published = 0
        while True:
            since = after_ts
            page: list[dict[str, Any]] = await self.session.fetch(
                Dataset.TRADES,
                self.symbol,
                # Called before the loop moves on, so binding `since` late is safe.
                lambda: exchange.fetch_trades(self.symbol, since, self.page_limit),  # noqa: B023
                validate_trades,
            )
            trades = new_trades(page, after_ts, seen)
            if not trades:
                break
            fetched_at = datetime.now(UTC)
            snapshot = RawSnapshot(
                dataset=Dataset.TRADES,
                exchange=self.session.exchange_id,
                symbol=self.symbol,
                fetched_at=fetched_at,
                request={"symbol": self.symbol, "since": since, "limit": self.page_limit},
                payload=trades,
                first_ts=trades[0]["timestamp"],
                last_ts=trades[-1]["timestamp"],
                final=True,
            )
            await self.session.publisher.snapshot(snapshot)
            last_ts = int(trades[-1]["timestamp"])
            at_last = {str(t["id"]) for t in trades if t["timestamp"] == last_ts}
            seen = (seen | at_last) if last_ts == after_ts else at_last
            after_ts = last_ts
            await self.checkpoints.put_state(self.key, {"last_ts": last_ts, "ids_at_last_ts": sorted(seen)})
            published += len(trades)
            TRADES_PUBLISHED.labels(self.session.exchange_id, self.symbol).inc(len(trades))
            NEWEST_RECORD.labels(self.session.exchange_id, self.symbol, "trades", "").set(last_ts / 1000)
            FRESHNESS_LAG.labels(self.session.exchange_id, self.symbol, "trades", "").set(
                max(0.0, (now_ms() - last_ts) / 1000)
            )
            if len(page) < self.page_limit:
                break
        return published
