"""trades gets `maker_side`: the resting order's side as the exchange states it (Binance's
isBuyerMaker: buy when the buyer was the maker), nullable (issue 11, decision 0041).

The column is added to trades_data (at its end), and the trades view is made again with it after
side, in silver's column order.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql, series_view

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BEFORE = ("exchange", "symbol", "trade_id", "ts", "price", "amount", "side")
_AFTER = ("source_event_id", "series_id", "batch_id", "loaded_at", "version")
_SERIES = ("exchange", "symbol")


def _view(columns: tuple[str, ...]) -> str:
    return series_view("trades", columns, _SERIES)


def upgrade() -> None:
    run_sql("ALTER TABLE trades_data ADD COLUMN maker_side text;" + _view((*_BEFORE, "maker_side", *_AFTER)))


def downgrade() -> None:
    run_sql(_view((*_BEFORE, *_AFTER)) + "ALTER TABLE trades_data DROP COLUMN maker_side;")
