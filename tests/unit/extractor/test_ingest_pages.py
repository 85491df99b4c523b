"""`cryptoflow ingest`'s pages: one market each, the file's own lines, bounded, the same file twice the same."""

from __future__ import annotations

import pytest
from cryptoflow_extractor import ingest as ingest_module
from cryptoflow_extractor.ingest import IngestError, csv_parts, page_snapshot
from cryptoflow_native.files import FileMapping, file_records

MAPPING = FileMapping(
    columns={"ts": "t", "id": "id", "price": "p", "amount": "q"}, exchange_column="venue", symbol_column="pair"
)


def test_each_market_gets_its_own_lines_verbatim_with_the_header() -> None:
    data = b"t,id,p,q,venue,pair\n1,a,10,1,binance,BTC/USDT\n2,b,11,1,kraken,BTC/USD\n3,c,12,1,binance,BTC/USDT\n"
    parts = csv_parts(data, MAPPING)
    assert [(p.exchange, p.symbol, p.body) for p in parts] == [
        ("binance", "BTC/USDT", b"t,id,p,q,venue,pair\n1,a,10,1,binance,BTC/USDT\n3,c,12,1,binance,BTC/USDT\n"),
        ("kraken", "BTC/USD", b"t,id,p,q,venue,pair\n2,b,11,1,kraken,BTC/USD\n"),
    ]


def test_a_large_market_is_cut_into_parts_that_each_read_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_module, "PART_BYTES", 200)
    lines = [f"{i},{i},10.5,0.25,binance,BTC/USDT\n".encode() for i in range(40)]
    parts = csv_parts(b"t,id,p,q,venue,pair\n" + b"".join(lines), MAPPING)
    assert len(parts) > 3 and all(len(p.body) <= 200 for p in parts)
    assert all(p.body.startswith(b"t,id,p,q,venue,pair\n") for p in parts)
    ids = [r["id"] for p in parts for r in file_records(p.rows, MAPPING, "trades")]
    assert ids == [str(i) for i in range(40)]


def test_quoted_line_breaks_are_refused() -> None:
    with pytest.raises(IngestError, match="quoted line breaks"):
        csv_parts(b't,id,p,q,venue,pair\n1,"a\nb",10,1,binance,BTC/USDT\n', MAPPING)


def test_a_missing_column_is_named() -> None:
    with pytest.raises(IngestError, match="no column pair"):
        csv_parts(b"t,id,p,q,venue\n1,a,10,1,binance\n", MAPPING)


def test_the_same_lines_make_the_same_page_and_another_mapping_another() -> None:
    data = b"t,id,p,q,venue,pair\n1700000000000,a,10,1,binance,BTC/USDT\n"
    (part,) = csv_parts(data, MAPPING)
    first = page_snapshot(part, 0, "/data/t.csv", "ab", "trades", MAPPING)
    again = page_snapshot(part, 0, "/data/t.csv", "ab", "trades", MAPPING)
    assert first.event_id == again.event_id and first.fetched_at <= again.fetched_at
    assert (first.first_ts, first.last_ts) == (1700000000000, 1700000000000)
    seconds = MAPPING.model_copy(update={"ts_unit": "s"})
    assert page_snapshot(part, 0, "/data/t.csv", "ab", "trades", seconds).event_id != first.event_id
