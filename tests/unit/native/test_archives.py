"""Binance archive files read the same whatever their variant: header or not, ms or µs, any cut."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from cryptoflow_native.archives import (
    ArchiveError,
    ChecksumMismatch,
    csv_member,
    has_header,
    kline_open_times,
    kline_rows,
    split_lines,
    verify_checksum,
)
from hypothesis import given
from hypothesis import strategies as st

# The first six columns are two real Binance 5m ETH/BTC candles (2018-01-10 04:55 and 05:00 UTC, from
# tests/fixtures/candles/binance/ETHBTC-5m.csv, whose README gives their provenance); the close time
# follows from the interval, and the quote volume, trade count and taker-buy volumes are made up.
MS = (
    b"1515560100000,0.0984,0.0994766,0.09828605,0.0994766,1820.54447418,1515560399999,"
    b"179.64,1327,900.25,88.5,0\n"
    b"1515560400000,0.09946999000000001,0.0997238,0.099,0.09969000000000001,2527.92100293,1515560699999,"
    b"251.3,834,1200.5,119.75,0\n"
)
HEADER = (
    b"open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    b"taker_buy_quote_volume,ignore\n"
)


def in_microseconds(csv: bytes) -> bytes:
    lines = []
    for line in csv.decode().splitlines():
        fields = line.split(",")
        fields[0] = str(int(fields[0]) * 1000)
        fields[6] = str((int(fields[6]) + 1) * 1000 - 1)
        lines.append(",".join(fields))
    return ("\n".join(lines) + "\n").encode()


def test_kline_rows_are_the_rest_paths_rows() -> None:
    assert kline_rows(MS) == [
        [1515560100000, 0.0984, 0.0994766, 0.09828605, 0.0994766, 1820.54447418, 179.64, 1327, 900.25, 88.5],
        [
            1515560400000,
            0.09946999000000001,
            0.0997238,
            0.099,
            0.09969000000000001,
            2527.92100293,
            251.3,
            834,
            1200.5,
            119.75,
        ],
    ]


def test_a_header_row_is_detected_and_skipped() -> None:
    assert has_header(HEADER + MS) and not has_header(MS)
    assert kline_rows(HEADER + MS) == kline_rows(MS)


def test_microsecond_files_read_as_milliseconds() -> None:
    micro = in_microseconds(MS)
    assert micro.startswith(b"1515560100000000,")
    assert kline_rows(micro) == kline_rows(MS)
    assert kline_rows(HEADER + micro) == kline_rows(MS)


def test_a_checksum_is_checked_against_the_zips_bytes() -> None:
    content = b"PK zip bytes"
    digest = hashlib.sha256(content).hexdigest()
    assert verify_checksum("X.zip", content, f"{digest}  X.zip\n") == digest
    with pytest.raises(ChecksumMismatch) as caught:
        verify_checksum("X.zip", content + b"!", f"{digest}  X.zip\n")
    assert caught.value.expected == digest and caught.value.actual == hashlib.sha256(content + b"!").hexdigest()
    with pytest.raises(ArchiveError):
        verify_checksum("X.zip", content, "<html>not found</html>")


def test_the_zips_one_csv_is_read_and_anything_else_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("BTCUSDT-1m-2024-01.csv", MS)
    assert csv_member(out.getvalue()) == MS
    with pytest.raises(ArchiveError):
        csv_member(b"not a zip")
    with pytest.raises(ArchiveError):
        kline_rows(b"1704067200000,abc\n")


def zipped(csv: bytes, method: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        archive.writestr("BTCUSDT-1m-2024-01.csv", csv)
    return out.getvalue()


def test_deflated_and_stored_members_read_the_same_and_a_damaged_one_is_refused() -> None:
    csv = MS * 500  # deflates well: the fast inflate path, not zipfile's
    deflated = zipped(csv, zipfile.ZIP_DEFLATED)
    assert len(deflated) < len(csv) // 4
    assert csv_member(deflated) == csv_member(zipped(csv, zipfile.ZIP_STORED)) == csv
    # A byte of the compressed stream changed: the inflate fails or its CRC-32 does not match.
    start = deflated.index(b"BTCUSDT-1m-2024-01.csv") + len("BTCUSDT-1m-2024-01.csv")
    damaged = bytearray(deflated)
    damaged[start + 200] ^= 0xFF
    with pytest.raises(ArchiveError):
        csv_member(bytes(damaged))


def test_open_times_alone_are_the_full_parses_whatever_the_variant() -> None:
    full = [row[0] for row in kline_rows(MS)]
    for variant in (MS, HEADER + MS, in_microseconds(MS), HEADER + in_microseconds(MS)):
        assert kline_open_times(variant).to_list() == full
    assert kline_open_times(b"").is_empty() and kline_open_times(HEADER).is_empty()
    with pytest.raises(ArchiveError, match="expected 12 kline columns, found 2"):
        kline_open_times(b"1704067200000,abc\n")
    with pytest.raises(ArchiveError):
        kline_open_times(MS + b"not-a-time" + MS[MS.index(b",") :])


@given(
    lines=st.lists(st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=30),
    max_bytes=st.integers(min_value=1, max_value=120),
)
def test_split_lines_cuts_at_line_ends_and_joins_back(lines: list[bytes], max_bytes: int) -> None:
    csv = b"".join(lines)
    parts = split_lines(csv, max_bytes)
    assert b"".join(parts) == csv
    for part in parts:
        assert part.endswith(b"\n")
        # A part is over the limit only when it is one line that is longer.
        assert len(part) <= max_bytes or part.count(b"\n") == 1
