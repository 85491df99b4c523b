"""Order-book bronze (one ccxt unified book per snapshot) → `order_books` rows, one per level.

A book is checked whole: a crossed or unsorted book, or one with a bad level, is quarantined
with all its rows, each row with one reason (its own failure if it has one, else the book's).

Every level carries its book's `sequence` (ccxt's `nonce`: the exchange's update id the book is
at, polled or streamed; null where the exchange gives none) and `resynced` (true for the first
book a stream published after syncing the book again; false when absent, as in a polled book).
"""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import ORDER_BOOKS

from . import bounds
from .bronze import in_fetch_order, read_snapshots, to_float, to_int, utc_ms
from .quality import Check, CheckedRows, first_failure, non_finite, split_rows, unparsable
from .schemas import polars_schema

SILVER_SCHEMA = pl.Schema(polars_schema(ORDER_BOOKS))
LEVELS = pl.List(pl.List(pl.String()))
# Numbers and flags read as text: one bad value quarantines its book, not the whole object.
PAYLOAD = pl.Struct(
    {
        "symbol": pl.String(),
        "timestamp": pl.String(),
        "bids": LEVELS,
        "asks": LEVELS,
        "nonce": pl.String(),
        "resynced": pl.String(),
    }
)
FLAGS = {"true": True, "false": False}
SIDES = {"bid": "bids", "ask": "asks"}


def frame_from_bronze(ndjson: bytes) -> pl.DataFrame:
    """One row per level (`book` numbers the snapshot); a malformed book is one row with no side."""
    # Books numbered in fetch order: of two good books of one instant, the later fetch is kept.
    snapshots = in_fetch_order(read_snapshots(ndjson, PAYLOAD)).with_row_index("book")
    field = pl.col("payload").struct.field
    books = snapshots.with_columns(
        (pl.col("malformed") | pl.col("payload").is_null()).alias("malformed"),
        field("symbol").alias("payload_symbol"),
        field("timestamp").alias("raw_ts"),
        field("nonce").alias("raw_sequence"),
        field("resynced").alias("raw_resynced"),
    ).with_columns(
        # The book's own time, else the snapshot's (ccxt leaves it null for Binance spot).
        pl.coalesce(to_int("raw_ts"), pl.when(pl.col("raw_ts").is_null()).then(pl.col("first_ts"))).alias("ts_ms"),
        to_int("raw_sequence").alias("sequence"),
        pl.col("raw_resynced").replace_strict(FLAGS, default=None, return_dtype=pl.Boolean).alias("resynced"),
    )
    common = [
        "book", "exchange", "symbol", "payload_symbol", "raw_ts", "ts_ms", "raw_sequence", "sequence",
        "raw_resynced", "resynced", "malformed", "event_id", "fetched",
    ]  # fmt: skip
    sides = []
    for side, name in SIDES.items():
        levels = books.filter(~pl.col("malformed")).select(
            *common,
            pl.lit(side).alias("side"),
            field(name).alias("entry"),
            pl.int_ranges(0, field(name).list.len(), dtype=pl.Int64).alias("level"),
        )
        sides.append(levels.explode(["entry", "level"]).filter(pl.col("level").is_not_null()))
    broken = books.filter(pl.col("malformed")).select(
        *common,
        pl.lit(None, dtype=pl.String).alias("side"),
        pl.lit(None, dtype=pl.List(pl.String)).alias("entry"),
        pl.lit(None, dtype=pl.Int64).alias("level"),
    )
    rows = pl.concat([*sides, broken], how="vertical")
    entry = pl.col("entry").list
    return rows.select(
        pl.exclude("entry", "event_id"),
        entry.len().alias("fields"),
        entry.get(0, null_on_oob=True).alias("raw_price"),
        entry.get(1, null_on_oob=True).alias("raw_amount"),
        pl.col("event_id").alias("source_event_id"),
    ).with_columns(to_float("raw_price").alias("price"), to_float("raw_amount").alias("amount"))


def level_checks() -> list[Check]:
    """What is wrong with one level (or its book's envelope) on its own."""
    return [
        (pl.col("malformed"), "malformed_order_book"),
        (pl.col("payload_symbol").is_not_null() & (pl.col("payload_symbol") != pl.col("symbol")), "symbol_mismatch"),
        (unparsable("raw_ts", "ts_ms") | unparsable("raw_sequence", "sequence"), "unparsable_number"),
        (unparsable("raw_resynced", "resynced"), "bad_resynced: expected true or false"),
        (pl.col("ts_ms").is_null(), "null_ts"),
        # [price, amount], and some exchanges add to it (order count, a timestamp): ignored.
        (pl.col("fields") < 2, "malformed_level: expected [price, amount]"),
        (unparsable("raw_price", "price") | unparsable("raw_amount", "amount"), "unparsable_number"),
        (pl.col("price").is_null() | pl.col("amount").is_null(), "null_field"),
        (non_finite(["price", "amount"]), "non_finite_value"),
        bounds.ts_check(),
        bounds.value_check(["price", "amount"]),
        (pl.col("price") <= 0, "non_positive_price"),
        (pl.col("amount") <= 0, "non_positive_size"),
    ]


def book_checks() -> list[Check]:
    """What is wrong with the book as a whole; every row of such a book carries the reason."""
    in_book = ["book", "side"]
    previous = pl.col("price").shift(1).over(in_book, order_by="level")
    best = {side: pl.col("price").filter((pl.col("side") == side) & (pl.col("level") == 0)).first() for side in SIDES}
    return [
        (
            ((pl.col("side") == "bid") & (pl.col("price") >= previous)).fill_null(False).any().over("book"),
            "bids_not_descending",
        ),
        (
            ((pl.col("side") == "ask") & (pl.col("price") <= previous)).fill_null(False).any().over("book"),
            "asks_not_ascending",
        ),
        ((best["bid"] >= best["ask"]).fill_null(False).over("book"), "crossed_book"),
        (pl.col("level_reason").is_not_null().any().over("book"), "incomplete_book: another level was rejected"),
    ]


def validate_order_books(raw: pl.DataFrame) -> CheckedRows:
    checked = raw.with_columns(first_failure(level_checks()).alias("level_reason")).with_columns(
        pl.coalesce(pl.col("level_reason"), first_failure(book_checks())).alias("reason")
    )
    columns = [
        pl.col("exchange"),
        pl.col("symbol"),
        utc_ms("ts_ms").alias("ts"),
        pl.col("side"),
        pl.col("level"),
        pl.col("price"),
        pl.col("amount"),
        pl.col("sequence"),
        pl.col("resynced").fill_null(False),
        pl.col("source_event_id"),
    ]
    # Two good books of one instant: keep the later one whole (never a mix of both books' levels).
    good = pl.col("reason").is_null()
    latest = pl.col("book").filter(good).max().over("exchange", "symbol", "ts_ms")
    superseded = good & (pl.col("book") != latest)
    kept = checked.filter(~superseded)
    split = split_rows(kept.sort("book", "side", "level"), columns, ORDER_BOOKS.key, SILVER_SCHEMA)
    return CheckedRows(split.good, split.rejected, split.duplicates + checked.height - kept.height)


def check_order_books(ndjson: bytes) -> CheckedRows:
    return validate_order_books(frame_from_bronze(ndjson))
