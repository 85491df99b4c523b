"""order_books gets `sequence` and `resynced`: the book's sequence number as the exchange gives it
(ccxt's nonce: Binance's and Gate's update ids, Bybit's `u`; nullable), and whether it is the first
book a stream published after syncing the book again (NOT NULL, false for the rows loaded before;
decision 0043).

The columns are added to order_books_data (at its end), and the order_books view is made again
with them after amount, in silver's column order. `resynced` is filled with false for the rows
already stored, then loses the default: like every silver column, the loader always writes it.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql, series_view

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_BEFORE = ("exchange", "symbol", "ts", "side", "level", "price", "amount")
_AFTER = ("source_event_id", "series_id", "batch_id", "loaded_at", "version")
_SERIES = ("exchange", "symbol")


def _view(columns: tuple[str, ...]) -> str:
    return series_view("order_books", columns, _SERIES)


def upgrade() -> None:
    run_sql(
        "ALTER TABLE order_books_data ADD COLUMN sequence bigint, ADD COLUMN resynced boolean NOT NULL DEFAULT false;"
        "ALTER TABLE order_books_data ALTER COLUMN resynced DROP DEFAULT;"
        + _view((*_BEFORE, "sequence", "resynced", *_AFTER))
    )


def downgrade() -> None:
    run_sql(_view((*_BEFORE, *_AFTER)) + "ALTER TABLE order_books_data DROP COLUMN sequence, DROP COLUMN resynced;")
