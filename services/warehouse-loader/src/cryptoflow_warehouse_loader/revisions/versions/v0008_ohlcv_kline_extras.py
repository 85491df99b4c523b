"""ohlcv gets the exchange's own kline fields beyond ccxt's six: quote_volume, trade_count,
taker_buy_base_volume, taker_buy_quote_volume (nullable; Binance sends them, decision 0041).

The columns are added to ohlcv_data (at its end: PostgreSQL cannot insert a column in place), and
the ohlcv view is made again with them after volume, in silver's column order.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql, series_view

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_EXTRAS = (
    ("quote_volume", "double precision"),
    ("trade_count", "bigint"),
    ("taker_buy_base_volume", "double precision"),
    ("taker_buy_quote_volume", "double precision"),
)
_BEFORE = ("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
_AFTER = ("resampled", "final", "source_event_id", "series_id", "batch_id", "loaded_at", "version")
_SERIES = ("exchange", "symbol", "timeframe")


def _view(columns: tuple[str, ...]) -> str:
    return series_view("ohlcv", columns, _SERIES)


def upgrade() -> None:
    adds = ", ".join(f"ADD COLUMN {name} {kind}" for name, kind in _EXTRAS)
    run_sql(f"ALTER TABLE ohlcv_data {adds};" + _view((*_BEFORE, *(name for name, _ in _EXTRAS), *_AFTER)))


def downgrade() -> None:
    drops = ", ".join(f"DROP COLUMN {name}" for name, _ in _EXTRAS)
    run_sql(_view((*_BEFORE, *_AFTER)) + f"ALTER TABLE ohlcv_data {drops};")
