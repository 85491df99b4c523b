"""trades gets `maker_side`: the resting order's side as the exchange states it (Binance's
isBuyerMaker: buy when the buyer was the maker), nullable (issue 11, decision 0041).

The column is added to trades_data (at its end), and the trades view is made again with it after
side, in silver's column order.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BEFORE = ("exchange", "symbol", "trade_id", "ts", "price", "amount", "side")
_AFTER = ("source_event_id", "series_id", "batch_id", "loaded_at", "version")
_SERIES = ("exchange", "symbol")


def _view(columns: tuple[str, ...]) -> str:
    def source(column: str) -> str:
        return "s" if column in _SERIES else "b" if column == "batch_id" else "d"

    select = ", ".join(f"{source(c)}.{c}" for c in columns)
    return f"""
    DROP VIEW trades;
    CREATE VIEW trades AS
    SELECT {select}
    FROM trades_data d
    LEFT JOIN series s ON s.series_id = d.series_id
    LEFT JOIN batches b ON b.batch_no = d.batch_no;
    GRANT SELECT ON trades TO cryptoflow_loader, cryptoflow_reader;
    """


def upgrade() -> None:
    run_sql("ALTER TABLE trades_data ADD COLUMN maker_side text;" + _view((*_BEFORE, "maker_side", *_AFTER)))


def downgrade() -> None:
    run_sql(_view((*_BEFORE, *_AFTER)) + "ALTER TABLE trades_data DROP COLUMN maker_side;")
