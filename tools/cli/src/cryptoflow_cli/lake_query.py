"""`cryptoflow query`: SQL (DuckDB) over the lake's live silver files, one view per silver table.

Each view holds what the warehouse's table of that name holds: one row per key, the version the
loader's upserts keep (decision 0051). The files are the live ones (libs/runtime silver_lake, the
manifest of a compacted partition); DuckDB reads them as local Parquet: in place on a `file://`
lake, downloaded to a temporary directory from S3 (DuckDB's httpfs extension is downloaded at
run time, which offline machines cannot). Only the tables the query names are resolved and
fetched; the rows never pass through Python (DuckDB reads the Parquet itself, within its own
memory limit), and downloads go to disk.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import duckdb
from botocore.exceptions import BotoCoreError, ClientError
from cryptoflow_contracts import symbol_token
from cryptoflow_contracts.silver import TABLES, ColumnType, SilverTable
from cryptoflow_runtime import ConfigError, LakeSettings, load_settings
from cryptoflow_runtime.lake import FileLake, Lake, ObjectMissingError, open_lake
from cryptoflow_runtime.silver_lake import ROW, SILVER_KEY, WRITTEN_NS, LiveSilverFile, live_silver_files
from cryptoflow_runtime.silver_lake.live_files import RESOLVE_ATTEMPTS
from cryptoflow_transformer.datasets import TRANSFORMS

DUCKDB_TYPES = {
    ColumnType.TEXT: "VARCHAR",
    ColumnType.INT: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.TIMESTAMP: "TIMESTAMPTZ",
}
INDICATORS_FOLDER = "indicators"  # derived.py writes indicators under silver/indicators/
_FETCHES = 8  # S3 downloads at once


def table_folders() -> dict[str, tuple[str, ...]]:
    """Each silver table's folders under silver/ (a dataset's folder is named for the dataset)."""
    folders: dict[str, list[str]] = {}
    for dataset, transform in TRANSFORMS.items():
        folders.setdefault(transform.table.name, []).append(dataset.value)
    folders.setdefault("indicators", []).append(INDICATORS_FOLDER)
    return {table: tuple(names) for table, names in folders.items()}


def referenced_tables(sql: str) -> list[str]:
    """The silver tables the query names (as words: `ohlcv`, or its every version `ohlcv_versions`);
    only those are resolved and fetched."""
    words = {word.lower() for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
    return [name for name in table_folders() if name in words or f"{name}_versions" in words]


@dataclass(frozen=True)
class Markets:
    """Which markets' partitions the views are built from (fewer files to list and fetch); None:
    every one. The views then hold those markets' rows only."""

    exchange: str | None = None
    symbol: str | None = None  # unified, BTC/USDT

    def prefix(self, folder: str) -> str:
        prefix = f"silver/{folder}/"
        if self.exchange is not None:
            prefix += f"exchange={self.exchange}/"
            if self.symbol is not None:
                prefix += f"symbol={symbol_token(self.symbol)}/"
        return prefix

    def holds(self, key: str) -> bool:
        return self.symbol is None or f"/symbol={symbol_token(self.symbol)}/" in key


EVERY_MARKET = Markets()


@dataclass(frozen=True)
class LocalSilverFile:
    path: Path
    live: LiveSilverFile


async def local_files(lake: Lake, table: str, workdir: Path, markets: Markets = EVERY_MARKET) -> list[LocalSilverFile]:
    """The table's live files as local paths: the lake's own on file://, fetched copies otherwise."""
    live: list[LiveSilverFile] = []
    for folder in table_folders()[table]:
        live.extend(f for f in await live_silver_files(lake, markets.prefix(folder)) if markets.holds(f.key))
    if isinstance(lake, FileLake):
        return [LocalSilverFile(lake.root / f.key, f) for f in live]
    gate = asyncio.Semaphore(_FETCHES)

    async def fetch(f: LiveSilverFile) -> LocalSilverFile:
        path = workdir / f.key
        async with gate:
            data = await lake.get(f.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_bytes, data)
        return LocalSilverFile(path, f)

    return list(await asyncio.gather(*(fetch(f) for f in live)))


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: bool | int | float | str | None, kind: ColumnType) -> str:
    if value is None:
        return f"CAST(NULL AS {DUCKDB_TYPES[kind]})"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return f"CAST({quote(value)} AS {DUCKDB_TYPES[kind]})"
    return f"CAST({value!r} AS {DUCKDB_TYPES[kind]})"


def upgraded_columns(table: SilverTable, present: set[str]) -> list[str]:
    """The table's columns in its types; a column the files predate gets silver.py's default (as
    the loader and the transformer's readers fill it)."""
    selected = []
    for name, kind in table.columns:
        default = table.defaults.get(name)
        if name not in present:
            expression = literal(default, kind)
        elif default is not None:
            # Some files have the column, older ones not: union_by_name gives those null.
            expression = f"COALESCE(CAST({ident(name)} AS {DUCKDB_TYPES[kind]}), {literal(default, kind)})"
        else:
            expression = f"CAST({ident(name)} AS {DUCKDB_TYPES[kind]})"
        selected.append(f"{expression} AS {ident(name)}")
    return selected


def parquet_source(paths: Sequence[Path], *, batch_files: bool) -> str:
    listed = ", ".join(quote(str(p)) for p in paths)
    extra = ", filename = true, file_row_number = true" if batch_files else ""
    # The files' own exchange/symbol columns are the truth: DuckDB's hive partitioning would put
    # the path's tokens (symbol=BTC-USDT) in their place. The partition is already the file list.
    return f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false{extra})"


def versions_sql(con: duckdb.DuckDBPyConnection, table: SilverTable, files: list[LocalSilverFile]) -> str:
    """Every version of every row, with its lineage (which file, when written, which row)."""
    parts = []
    batch = [f for f in files if not f.live.compacted]
    compacted = [f for f in files if f.live.compacted]
    if batch:
        source = parquet_source([f.path for f in batch], batch_files=True)
        present = {row[0] for row in con.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        lineage = f"_files_{table.name}"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {lineage} (path VARCHAR, silver_key VARCHAR, written_ns BIGINT)")
        con.executemany(
            f"INSERT INTO {lineage} VALUES (?, ?, ?)", [(str(f.path), f.live.key, f.live.written_ns) for f in batch]
        )
        parts.append(
            f"SELECT {', '.join(upgraded_columns(table, present))}, l.silver_key AS {SILVER_KEY}, "
            f"l.written_ns AS {WRITTEN_NS}, r.file_row_number AS {ROW} "
            f"FROM {source} r JOIN {lineage} l ON r.filename = l.path"
        )
    if compacted:
        source = parquet_source([f.path for f in compacted], batch_files=False)
        present = {row[0] for row in con.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        parts.append(
            f"SELECT {', '.join(upgraded_columns(table, present))}, {SILVER_KEY}, {WRITTEN_NS}, {ROW} FROM {source}"
        )
    if not parts:
        nothing = ", ".join(f"{literal(None, kind)} AS {ident(name)}" for name, kind in table.columns)
        return (
            f"SELECT {nothing}, CAST(NULL AS VARCHAR) AS {SILVER_KEY}, CAST(NULL AS BIGINT) AS {WRITTEN_NS}, "
            f"CAST(NULL AS BIGINT) AS {ROW} WHERE false"
        )
    return " UNION ALL ".join(parts)


def warehouse_key(table: SilverTable) -> tuple[str, ...]:
    """The key the warehouse keeps one row per: silver's, plus `ts` where it lacks it (tables are
    partitioned on ts, decision 0021)."""
    return table.key if "ts" in table.key else (*table.key, "ts")


def value_columns(table: SilverTable) -> list[str]:
    """Columns whose change makes the loader's upsert replace a row (its lineage does not)."""
    return [c for c in table.column_names if c not in warehouse_key(table) and c != "source_event_id"]


def winners_sql(table: SilverTable, versions: str) -> str:
    """One row per key: the version the warehouse keeps.

    The loader upserts batches in arrival order, and an incoming row replaces the stored one
    when its values differ, unless it would turn a final candle into a forming one, or a native
    candle into a resampled one (upsert.py). So a row is replaced only by one at least as final
    and as native, and the class (final native > final resampled | forming native > forming
    resampled) that ends up stored is: final native if there is one; else that of the first
    final-resampled or forming-native version to arrive; else forming resampled. Within it,
    the last version's values, with the lineage of the first of the versions in a row before it
    with the same values (a re-sent row with unchanged values keeps the row that came first).
    Arrival order is write order (`_written_ns`, then batch key, then row).
    """
    names = set(table.column_names)
    final = "CASE WHEN final THEN 2 ELSE 0 END" if "final" in names else "2"
    native = "CASE WHEN resampled THEN 0 ELSE 1 END" if "resampled" in names else "1"
    key = ", ".join(ident(c) for c in warehouse_key(table))
    columns = ", ".join(ident(c) for c in table.column_names)
    values = ", ".join(ident(c) for c in value_columns(table)) or "NULL"
    return f"""
        WITH classed AS (
            SELECT *, ({final}) + ({native}) AS _class,
                   row_number() OVER (PARTITION BY {key} ORDER BY {WRITTEN_NS}, {SILVER_KEY}, {ROW}) AS _seq
            FROM ({versions})
        ), firsts AS (
            SELECT *, max(CASE WHEN _class = 3 THEN 1 ELSE 0 END) OVER k AS _top,
                      min(CASE WHEN _class IN (1, 2) THEN _seq END) OVER k AS _first_mid_seq
            FROM classed WINDOW k AS (PARTITION BY {key})
        ), ranked AS (
            SELECT *, max(CASE WHEN _seq = _first_mid_seq THEN _class END) OVER (PARTITION BY {key}) AS _first_mid
            FROM firsts
        ), stored_class AS (
            SELECT *, row({values}) AS _values FROM ranked
            WHERE _class = CASE WHEN _top = 1 THEN 3 WHEN _first_mid IS NOT NULL THEN _first_mid ELSE 0 END
        ), runs AS (
            SELECT *, _values IS DISTINCT FROM lag(_values) OVER (PARTITION BY {key} ORDER BY _seq) AS _run_start
            FROM stored_class
        )
        SELECT {columns} FROM runs
        WHERE _run_start
        QUALIFY _seq = max(_seq) OVER (PARTITION BY {key})
    """


def create_views(con: duckdb.DuckDBPyConnection, files: dict[str, list[LocalSilverFile]]) -> None:
    for name, table_files in files.items():
        table = TABLES[name]
        versions = versions_sql(con, table, table_files)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name + '_versions')} AS {versions}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS {winners_sql(table, versions)}")


def connect(files: dict[str, list[LocalSilverFile]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # timestamps shown as the lake holds them
    create_views(con, files)
    return con


def is_vanished_file(exc: duckdb.Error) -> bool:
    text = str(exc)
    return isinstance(exc, duckdb.IOException) and ("No such file" in text or "No files found" in text)


async def query_lake(
    lake: Lake,
    sql: str,
    run: Callable[[duckdb.DuckDBPyConnection], None],
    workdir: Path,
    markets: Markets = EVERY_MARKET,
) -> None:
    """Resolve the tables `sql` names, then `run(connection)`; again from a fresh resolution when a
    file vanished meanwhile (compaction deleted it after its grace period), while fetching it or
    under DuckDB."""
    for attempt in range(RESOLVE_ATTEMPTS):
        last = attempt + 1 == RESOLVE_ATTEMPTS
        try:
            tables = referenced_tables(sql)
            files = {table: await local_files(lake, table, workdir / str(attempt), markets) for table in tables}
            con = connect(files)  # reads the files' schemas: may meet a vanished file too
            try:
                await asyncio.to_thread(run, con)
                return
            finally:
                con.close()
        except ObjectMissingError:
            if last:
                raise
        except duckdb.Error as exc:
            if not is_vanished_file(exc) or last:
                raise


class QueryRunner:
    """Runs the user's query on a connection with the views and writes it out in a format."""

    def __init__(self, sql: str, fmt: str, output: Path | None, out: BinaryIO) -> None:
        self.sql = sql.strip().rstrip(";")
        self.fmt = fmt
        self.output = output
        self.out = out
        self.rows = 0

    def __call__(self, con: duckdb.DuckDBPyConnection) -> None:
        if self.fmt == "table":
            relation = con.sql(self.sql)
            rows = relation.fetchall()
            self.rows = len(rows)
            self.out.write(render_table(relation.columns, rows).encode())
            return
        target = self.output
        options = "FORMAT parquet, COMPRESSION zstd" if self.fmt == "parquet" else "FORMAT csv, HEADER true"
        if target is None:
            with tempfile.TemporaryDirectory(prefix="cryptoflow-query-") as tmp:
                path = Path(tmp) / f"result.{self.fmt}"
                con.execute(f"COPY ({self.sql}) TO {quote(str(path))} ({options})")
                with path.open("rb") as result:
                    shutil.copyfileobj(result, self.out)
            return
        con.execute(f"COPY ({self.sql}) TO {quote(str(target))} ({options})")


def render_table(columns: Sequence[str], rows: Sequence[tuple[object, ...]]) -> str:
    cells = [[("" if value is None else str(value)) for value in row] for row in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


async def run_query_async(
    sql: str, fmt: str, output: Path | None, out: BinaryIO, markets: Markets = EVERY_MARKET
) -> None:
    settings = load_settings(LakeSettings)
    lake = await open_lake(settings.lake_url, settings.s3_endpoint_url, settings.s3_max_attempts)
    try:
        with tempfile.TemporaryDirectory(prefix="cryptoflow-query-") as workdir:
            await query_lake(lake, sql, QueryRunner(sql, fmt, output, out), Path(workdir), markets)
    finally:
        await lake.close()


def run_query(sql: str, fmt: str, output: Path | None, markets: Markets = EVERY_MARKET) -> int:
    """Exit status: 0 done, 2 the query was refused (syntax, unknown table or column), 1 the lake
    could not be read."""
    try:
        asyncio.run(run_query_async(sql, fmt, output, sys.stdout.buffer, markets))
    except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, OSError, BotoCoreError, ClientError, duckdb.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    return 0
