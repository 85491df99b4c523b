"""Binance's bulk archive files (data.binance.vision): their names, checksums and kline CSV rows.

A kline archive is a zip holding one CSV of Binance's twelve kline columns (open time, open, high,
low, close, volume, close time, quote volume, trades, taker-buy base and quote volumes, ignore).
The files differ in ways users trip over, and each is detected per file, never configured:

* some have a header row (`open_time,open,...`), most do not;
* spot files from 2025 on have times in microseconds, earlier ones in milliseconds: a time of
  10^15 or more is read as microseconds (10^15 ms is the year 33658);
* the `.CHECKSUM` beside each zip is `sha256sum`'s line for it; a zip is read only once its
  digest matches (`verify_checksum`).

`kline_rows` turns a CSV (or a part of one, cut at line ends) into the rows the REST path makes
of `/api/v3/klines`: ccxt's `[ts, open, high, low, close, volume]` then Binance's extras in
`OHLCV_EXTRAS` order, so an archived candle and the same candle polled are the same silver row.
The extractor uses it to publish a page, the transformer to parse the page's bronze again.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zipfile
from typing import Any

import polars as pl
from zlib_ng import zlib_ng

ARCHIVE_KLINES_METHOD = "archiveKlines"
"""The `NativeCall.method` of a page read from a kline archive (its response body: CSV lines)."""

MICROSECONDS_FROM = 10**15
_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
_SCHEMA = {
    "open_time": pl.Int64, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64, "close": pl.Float64,
    "volume": pl.Float64, "close_time": pl.Int64, "quote_volume": pl.Float64, "count": pl.Int64,
    "taker_buy_volume": pl.Float64, "taker_buy_quote_volume": pl.Float64, "ignore": pl.Utf8,
}  # fmt: skip
_DIGEST = re.compile(r"^\s*([0-9a-fA-F]{64})\b")


class ArchiveError(ValueError):
    """An archive file that cannot be read as what it claims to be."""


class ChecksumMismatch(ArchiveError):
    def __init__(self, name: str, expected: str, actual: str) -> None:
        super().__init__(f"{name}: CHECKSUM says sha256 {expected}, the zip's is {actual}")
        self.name = name
        self.expected = expected
        self.actual = actual


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def expected_digest(checksum_text: str) -> str:
    """The digest of a `.CHECKSUM` file (`<hex>  <name>`)."""
    match = _DIGEST.match(checksum_text)
    if match is None:
        raise ArchiveError(f"not a sha256sum line: {checksum_text[:120]!r}")
    return match.group(1).lower()


def verify_checksum(name: str, content: bytes, checksum_text: str) -> str:
    """The zip's sha256 when it is the one its CHECKSUM states; ChecksumMismatch otherwise."""
    expected = expected_digest(checksum_text)
    actual = sha256_hex(content)
    if actual != expected:
        raise ChecksumMismatch(name, expected, actual)
    return actual


def csv_member(content: bytes) -> bytes:
    """The one CSV inside an archive zip, as stored."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) != 1:
                raise ArchiveError(f"expected one file in the zip, found {[m.filename for m in members]}")
            inflated = _inflate(content, members[0])
            return inflated if inflated is not None else archive.read(members[0])
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"not a zip file: {exc}") from None


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then (after 22 bytes) name and extra lengths


def _inflate(content: bytes, member: zipfile.ZipInfo) -> bytes | None:
    """A deflated member inflated by zlib-ng (twice zlib's speed: inflating is most of reading an
    archive) and checked against its CRC-32 as zipfile checks it; None for anything else (stored,
    encrypted, another method), which zipfile reads."""
    if member.compress_type != zipfile.ZIP_DEFLATED or member.flag_bits & 0x1:
        return None
    offset = member.header_offset
    signature, name_length, extra_length = _LOCAL_HEADER.unpack_from(content, offset)
    if signature != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local file header for {member.filename}")
    start = offset + _LOCAL_HEADER.size + name_length + extra_length
    try:
        data = zlib_ng.decompress(content[start : start + member.compress_size], -15)
    except Exception as exc:  # zlib_ng.error, which its stubs do not type as an exception
        raise zipfile.BadZipFile(f"{member.filename}: {exc}") from None
    if len(data) != member.file_size or zlib_ng.crc32(data) != member.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {member.filename!r}")
    return data


def open_kline_archive(name: str, content: bytes, checksum_text: str) -> tuple[str, bytes, pl.Series]:
    """A kline zip checked against its CHECKSUM (ChecksumMismatch, else): its sha256, its CSV as
    stored, and its candles' open times in ms (ArchiveError when it is not kline CSV)."""
    digest = verify_checksum(name, content, checksum_text)
    csv = csv_member(content)
    return digest, csv, kline_open_times(csv)


def kline_open_times(csv: bytes) -> pl.Series:
    """The CSV's open times in ms, whatever the file's unit: the first column only (the extractor
    needs a page's bounds; the transformer parses every column from the page's part), after the
    first row's width is checked (ArchiveError when it is not kline CSV)."""
    skip = 1 if has_header(csv) else 0
    # The first data row, found without copying the rest of the file.
    newline = csv.find(b"\n")
    start = 0 if not skip else len(csv) if newline < 0 else newline + 1
    end = csv.find(b"\n", start)
    first = csv[start : end if end >= 0 else len(csv)]
    if not first.strip():
        return pl.Series("open_time", [], pl.Int64)
    if first.count(b",") + 1 != len(_COLUMNS):
        raise ArchiveError(f"expected {len(_COLUMNS)} kline columns, found {first.count(b',') + 1}")
    try:
        first_column = pl.read_csv(io.BytesIO(csv), has_header=False, skip_rows=skip, columns=[0]).to_series(0)
        times = first_column.cast(pl.Int64, strict=True).alias("open_time")
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise ArchiveError(f"not Binance kline CSV: {str(exc)[:300]}") from None
    if times.len() and times.max() >= MICROSECONDS_FROM:  # type: ignore[operator]
        times = times // 1000
    return times


def has_header(csv: bytes) -> bool:
    first = csv[: csv.find(b"\n")] if b"\n" in csv else csv
    token = first.split(b",", 1)[0].strip()
    return bool(token) and not token.isdigit()


def kline_frame(csv: bytes) -> pl.DataFrame:
    """The CSV's klines, times in milliseconds whatever the file's unit."""
    if not csv.strip():
        return pl.DataFrame(schema=_SCHEMA)
    try:
        frame = pl.read_csv(
            io.BytesIO(csv), has_header=False, skip_rows=1 if has_header(csv) else 0,
            new_columns=list(_COLUMNS), schema_overrides=_SCHEMA,
        )  # fmt: skip
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise ArchiveError(f"not Binance kline CSV: {str(exc)[:300]}") from None
    if frame.width != len(_COLUMNS):
        raise ArchiveError(f"expected {len(_COLUMNS)} kline columns, found {frame.width}")
    if frame.height and frame["open_time"].max() >= MICROSECONDS_FROM:  # type: ignore[operator]
        frame = frame.with_columns(
            pl.col("open_time") // 1000, ((pl.col("close_time") + 1) // 1000 - 1).alias("close_time")
        )
    return frame


def kline_rows(csv: bytes) -> list[list[Any]]:
    """`[ts, open, high, low, close, volume, quote_volume, trade_count, taker_buy_base, taker_buy_quote]`
    per kline, as the REST path's payload has them."""
    frame = kline_frame(csv).select(
        "open_time", "open", "high", "low", "close", "volume",
        "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume",
    )  # fmt: skip
    return [list(row) for row in frame.iter_rows()]


def split_lines(csv: bytes, max_bytes: int) -> list[bytes]:
    """The CSV cut at line ends into parts of at most `max_bytes` (a longer line is a part alone);
    joined, the parts are the CSV again."""
    parts: list[bytes] = []
    start = 0
    while start < len(csv):
        end = start + max_bytes
        if end >= len(csv):
            parts.append(csv[start:])
            break
        cut = csv.rfind(b"\n", start, end)
        if cut < start:
            cut = csv.find(b"\n", end)
            cut = len(csv) - 1 if cut < 0 else cut
        parts.append(csv[start : cut + 1])
        start = cut + 1
    return parts
