"""`cryptoflow rebuild --from-lake` against a live run: every table equal, bad objects refused.

The live pipeline (four services as processes, derived series as `cryptoflow up` runs them) takes
candles, tickers, order books and trades from the simulator, plus a page with a bad candle of its
own market (quarantined). Then objects the lake-writer never wrote are put into the lake; silver
and quarantine are deleted; the rebuild goes into an empty database. Every table must equal the
live run's, row for row (load bookkeeping aside), and every bad object be refused with its reason.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import cryptoflow_transformer.native
import orjson
import pytest
import zstandard
from cryptoflow_cli.rebuild import rebuild as rebuild_from_lake
from cryptoflow_cli.replay import ReplayFilter
from cryptoflow_cli.up import DERIVED_DEFAULTS
from cryptoflow_contracts import Dataset, RawSnapshot
from cryptoflow_lake_writer import build_objects
from cryptoflow_native import RecordedCall
from cryptoflow_runtime.lake import sha256_hex
from warehouse.support import create_database

from .harness import Pipeline
from .test_silver_datasets import candles, publish_raw

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000
N = 240
JOBS = """
exchanges:
  binance:
    url: {url}
    rate_limit_ms: 20
    symbols: [BTC/USDT, ETH/USDT]
    datasets:
      ohlcv: {{timeframes: [1m], since: 2024-01-01T00:00:00Z, page_limit: 60, poll_interval_s: 1}}
      ticker: {{poll_interval_s: 1}}
      orderbook: {{depth: 5, poll_interval_s: 1}}
      trades: {{since: 2024-01-01T00:00:00Z, poll_interval_s: 1, page_limit: 200}}
"""
# What each table must hold again: every column of its view — values, resampled/final, lineage
# (source_event_id, batch_id) — but load bookkeeping: when and how often a row was written, and
# `series_id`, a surrogate numbered in the order series first appear (the names are compared).
TABLES = ("ohlcv", "indicators", "tickers", "order_books", "trades", "quarantine")
BOOKKEEPING = {"loaded_at", "version", "batch_no", "series_id"}
LIVE_DURABLES = (
    ("RAW", "lake-writer"),
    ("LAKE", "transformer"),
    ("SILVER", "warehouse-loader"),
    ("DLQ", "warehouse-loader-quarantine"),
)
BTC = "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-01-01"


async def compared_columns(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position", table
    )
    columns = [r["column_name"] for r in rows if r["column_name"] not in BOOKKEEPING]
    assert columns, table
    return columns


async def table_digests(url: str, per_column: bool = False) -> dict[str, tuple[int, str]]:
    """Per table: (rows, md5 of its rows as text, ordered by every compared column); with
    `per_column`, per table·column (to tell which column differs)."""
    conn = await asyncpg.connect(url)
    try:
        digests = {}
        for table in TABLES:
            columns = await compared_columns(conn, table)
            row = ", ".join(f'"{c}"' for c in columns)
            for name, value in [(table, f"ROW({row})"), *((f"{table}.{c}", f'"{c}"') for c in columns if per_column)]:
                count, digest = await conn.fetchrow(
                    f"SELECT count(*), md5(coalesce(string_agg({value}::text, E'\\n' ORDER BY {row}), '')) FROM {table}"
                )
                digests[name] = (count, digest)
        return digests
    finally:
        await conn.close()


def rebuild(
    pipe: Pipeline, database_url: str, nats_url: str, *, derived: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in pipe.env("cli").items() if k != "CRYPTOFLOW_HOME" and not k.startswith("TRANSFORMER_")}
    env.update({"DATABASE_URL": database_url, "NATS_URL": nats_url, **(DERIVED_DEFAULTS if derived else {})})
    return subprocess.run(
        [sys.executable, "-m", "cryptoflow_cli.main", "rebuild", "--from-lake"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def zstd(ndjson: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(ndjson)


def bad_objects(lake: Path) -> dict[str, str]:
    """Objects no lake-writer wrote, put into the lake: key → the check that must refuse it."""
    real = sorted((lake / BTC).glob("*.ndjson.zst"))[0]
    ndjson = zstandard.ZstdDecompressor().decompress(real.read_bytes())
    first_line = orjson.loads(ndjson.splitlines()[0])
    first = real.name.split("-", 1)[0]
    # Another writer's version of a real page (a candle changed), under a name it did not earn.
    changed = {**first_line, "payload": [[c[0], c[1], c[2] * 2, c[3], c[4], c[5]] for c in first_line["payload"]]}
    conflicting = orjson.dumps(changed) + b"\n"
    not_snapshots = b'{"hello": "world"}\n{"not": "a RawSnapshot"}\n'
    # A real RawSnapshot of another market, filed (and correctly named) in this one's partition.
    stranger = (
        RawSnapshot(
            dataset=Dataset.OHLCV,
            exchange="binance",
            symbol="ETH/USDT",
            timeframe="1m",
            fetched_at=datetime(2024, 1, 1, tzinfo=UTC),
            payload=[[T0, 1.0, 1.0, 1.0, 1.0, 1.0]],
            first_ts=T0,
            last_ts=T0,
        ).to_json()
        + b"\n"
    )
    objects = {
        f"{BTC}/{T0}-{'0' * 24}.ndjson.zst": (b"\x00 not a zstd frame", "not_zstd"),
        f"{BTC}/{first}-{'ab' * 12}.ndjson.zst": (zstd(conflicting), "name_not_content"),
        f"{BTC}/{T0}-{sha256_hex(not_snapshots)[:24]}.ndjson.zst": (zstd(not_snapshots), "not_raw_snapshots"),
        f"{BTC}/{T0}-{sha256_hex(stranger)[:24]}.ndjson.zst": (zstd(stranger), "not_lake_writer_object"),
        f"{BTC}/notes.txt": (b"a stray file", "layout"),
    }
    for key, (data, _) in objects.items():
        (lake / key).write_bytes(data)
    return {key: check for key, (_, check) in objects.items()}


async def dead_letters(pipe: Pipeline) -> list[dict[str, object]]:
    return [orjson.loads(m.data) for m in await pipe.stream_messages("DLQ")]


def quarantined_page() -> RawSnapshot:
    """A page of XRP/ETH candles, one of them impossible (high below low): quarantined live."""
    page = candles()[1]
    rows = [list(row) for row in page.payload]
    rows[5][2] = rows[5][3] / 2
    return RawSnapshot.model_validate({**page.model_dump(), "payload": rows, "event_id": ""})


async def test_rebuild_restores_every_table_of_a_live_run_and_refuses_bad_objects(
    file_pipeline: Pipeline, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = file_pipeline
    pipe.start_simulator(
        [
            "--exchange",
            "all",
            "--symbols",
            "BTC/USDT,ETH/USDT",
            "--seed",
            "5",
            "--start",
            str(T0),
            "--end",
            str(T0 + N * MINUTE),
        ]
    )
    assert pipe.sim_url
    jobs = pipe.workdir / "jobs.yaml"
    jobs.write_text(JOBS.format(url=pipe.sim_url))
    # One object at a time (the default), as the lake-writer wrote them: the order the rebuild
    # replays. (With more, two objects of one market may be derived out of order: the same
    # values, but some derived rows then name another batch; docs/decisions/0038.)
    pipe.extra_env.update({"EXTRACTOR_CONFIG": str(jobs), "TRANSFORMER_CONCURRENCY": "1", **DERIVED_DEFAULTS})
    procs = pipe.start_all()
    xrp = candles()
    await publish_raw(pipe.nats_url, [xrp[0], quarantined_page(), xrp[2]])

    seen: list[object] = []

    async def live_run_complete() -> bool:
        try:
            c = (
                await pipe.fetch(
                    """
                    SELECT (SELECT count(*) FROM ohlcv WHERE NOT resampled) AS native,
                           (SELECT count(*) FROM indicators) AS indicators,
                           (SELECT count(DISTINCT ts) FROM tickers) AS tickers,
                           (SELECT count(*) FROM order_books) AS books,
                           (SELECT count(*) FROM trades) AS trades,
                           (SELECT count(*) FROM quarantine) AS quarantined
                    """
                )
            )[0]
        except asyncpg.UndefinedTableError:  # not migrated yet
            return False
        seen[:] = [dict(c)]
        # XRP/ETH: 300 candles, one quarantined.
        return (c["native"], c["indicators"], c["quarantined"]) == (2 * N + 299, 2 * N + 299, 1) and min(
            c["tickers"], c["books"], c["trades"]
        ) >= 1

    try:
        await pipe.wait_for("the live run", live_run_complete, timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"last seen {seen}") from exc
    procs["extractor"].terminate()
    await pipe.wait_for("the pipeline to drain", lambda: pipe.drained(LIVE_DURABLES), timeout=60)
    await asyncio.sleep(1.0)  # the loader's last ack after its commit
    assert await pipe.drained(LIVE_DURABLES)
    live = await table_digests(pipe.database_url, per_column=True)
    for name in ("lake-writer", "transformer", "warehouse-loader"):
        procs[name].terminate()
    assert live["quarantine"][0] == 1 and all(live[table][0] for table in TABLES), live

    lake = Path(pipe.lake_url.removeprefix("file://"))
    written = len(list(lake.glob("bronze/**/*.ndjson.zst")))
    expected_refusals = bad_objects(lake)
    for layer in ("silver", "quarantine"):
        shutil.rmtree(lake / layer)
    letters_before = len(await dead_letters(pipe))

    empty = await create_database(database_url)
    result = rebuild(pipe, empty, pipe.nats_url)
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.splitlines()[0]
    total = written + len(expected_refusals)
    assert summary.startswith(f"rebuilt {written} of {total} bronze object(s)"), summary
    assert f"; refused {len(expected_refusals)}: " in summary, summary
    for key, check in expected_refusals.items():
        assert f"refused {key}: [{check}]" in result.stdout, (key, check, result.stdout[-3000:])

    # Every table equals the live run's, derived series and quarantine included; nothing of the
    # bad objects is in any of them.
    rebuilt = await table_digests(empty, per_column=True)
    differing = [name for name in live if rebuilt[name] != live[name]]
    assert not differing, f"differing: {differing}"

    letters = (await dead_letters(pipe))[letters_before:]
    found = {str(letter["details"]["source_key"]): letter for letter in letters}  # type: ignore[index]
    assert len(letters) == len(found) == len(expected_refusals)
    assert set(found) == set(expected_refusals)
    for key, letter in found.items():
        assert letter["stage"] == "transformer"
        assert letter["details"]["check"] == expected_refusals[key]  # type: ignore[index]
        assert letter["details"]["found_by"] == "cryptoflow rebuild --from-lake"  # type: ignore[index]
    assert f"{len(expected_refusals)} DeadLetter(s) published to DLQ" in result.stdout

    # Issue 11: the lake holds both bronze formats — the extractor's pages with what the exchange
    # sent (schema version 2), the XRP/ETH pages published here as ccxt results only (version 1) —
    # and the rebuild above restored all of them.
    versions = {
        orjson.loads(line)["schema_version"]
        for path in lake.glob("bronze/**/*.ndjson.zst")
        if str(path.relative_to(lake)) not in expected_refusals
        for line in zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 30).splitlines()
    }
    assert versions == {1, 2}

    # A parser change replayed over history: candles parsed from the exchange's own bodies take
    # it, with the simulator gone (no request is made); pages kept as ccxt results cannot.
    for proc in pipe.procs:
        proc.terminate()
    for layer in ("silver", "quarantine"):  # silver is write-once: a new parse starts without it
        shutil.rmtree(lake / layer)
    changed = await create_database(database_url)
    await rebuild_in_process(pipe, changed, monkeypatch)
    closes = "SELECT symbol, (extract(epoch FROM ts) * 1000)::bigint AS ms, close FROM ohlcv WHERE NOT resampled"
    before = {(r["symbol"], r["ms"]): r["close"] for r in await pipe.fetch(closes)}
    after = {(r["symbol"], r["ms"]): r["close"] for r in await fetch_from(changed, closes)}
    quarantined = await fetch_from(changed, "SELECT reason, count(*) FROM quarantine GROUP BY reason")
    assert after.keys() == before.keys(), [tuple(r.values()) for r in quarantined]
    for (symbol, ms), close in before.items():
        expected = float(round(close)) if symbol in ("BTC/USDT", "ETH/USDT") else close
        assert after[(symbol, ms)] == expected, (symbol, ms, close, after[(symbol, ms)])
    assert any(round(close) != close for (symbol, _), close in before.items() if symbol == "BTC/USDT")


async def rebuild_in_process(pipe: Pipeline, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rebuild --from-lake` in this process (one process, no children), its candle parser
    changed: every price rounded to a whole number."""
    env = {k: v for k, v in pipe.env("cli").items() if k != "CRYPTOFLOW_HOME" and not k.startswith("TRANSFORMER_")}
    for name, value in {**env, "DATABASE_URL": database_url, **DERIVED_DEFAULTS}.items():
        monkeypatch.setenv(name, value)
    original = cryptoflow_transformer.native.replay

    def rounding(call: RecordedCall) -> Any:
        result = original(call)
        if call.method != "fetchOHLCV":
            return result
        # Every price (rounding keeps low <= open, close <= high): a changed rounding.
        return [[row[0], *(float(round(price)) for price in row[1:5]), *row[5:]] for row in result]

    monkeypatch.setattr(cryptoflow_transformer.native, "replay", rounding)
    out = io.StringIO()
    summary = await rebuild_from_lake(ReplayFilter(), out, processes=1)
    assert summary.rebuilt > 0, (summary, out.getvalue()[-3000:])


async def fetch_from(database_url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_without_nats_the_refusals_are_reported_and_a_second_rebuild_changes_nothing(
    fresh_database_url: str, tmp_path: Path
) -> None:
    """No stream at all: the refused object is in the summary and the exit status (its DeadLetter
    could not be published), the rest is loaded; rebuilding again writes no row."""
    lake = tmp_path / "lake"
    for obj in build_objects(candles()):
        (lake / obj.key).parent.mkdir(parents=True, exist_ok=True)
        (lake / obj.key).write_bytes(obj.data)
    partition = next(lake.glob("bronze/ohlcv/exchange=binance/symbol=XRP-ETH/date=*"))
    stray = partition / f"1570752000000-{'c' * 24}.ndjson.zst"
    stray.write_bytes(zstd(b"{}\n"))
    pipe = Pipeline(
        nats_url="nats://127.0.0.1:9", database_url=fresh_database_url, lake_url=f"file://{lake}", workdir=tmp_path
    )

    first = rebuild(pipe, fresh_database_url, "nats://127.0.0.1:9", derived=False)
    assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]
    key = stray.relative_to(lake).as_posix()
    assert f"refused {key}: [name_not_content]" in first.stdout
    assert "0 of 1 DeadLetter(s) published to DLQ: NATS at nats://127.0.0.1:9 unreachable" in first.stdout
    assert "derived series: off" in first.stdout
    assert await pipe.ohlcv_count() == 300

    again = rebuild(pipe, fresh_database_url, "nats://127.0.0.1:9", derived=False)
    assert again.returncode == 3
    assert "(0 row(s) written)" in again.stdout.splitlines()[0], again.stdout
    assert await pipe.ohlcv_count() == 300
