"""Order books' `sequence` (ccxt's nonce) and `resynced` in silver: kept from the payload, checked,
defaulted where a book has none."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import polars as pl
from cryptoflow_contracts import SILVER_SCHEMA_VERSION, Dataset, RawSnapshot
from cryptoflow_contracts.silver import ORDER_BOOKS, SCHEMA_VERSION_METADATA_KEY
from cryptoflow_transformer.order_books import check_order_books
from cryptoflow_transformer.schemas import polars_schema
from cryptoflow_transformer.silver_files import read_silver

T0 = 1_717_243_200_000


def snapshot(book: dict[str, Any], ms: int) -> RawSnapshot:
    return RawSnapshot(
        dataset=Dataset.ORDERBOOK,
        exchange="binance",
        symbol="BTC/USDT",
        fetched_at=datetime.fromtimestamp(ms / 1000 + 1, UTC),
        request={"symbol": "BTC/USDT", "limit": 2},
        payload=book,
        first_ts=ms,
        last_ts=ms,
    )


def book(**changes: Any) -> dict[str, Any]:
    # A polled Binance book as ccxt gives it: no time, the lastUpdateId as nonce.
    return {"symbol": "BTC/USDT", "bids": [[70000.0, 1.0]], "asks": [[70001.0, 2.0]], "timestamp": None,
            "datetime": None, "nonce": 25445101, **changes}  # fmt: skip


def checked(*books: dict[str, Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    ndjson = b"".join(snapshot(b, T0 + i).to_json() + b"\n" for i, b in enumerate(books))
    result = check_order_books(ndjson)
    good = result.good.select((pl.col("ts").dt.epoch("ms") - T0).alias("book"), "side", "sequence", "resynced")
    bad = result.rejected.select((pl.col("ts").dt.epoch("ms") - T0).alias("book"), "reason")
    return good.rows(), bad.rows()


def test_a_polled_book_keeps_its_nonce_and_is_not_resynced() -> None:
    good, bad = checked(book(), book(nonce=None), book(nonce=2**62, resynced=True), book(resynced=False))
    assert good == [
        (0, "ask", 25445101, False), (0, "bid", 25445101, False),
        (1, "ask", None, False), (1, "bid", None, False),
        (2, "ask", 2**62, True), (2, "bid", 2**62, True),
        (3, "ask", 25445101, False), (3, "bid", 25445101, False),
    ]  # fmt: skip
    assert bad == []


def test_a_book_without_the_fields_reads_as_before() -> None:
    old = {key: value for key, value in book().items() if key != "nonce"}
    good, bad = checked(old)
    assert good == [(0, "ask", None, False), (0, "bid", None, False)] and bad == []


def test_a_bad_sequence_or_flag_quarantines_the_book() -> None:
    good, bad = checked(book(), book(nonce="12ab"), book(nonce=1.5), book(resynced="maybe"), book(resynced=1))
    assert good == [(0, "ask", 25445101, False), (0, "bid", 25445101, False)]
    flag = "bad_resynced: expected true or false"
    assert sorted(bad) == sorted(
        [(1, "unparsable_number")] * 2 + [(2, "unparsable_number")] * 2 + [(3, flag)] * 2 + [(4, flag)] * 2
    )


def test_an_order_books_file_of_schema_version_3_reads_with_the_defaults() -> None:
    columns = [name for name in ORDER_BOOKS.column_names if name not in ("sequence", "resynced")]
    frame = pl.DataFrame(
        {
            "exchange": ["binance"],
            "symbol": ["BTC/USDT"],
            "ts": [datetime(2024, 6, 1, tzinfo=UTC)],
            "side": ["bid"],
            "level": [0],
            "price": [70000.0],
            "amount": [1.0],
            "source_event_id": ["RawSnapshot-1"],
        }
    ).select(columns)
    buffer = io.BytesIO()
    frame.write_parquet(buffer, metadata={SCHEMA_VERSION_METADATA_KEY: "3"})
    assert SILVER_SCHEMA_VERSION == 4
    upgraded = read_silver(buffer.getvalue(), ORDER_BOOKS)
    assert upgraded.schema == pl.Schema(polars_schema(ORDER_BOOKS))
    assert upgraded.select("sequence", "resynced").rows() == [(None, False)]
