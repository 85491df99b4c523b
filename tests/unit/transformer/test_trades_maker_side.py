"""Trades' maker side (issue 11): read from the exchange's own body where it states it, checked, kept."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from cryptoflow_contracts import Dataset, RawSnapshot
from cryptoflow_native import trade_maker_sides
from cryptoflow_transformer.trades import check_trades

T0 = int(datetime(2024, 6, 1, tzinfo=UTC).timestamp() * 1000)


def test_binance_states_the_maker_side_in_agg_trades_and_trades_and_others_do_not() -> None:
    agg = [{"a": 7, "p": "1.0", "q": "2", "T": T0, "m": True}, {"a": 8, "p": "1.0", "q": "2", "T": T0, "m": False}]
    plain = [{"id": 9, "price": "1.0", "qty": "2", "time": T0, "isBuyerMaker": True}]
    assert trade_maker_sides("binance", [agg, plain]) == {"7": "buy", "8": "sell", "9": "buy"}
    # A flag that is not a boolean is not guessed at.
    assert trade_maker_sides("binance", [[{"a": 10, "m": "yes"}]]) == {}
    assert trade_maker_sides("bybit", [[{"execId": "1", "side": "Buy"}]]) == {}


def snapshot(trades: list[dict[str, object]]) -> bytes:
    return (
        RawSnapshot(
            dataset=Dataset.TRADES,
            exchange="binance",
            symbol="BTC/USDT",
            fetched_at=datetime.fromtimestamp(T0 / 1000 + 60, UTC),
            payload=trades,
            first_ts=T0,
            last_ts=T0 + 2,
        ).to_json()
        + b"\n"
    )


def trade(trade_id: str, maker_side: object = None, **more: object) -> dict[str, object]:
    return {
        "id": trade_id, "timestamp": T0, "symbol": "BTC/USDT", "side": "sell", "price": 100.0, "amount": 0.5,
        **({"maker_side": maker_side} if maker_side is not None else {}), **more,
    }  # fmt: skip


def test_the_maker_side_reaches_silver_and_a_wrong_one_is_quarantined() -> None:
    checked = check_trades(snapshot([trade("1", "buy"), trade("2"), trade("3", "both")]))
    rows = {row["trade_id"]: row["maker_side"] for row in checked.good.iter_rows(named=True)}
    assert rows == {"1": "buy", "2": None}
    reasons = checked.rejected["reason"].to_list()
    assert reasons == ["bad_maker_side"], orjson.dumps(checked.rejected.to_dicts(), default=str)
