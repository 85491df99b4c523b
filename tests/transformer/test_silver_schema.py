"""Silver files carry their schema version; older files are read upgraded, unknown ones refused."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import polars as pl
import pytest
from cryptoflow_contracts import SILVER_SCHEMA_VERSION
from cryptoflow_contracts.silver import OHLCV, SCHEMA_VERSION_METADATA_KEY, TRADES
from cryptoflow_transformer.schemas import polars_schema
from cryptoflow_transformer.silver_files import SilverSchemaError, read_silver, schema_version, to_parquet

TS = datetime(2019, 10, 11, tzinfo=UTC)


def old_ohlcv_file(version: str | None) -> bytes:
    """An ohlcv file as a writer from before `resampled`/`final` existed would have left it."""
    frame = pl.DataFrame(
        {
            "exchange": ["binance"],
            "symbol": ["XRP/ETH"],
            "timeframe": ["1m"],
            "ts": [TS],
            "open": [0.00141342],
            "high": [0.00141557],
            "low": [0.00141266],
            "close": [0.00141418],
            "volume": [1482.0],
            "source_event_id": ["RawSnapshot-1"],
        }
    )
    buffer = io.BytesIO()
    metadata = {SCHEMA_VERSION_METADATA_KEY: version} if version is not None else None
    frame.write_parquet(buffer, metadata=metadata)
    return buffer.getvalue()


@pytest.mark.parametrize("version", ["1", None], ids=["v1", "unversioned"])
def test_an_older_ohlcv_file_is_read_with_defaults_filled(version: str | None) -> None:
    data = old_ohlcv_file(version)
    assert schema_version(data) == (1 if version else 0)
    frame = read_silver(data, OHLCV)
    assert frame.schema == pl.Schema(polars_schema(OHLCV))
    row = frame.row(0, named=True)
    assert (row["resampled"], row["final"]) == (False, True)
    assert (row["close"], row["volume"], row["ts"]) == (0.00141418, 1482.0, TS)


def test_a_current_file_round_trips_with_its_version() -> None:
    frame = read_silver(old_ohlcv_file("1"), OHLCV)
    data = to_parquet(frame, "ohlcv")
    assert schema_version(data) == SILVER_SCHEMA_VERSION
    assert pl.read_parquet_metadata(io.BytesIO(data))["cryptoflow.table"] == "ohlcv"
    assert read_silver(data, OHLCV).equals(frame)


def test_a_newer_version_than_the_reader_knows_is_refused() -> None:
    with pytest.raises(SilverSchemaError, match="version 99"):
        read_silver(old_ohlcv_file("99"), OHLCV)


def test_a_missing_column_without_a_default_is_refused_by_name() -> None:
    with pytest.raises(SilverSchemaError, match="trade_id"):
        read_silver(old_ohlcv_file("1"), TRADES)
