"""Schema drift: appeared, vanished and retyped fields against the learned baseline."""

from __future__ import annotations

from cryptoflow_extractor.drift import DriftDetector, shape_of

KLINE = [1700000000000, "1.0", "2.0", "0.5", "1.5", "10", 1700000059999, "15", 3, "5", "7.5", "0"]


def test_positional_rows_have_one_field_per_position() -> None:
    shape = shape_of([KLINE, KLINE])
    assert shape["$[][0]"] == "number" and shape["$[][1]"] == "string" and "$[][11]" in shape


def test_first_response_is_the_baseline_and_same_shape_is_no_drift() -> None:
    detector = DriftDetector()
    assert not detector.check("binance", "ohlcv", [KLINE])
    assert not detector.check("binance", "ohlcv", [KLINE, KLINE])


def test_vanished_field_is_breaking() -> None:
    detector = DriftDetector()
    detector.check("binance", "ohlcv", [KLINE])
    drift = detector.check("binance", "ohlcv", [KLINE[:11]])
    assert drift.vanished == {"$[][11]": "string"} and drift.breaking


def test_added_field_is_reported_once_and_not_breaking() -> None:
    detector = DriftDetector()
    detector.check("bybit", "ticker", {"symbol": "BTCUSDT", "lastPrice": "1"})
    drift = detector.check("bybit", "ticker", {"symbol": "BTCUSDT", "lastPrice": "1", "newField": 3})
    assert drift.appeared == {"$.newField": "number"} and not drift.breaking
    assert not detector.check("bybit", "ticker", {"symbol": "BTCUSDT", "lastPrice": "1", "newField": 3})


def test_changed_type_is_breaking_but_null_is_compatible() -> None:
    detector = DriftDetector()
    detector.check("gate", "ticker", {"last": "1.0", "high": "2"})
    assert not detector.check("gate", "ticker", {"last": "1.0", "high": None})
    drift = detector.check("gate", "ticker", {"last": 1.0, "high": "2"})
    assert drift.changed == {"$.last": ("string", "number")} and drift.breaking


def test_an_empty_page_is_not_drift_and_not_a_baseline() -> None:
    detector = DriftDetector()
    assert not detector.check("binance", "ohlcv", [])
    assert not detector.check("binance", "ohlcv", [KLINE])
    assert not detector.check("binance", "ohlcv", [])
    assert detector.check("binance", "ohlcv", [KLINE[:11]]).breaking


def test_an_added_field_that_goes_away_again_is_not_a_vanished_field() -> None:
    detector = DriftDetector()
    detector.check("binance", "ohlcv", [KLINE])
    assert detector.check("binance", "ohlcv", [[*KLINE, "extra"]]).appeared == {"$[][12]": "string"}
    assert not detector.check("binance", "ohlcv", [KLINE])
