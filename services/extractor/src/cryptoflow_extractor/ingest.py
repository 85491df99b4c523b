"""Files into RAW: `cryptoflow ingest PATH_OR_S3_URL --dataset ohlcv|trades --mapping mapping.yaml`.

A CSV or Parquet file (local, or `s3://bucket/key` on the lake's S3 endpoint) becomes RawSnapshot
pages like an exchange's: one market per page (the mapping names the exchange and symbol, or the
columns that do), each page the file's own text for its rows (decision 0046), read by the
mapping in the page's request. So lake, silver, warehouse, replay and rebuild treat it as any
other source: the transformer parses and checks the rows and quarantines the bad ones with their
reasons; the same file ingested again makes the same pages (same event ids, same objects, same
silver batches), so it changes nothing.

What cannot become a page at all — a row whose exchange is not a ccxt id or whose symbol is
empty — is dead-lettered with the reason and its lines, and the rest goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import ccxt
import orjson
import polars as pl
import yaml
from cryptoflow_contracts import Dataset, DeadLetter, NativeCall, NativeResponse, RawSnapshot, Stage
from cryptoflow_native.files import (
    CSV_BODY,
    FILE_ROWS_METHOD,
    FORMAT_HEADER,
    PARQUET_ROWS_BODY,
    FileMapping,
    missing_columns,
    read_csv_text,
    ts_ms,
)
from cryptoflow_runtime import ServiceSettings
from cryptoflow_runtime.lake import S3Lake
from cryptoflow_runtime.progress import Progress
from pydantic import ValidationError

from .publishing import command_connection
from .session import Publisher

FILE_SOURCE = "file"
# A page's text stays well under NATS's 1 MiB message limit with its envelope.
PART_BYTES = 512 * 1024
PARQUET_PAGE_ROWS = 2000
DATASETS = {"ohlcv": Dataset.OHLCV, "trades": Dataset.TRADES}


class IngestError(Exception):
    """The file or mapping cannot be ingested at all (a clear message for the command line)."""


@dataclass
class IngestReport:
    pages: int = 0
    rows: int = 0
    markets: set[tuple[str, str]] = field(default_factory=set)
    dead_lettered_rows: int = 0
    sha256: str = ""


def load_mapping(path: Path, dataset: str) -> FileMapping:
    try:
        raw = yaml.safe_load(path.read_text())
        mapping = FileMapping.model_validate(raw)
        mapping.check(dataset)
    except (OSError, yaml.YAMLError, ValidationError, ValueError) as exc:
        raise IngestError(f"{path}: {exc}") from exc
    return mapping


async def read_source(url: str, s3_endpoint_url: str | None) -> bytes:
    """The file's bytes: a local path (or file:// URL), or s3://bucket/key."""
    if url.startswith("s3://"):
        bucket, _, key = url.removeprefix("s3://").partition("/")
        if not bucket or not key:
            raise IngestError(f"{url}: expected s3://bucket/key")
        lake = S3Lake(f"s3://{bucket}", s3_endpoint_url)
        try:
            return await lake.get(key)
        except Exception as exc:
            raise IngestError(f"{url}: cannot be read: {exc}") from exc
        finally:
            await lake.close()
    path = Path(url.removeprefix("file://"))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{url}: {exc}") from exc


def file_format(url: str, mapping: FileMapping) -> str:
    if mapping.format is not None:
        return mapping.format
    return "parquet" if url.lower().endswith((".parquet", ".pq")) else "csv"


@dataclass(frozen=True)
class Part:
    """One page's worth of one market's rows: the text it carries and its rows read."""

    exchange: str
    symbol: str
    body: bytes
    body_format: str
    rows: pl.DataFrame


def csv_parts(data: bytes, mapping: FileMapping) -> list[Part]:
    """Each market's lines, in file order, in parts of at most PART_BYTES (each part with the
    header line, so it reads alone). A line is a row: quoted line breaks are refused."""
    lines = data.splitlines(keepends=True)
    header = lines[0] if mapping.header and lines else b""
    body_lines = [line for line in lines[1 if mapping.header else 0 :] if line.strip()]
    frame = read_csv_text(data, mapping)
    if frame.height != len(body_lines):
        raise IngestError(
            f"the file has {len(body_lines)} lines but {frame.height} rows: quoted line breaks are not supported"
        )
    absent = missing_columns(frame, mapping)
    if absent:
        raise IngestError(f"the file has no column {', '.join(absent)} (its columns: {', '.join(frame.columns)})")
    parts: list[Part] = []
    for (exchange, symbol), indexes in _markets(frame, mapping).items():
        run: list[int] = []
        size = len(header)
        for index in indexes:
            if run and size + len(body_lines[index]) > PART_BYTES:
                parts.append(_csv_part(exchange, symbol, header, body_lines, run, frame))
                run, size = [], len(header)
            run.append(index)
            size += len(body_lines[index])
        if run:
            parts.append(_csv_part(exchange, symbol, header, body_lines, run, frame))
    return parts


def _csv_part(
    exchange: str, symbol: str, header: bytes, lines: list[bytes], run: list[int], frame: pl.DataFrame
) -> Part:
    # A line is a row (checked above): the part's rows are the file's, as read once.
    body = header + b"".join(lines[i] if lines[i].endswith(b"\n") else lines[i] + b"\n" for i in run)
    return Part(exchange, symbol, body, CSV_BODY, frame[run])


def parquet_parts(data: bytes, mapping: FileMapping) -> list[Part]:
    """Each market's rows as read (NDJSON, values unchanged), PARQUET_PAGE_ROWS per page."""
    try:
        frame = pl.read_parquet(data)
    except Exception as exc:
        raise IngestError(f"not a readable Parquet file: {exc}") from exc
    absent = missing_columns(frame, mapping)
    if absent:
        raise IngestError(f"the file has no column {', '.join(absent)} (its columns: {', '.join(frame.columns)})")
    text = frame.select(pl.all().cast(pl.String))
    parts: list[Part] = []
    for (exchange, symbol), indexes in _markets(text, mapping).items():
        for start in range(0, len(indexes), PARQUET_PAGE_ROWS):
            run = indexes[start : start + PARQUET_PAGE_ROWS]
            body = b"".join(orjson.dumps(row) + b"\n" for row in frame[run].to_dicts())
            parts.append(Part(exchange, symbol, body, PARQUET_ROWS_BODY, text[run]))
    return parts


def _markets(frame: pl.DataFrame, mapping: FileMapping) -> dict[tuple[str, str], list[int]]:
    """Row indexes per (exchange, symbol), in file order."""
    exchanges = (
        frame[mapping.exchange_column].to_list() if mapping.exchange_column else [mapping.exchange] * frame.height
    )
    symbols = frame[mapping.symbol_column].to_list() if mapping.symbol_column else [mapping.symbol] * frame.height
    markets: dict[tuple[str, str], list[int]] = {}
    for index, (exchange, symbol) in enumerate(zip(exchanges, symbols, strict=True)):
        markets.setdefault(((exchange or "").strip().lower(), (symbol or "").strip()), []).append(index)
    return markets


def market_problem(exchange: str, symbol: str) -> str | None:
    if exchange not in ccxt.exchanges:
        return f"exchange {exchange!r} is not a ccxt exchange id"
    if not symbol:
        return "no symbol"
    return None


def time_range(rows: pl.DataFrame, mapping: FileMapping) -> tuple[int | None, int | None]:
    """Earliest and latest parsable record times (the page's partition; bad ones are the transformer's)."""
    times = ts_ms(rows[mapping.columns["ts"]], mapping)
    first, last = times.min(), times.max()
    return (first, last) if isinstance(first, int) and isinstance(last, int) else (None, None)


def page_snapshot(part: Part, index: int, url: str, digest: str, dataset: str, mapping: FileMapping) -> RawSnapshot:
    first, last = time_range(part.rows, mapping)
    name = url.rsplit("/", 1)[-1]
    return RawSnapshot(
        schema_version=2,
        native=[
            NativeCall(
                ccxt_version=ccxt.__version__,
                method=FILE_ROWS_METHOD,
                args=[dataset, part.symbol, mapping.timeframe, name],
                responses=[
                    NativeResponse(
                        method="GET",
                        path=url,
                        status=200,
                        headers={FORMAT_HEADER: part.body_format, "x-file-sha256": digest, "x-file-part": str(index)},
                        body=part.body.decode("utf-8", errors="replace"),
                    )
                ],
            )
        ],
        dataset=DATASETS[dataset],
        exchange=part.exchange,
        symbol=part.symbol,
        timeframe=mapping.timeframe if dataset == "ohlcv" else None,
        fetched_at=datetime.now(UTC),
        request={"source": FILE_SOURCE, "url": url, "sha256": digest, "mapping": mapping.model_dump(mode="json")},
        payload=None,
        first_ts=first,
        last_ts=last,
        final=True,
    )


async def ingest(
    url: str,
    dataset: str,
    mapping: FileMapping,
    publisher: Publisher,
    s3_endpoint_url: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Publish the file's pages to RAW (and what cannot be a page to the DLQ); what was done.
    `progress(parts done, parts)` after each page."""
    if dataset not in DATASETS:
        raise IngestError(f"--dataset: {dataset!r} is not one of {', '.join(DATASETS)}")
    data = await read_source(url, s3_endpoint_url)
    report = IngestReport(sha256=hashlib.sha256(data).hexdigest())
    parts = parquet_parts(data, mapping) if file_format(url, mapping) == "parquet" else csv_parts(data, mapping)
    for index, part in enumerate(parts):
        problem = market_problem(part.exchange, part.symbol)
        if problem is not None:
            report.dead_lettered_rows += part.rows.height
            await publisher.dead_letter(
                DeadLetter(
                    stage=Stage.EXTRACTOR,
                    dataset=DATASETS[dataset],
                    reason=f"{part.rows.height} row(s) of {url} cannot be published: {problem}",
                    error_type="UnpublishableRows",
                    payload=part.body.decode("utf-8", errors="replace")[:100_000],
                    details={"source": FILE_SOURCE, "url": url, "sha256": report.sha256, "part": str(index)},
                )
            )
            continue
        await publisher.snapshot(page_snapshot(part, index, url, report.sha256, dataset, mapping))
        report.pages += 1
        report.rows += part.rows.height
        report.markets.add((part.exchange, part.symbol))
        if progress is not None:
            progress(index + 1, len(parts))
    return report


async def run_ingest(
    settings: ServiceSettings, url: str, dataset: str, mapping: FileMapping, s3_endpoint_url: str | None, out: TextIO
) -> IngestReport:
    """`ingest` over a NATS connection of its own (the settings' identity), with a progress bar."""
    nc, _, publisher = await command_connection(settings)
    bar: Progress | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or Progress(total, out, "pages")
        bar.show(done, final=done == total)

    try:
        return await ingest(url, dataset, mapping, publisher, s3_endpoint_url, progress)
    finally:
        await nc.drain()
