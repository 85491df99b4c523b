"""Trades: incremental by (timestamp, id), never the same trade twice across pages or restarts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from cryptoflow_contracts import Dataset, KnownGap, RawSnapshot

from .checkpoints import CheckpointStore, checkpoint_key
from .metrics import FRESHNESS_LAG, NEWEST_RECORD, TRADES_PUBLISHED
from .native import UnifiedCall
from .profiles import profile
from .session import ExchangeSession, Page
from .validation import Trade, validate_trades

log = logging.getLogger(__name__)


class PageTrade(NamedTuple):
    """One trade of a page: its typed view, and ccxt's trade as returned (what is published)."""

    trade: Trade
    raw: dict[str, Any]


def trades_of(page: Page[list[Trade]]) -> list[PageTrade]:
    return list(map(PageTrade, page.parsed, page.result))


def new_trades(trades: list[PageTrade], after_ts: int | None, seen_ids_at_ts: set[str]) -> list[PageTrade]:
    """Trades after the cursor. Many trades share one millisecond, so the cursor is the last
    timestamp plus the ids already published at exactly that timestamp."""
    fresh = []
    for row in trades:
        ts, trade_id = row.trade.timestamp, row.trade.id
        if after_ts is not None and (ts < after_ts or (ts == after_ts and trade_id in seen_ids_at_ts)):
            continue
        fresh.append(row)
    # Unique by id, in (timestamp, id) order: overlapping pages can repeat trades.
    unique = {row.trade.id: row for row in fresh}
    return sorted(unique.values(), key=lambda row: (row.trade.timestamp, _id_order(row.trade.id)))


def _id_order(trade_id: str) -> tuple[int, str]:
    return (int(trade_id), trade_id) if trade_id.isdigit() else (0, trade_id)


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
        published = 0

        while True:
            since = after_ts
            page = await self.session.fetch(
                Dataset.TRADES,
                self.symbol,
                UnifiedCall("fetchTrades", (self.symbol, since, self.page_limit)),
                validate_trades,
            )
            trades = new_trades(trades_of(page), after_ts, seen)
            if not trades:
                break
            if published == 0 and not profile(self.session.exchange_id).trades_history:
                await self._record_unreachable(page, trades, after_ts)
            fetched_at = datetime.now(UTC)
            snapshot = RawSnapshot(
                schema_version=2,
                native=[page.native],
                dataset=Dataset.TRADES,
                exchange=self.session.exchange_id,
                symbol=self.symbol,
                fetched_at=fetched_at,
                request={"symbol": self.symbol, "since": since, "limit": self.page_limit},
                payload=[row.raw for row in trades],
                first_ts=trades[0].trade.timestamp,
                last_ts=trades[-1].trade.timestamp,
                final=True,
            )
            await self.session.publisher.snapshot(snapshot)
            last_ts = trades[-1].trade.timestamp
            at_last = {row.trade.id for row in trades if row.trade.timestamp == last_ts}
            seen = (seen | at_last) if last_ts == after_ts else at_last
            after_ts = last_ts
            await self.checkpoints.put_state(self.key, {"last_ts": last_ts, "ids_at_last_ts": sorted(seen)})
            published += len(trades)
            TRADES_PUBLISHED.labels(self.session.exchange_id, self.symbol).inc(len(trades))
            NEWEST_RECORD.labels(self.session.exchange_id, self.symbol, "trades", "").set(last_ts / 1000)
            FRESHNESS_LAG.labels(self.session.exchange_id, self.symbol, "trades", "").set(
                max(0.0, (now_ms() - last_ts) / 1000)
            )
            if len(page.parsed) < self.page_limit:
                break
        return published

    async def _record_unreachable(self, page: Page[list[Trade]], trades: list[PageTrade], after_ts: int | None) -> None:
        """An exchange that serves only its newest trades: when that page is full and begins after
        our cursor, the trades in between may exist and cannot be fetched. Recorded, not hidden
        (`missing` 0: their number is unknown)."""
        oldest = trades[0].trade.timestamp
        if after_ts is None or len(page.parsed) < self.page_limit or oldest <= after_ts + 1:
            return
        log.warning(
            "trades between the checkpoint and the exchange's newest page cannot be fetched",
            extra={"job": self.name, "from_ts": after_ts + 1, "to_ts": oldest - 1},
        )
        await self.session.publisher.gap(
            KnownGap(
                exchange=self.session.exchange_id,
                symbol=self.symbol,
                dataset=Dataset.TRADES,
                start_ts=after_ts + 1,
                end_ts=oldest - 1,
                missing=0,
                detected_at=datetime.now(UTC),
            )
        )
