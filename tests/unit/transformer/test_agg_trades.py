"""aggTrades archive pages → checked agg_trades rows: parsed from the part, bad aggregates quarantined."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptoflow_contracts import Dataset, NativeCall, NativeResponse, RawSnapshot
from cryptoflow_native.trade_archives import ARCHIVE_AGG_TRADES_METHOD
from cryptoflow_transformer.datasets import TRANSFORMS
from cryptoflow_transformer.native import unified_bronze

T0 = 1709251209381
# Binance's aggTrades CSV layout (agg id, price, qty, first and last trade id, time in µs,
# isBuyerMaker, isBestMatch); the values are made up.
CSV = (
    f"1800000001,42000.01,0.001,3374651000,3374651000,{T0 * 1000},True,True\n"
    f"1800000002,42000.02,0.025,3374651001,3374651004,{T0 * 1000},False,True\n"
    f"1800000003,0,0.5,3374651005,3374651005,{(T0 + 1) * 1000},False,True\n"  # a price no trade has
)


def page(body: str, first_ts: int | None = T0, last_ts: int | None = T0 + 1) -> bytes:
    snapshot = RawSnapshot(
        schema_version=2,
        dataset=Dataset.AGG_TRADES,
        exchange="binance",
        symbol="BTC/USDT",
        fetched_at=datetime(2024, 3, 2, tzinfo=UTC),
        payload=None,
        first_ts=first_ts,
        last_ts=last_ts,
        native=[
            NativeCall(
                ccxt_version="4",
                method=ARCHIVE_AGG_TRADES_METHOD,
                args=["BTC/USDT", "aggTrades", "BTCUSDT-aggTrades-2024-03-01.zip"],
                responses=[NativeResponse(method="GET", path="/x", status=200, body=body)],
            )
        ],
    )
    return snapshot.to_json() + b"\n"


def test_an_agg_trades_page_becomes_rows_with_trade_ranges_and_sides() -> None:
    rows = TRANSFORMS[Dataset.AGG_TRADES].check(unified_bronze(page(CSV)))
    good = rows.good.sort("agg_id")
    assert good["agg_id"].to_list() == ["1800000001", "1800000002"]
    second = good.row(1, named=True)
    assert second["ts"] == datetime.fromtimestamp(T0 / 1000, UTC)
    assert (second["price"], second["amount"]) == (42000.02, 0.025)
    assert (second["first_trade_id"], second["last_trade_id"]) == ("3374651001", "3374651004")
    assert (second["side"], second["maker_side"]) == ("buy", "sell")
    assert good.row(0, named=True)["side"] == "sell"  # the buyer was the maker: a seller took
    assert rows.rejected["reason"].to_list() == ["non_positive_price"]


def test_a_page_narrowed_to_its_bounds_and_a_broken_part_quarantined_whole() -> None:
    only_first_ms = TRANSFORMS[Dataset.AGG_TRADES].check(unified_bronze(page(CSV, T0, T0)))
    assert only_first_ms.good.height == 2 and only_first_ms.rejected.height == 0
    broken = TRANSFORMS[Dataset.AGG_TRADES].check(unified_bronze(page("not,an,aggTrades,csv\n")))
    assert broken.good.height == 0 and broken.rejected["reason"].to_list() == ["malformed_agg_trade"]
