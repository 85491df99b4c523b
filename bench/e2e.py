"""End-to-end benchmark: RAW → lake-writer → transformer → warehouse-loader → PostgreSQL, vs the loader alone.

One run, on real nats-server and PostgreSQL (started here from their wheels; durable settings as in
bench/loader.py, plus pg_stat_statements to see where the database's time goes) and a file:// lake:

1. backlog: E2E_CANDLES (2,000,000) 1m candles over E2E_SERIES (20) series are published to RAW
   *before* any service runs, as the extractor's backfill publishes them: RawSnapshot pages of
   E2E_PAGE (1000) candles (same request/first_ts/last_ts/final shape as OhlcvJob._publish),
   Nats-Msg-Id = event_id, subject raw_subject(...), pages interleaved across series.
2. throughput: the three services start as separate processes (`python -m <module>`, env as
   `cryptoflow up` gives them, so the transformer's derived series — resampled 5m…1d candles,
   indicators, anomalies — are ON: cryptoflow_cli.up.DERIVED_DEFAULTS). Timed from their spawn
   until every 1m candle is visible in the `ohlcv` view (polled via `series.rows_received`, which
   the loader updates in the rows' own transaction; checked with a count(*) on the view at the
   end). Then the stack is left to drain (derived batches) before the next phase.
3. latency: with the stack running and idle, E2E_LATENCY_RATE (1000) candles/s for E2E_LATENCY_S
   (30) s: a page of E2E_LATENCY_PAGE (100) new candles every 100 ms, round robin over the series.
   Per page: RAW publish (client clock, just before the publish call) → its rows committed. The
   commit time is the JetStream timestamp of the loader's `Loaded` event for the page's 1m batch,
   found by following event ids RawSnapshot → ObjectWritten.source_event_ids (LAKE) → BatchReady
   .source_event_id (SILVER) → Loaded.batch_event_id (WAREHOUSE). The loader publishes Loaded
   right after its transaction committed, and the server shares this machine's clock, so this is
   exact to about a publish round trip, and gives the per-stage split for free. Cross-check: a
   20 ms poll of series.last_ts (visible at the first poll that sees it; ≤ 20 ms late).
4. loader alone: the 1m silver Parquet objects the transformer wrote in phase 2 (from its
   BatchReady events, in SILVER order), loaded into fresh databases of the same server, one
   connection, files read before timing: with `upsert.load_batch` per batch, and with
   `upsert.load_batches` per pull of E2E_LOADER_GROUP (32) as the service loads them (decision
   0039). The denominator is the faster of the two: the loader's best on these rows. For
   reference, also every SILVER batch of phase 2 (1m + indicators + resampled), grouped: what the
   loader alone needs for the deployed workload.

The services are stopped before phase 4 so it has the machine. Per-stage profile from each
service's /metrics (handler seconds, batch sizes, objects, rows), OS CPU time per process,
stream/consumer info, the loader's ledger (per-batch duration by table, fitted as fixed + per-row
cost) and pg_stat_statements. E2E_PROFILE=1 runs each service under cProfile and prints its top
functions (slower: not for the headline figures).

    uv run python bench/e2e.py          # or: make bench BENCH=e2e
    E2E_CANDLES=200000 E2E_SERIES=20 E2E_LATENCY_S=10 uv run python bench/e2e.py

Last line: `e2e_candles_per_s=… e2e_vs_loader_alone=… e2e_p99_ms=…`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import nats
import numpy as np
import polars as pl
from cryptoflow_cli.servers import ServerProcess, start_nats, start_postgres
from cryptoflow_cli.up import DERIVED_DEFAULTS
from cryptoflow_contracts import BatchReady, Loaded, ObjectWritten, RawSnapshot, Stream
from cryptoflow_runtime import ensure_streams
from cryptoflow_warehouse_loader.migrations import migrate
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch, load_batches
from nats.js import JetStreamContext

# Run as a script (`python bench/<name>.py`, as `python -m bench` runs it): the repo root, for bench.support.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.support import (
    PG_SETTINGS,
    CandleSource,
    CpuMeter,
    Metrics,
    ServiceProc,
    check_alive,
    consumer_state,
    create_database,
    env_float,
    env_int,
    fetch,
    log,
    msg_time,
    percentile,
    profile_summary,
    publish_snapshot,
    publish_snapshots,
    read_stream,
    reset_statements,
    scrape,
    spawn_service,
    statement_profile,
    stream_last_seq,
)

SERVICES = ("warehouse-loader", "transformer", "lake-writer")  # the order `cryptoflow up` starts them
DURABLES = {
    "lake-writer": (Stream.RAW, "lake-writer"),
    "transformer": (Stream.LAKE, "transformer"),
    "warehouse-loader": (Stream.SILVER, "warehouse-loader"),
}
ROWS_1M = "SELECT coalesce(sum(rows_received), 0) FROM series WHERE table_name = 'ohlcv' AND timeframe = '1m'"


@dataclass
class Stack:
    home: Path
    nats: ServerProcess
    postgres: ServerProcess
    lake_url: str
    procs: list[ServiceProc] = field(default_factory=list)

    @property
    def lake_root(self) -> Path:
        return Path(self.lake_url.removeprefix("file://"))

    def env(self) -> dict[str, str]:
        env = {**os.environ, "NATS_URL": self.nats.url, "DATABASE_URL": self.postgres.url, "LAKE_URL": self.lake_url}
        for name, value in DERIVED_DEFAULTS.items():  # as `cryptoflow up` sets them; a set variable wins
            env[name] = os.environ.get(name, value)
        return env


# --- phase 2: throughput ---------------------------------------------------------------------


async def rows_1m(conn: asyncpg.Connection) -> int:
    try:
        return int(await conn.fetchval(ROWS_1M))
    except asyncpg.UndefinedTableError:
        return 0


async def drained(js: JetStreamContext) -> bool:
    for stream, durable in DURABLES.values():
        state = await consumer_state(js, stream.value, durable)
        if state is None or state[0] or state[1]:
            return False
    return True


@dataclass
class Throughput:
    first_row_s: float  # spawn → the first 1m row visible (start-up, migrations, first batch through)
    done_s: float  # spawn → every 1m row visible
    drained_s: float  # spawn → every consumer drained (derived series loaded too)
    steady_rate: float  # 1m rows/s between 10 % and 90 % of them


async def throughput(stack: Stack, js: JetStreamContext, expected: int, timeout_s: float) -> Throughput:
    conn = await asyncpg.connect(stack.postgres.url)
    started = time.perf_counter()
    first_row = done_1m = 0.0
    last_report = started
    samples: list[tuple[float, int]] = []
    try:
        while True:
            check_alive(stack.procs)
            now = time.perf_counter()
            if now - started > timeout_s:
                raise TimeoutError(f"{expected} 1m candles not loaded after {timeout_s:.0f}s")
            seen = await rows_1m(conn)
            samples.append((now - started, seen))
            if seen and not first_row:
                first_row = now - started
            if now - last_report >= 15:
                last_report = now
                lag = {name: await consumer_state(js, s.value, d) for name, (s, d) in DURABLES.items()}
                log(
                    f"  {now - started:6.0f}s  1m rows {seen:>10,}/{expected:,}  (pending, unacked, redelivered): {lag}"
                )
            if seen >= expected:
                done_1m = now - started
                break
            await asyncio.sleep(0.25)
        while not await drained(js):
            check_alive(stack.procs)
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError("stack did not drain")
            await asyncio.sleep(0.5)
        # Twice, a moment apart: a batch acked upstream is published downstream before its ack.
        await asyncio.sleep(1.0)
        while not await drained(js):  # noqa: ASYNC110 - state of the server, polled
            await asyncio.sleep(0.5)
        drained_s = time.perf_counter() - started - 1.0
    finally:
        await conn.close()
    t10 = next(t for t, n in samples if n >= 0.1 * expected)
    t90 = next(t for t, n in samples if n >= 0.9 * expected)
    steady = 0.8 * expected / (t90 - t10) if t90 > t10 else float("nan")
    return Throughput(first_row, done_1m, drained_s, steady)


# --- phase 3: latency ------------------------------------------------------------------------


@dataclass
class Page:
    snapshot: RawSnapshot
    published: float = 0.0  # epoch s, client clock, just before the publish call
    polled: float = 0.0  # first series.last_ts poll that showed its last candle


@dataclass
class Latency:
    e2e_ms: list[float]
    poll_ms: list[float]
    stages_ms: dict[str, list[float]]
    missing: int
    pages: int
    candles: int
    publish_lag_ms: float


async def poll_visibility(url: str, pages: list[Page], stop: asyncio.Event) -> None:
    """Every 20 ms: each series' last loaded 1m candle; stamps the pages it covers."""
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            at = time.time()
            rows = await conn.fetch(
                "SELECT symbol, last_ts FROM series WHERE table_name = 'ohlcv' AND timeframe = '1m' AND exchange = $1",
                "binance",
            )
            last = {r["symbol"]: r["last_ts"].timestamp() * 1000 for r in rows if r["last_ts"] is not None}
            for page in pages:
                if (
                    page.published
                    and not page.polled
                    and last.get(page.snapshot.symbol, -1) >= (page.snapshot.last_ts or 0)
                ):
                    page.polled = at
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def latency(
    stack: Stack, js: JetStreamContext, source: CandleSource, seconds: float, rate: int, size: int
) -> Latency:
    count = max(1, int(seconds * rate / size))
    interval = size / rate
    series = len(source.symbols)
    pages = [Page(source.page(k % series, size)) for k in range(count)]  # built beforehand: only publishing is timed
    after = {s: await stream_last_seq(js, s.value) for s in (Stream.LAKE, Stream.SILVER, Stream.WAREHOUSE)}
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_visibility(stack.postgres.url, pages, stop))
    lags = []
    begin = time.monotonic()
    for k, page in enumerate(pages):
        due = begin + k * interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        lags.append(time.monotonic() - due)
        page.published = time.time()
        await publish_snapshot(js, page.snapshot)
    log(f"  published {count} pages of {size} candles in {time.monotonic() - begin:.1f}s")
    deadline = time.monotonic() + 180
    while any(not p.polled for p in pages) and time.monotonic() < deadline:
        check_alive(stack.procs)
        await asyncio.sleep(0.2)
    while not await drained(js) and time.monotonic() < deadline:  # noqa: ASYNC110 - polled server state
        await asyncio.sleep(0.2)
    stop.set()
    await poller

    objects: dict[str, tuple[str, float]] = {}  # RawSnapshot id → (ObjectWritten id, stored at)
    for msg in await read_stream(js, Stream.LAKE.value, "cryptoflow.lake.>", after[Stream.LAKE]):
        written = ObjectWritten.model_validate_json(msg.data)
        for event_id in written.source_event_ids:
            objects.setdefault(event_id, (written.event_id, msg_time(msg)))
    silver: dict[str, tuple[str, float]] = {}  # ObjectWritten id → (its 1m BatchReady id, stored at)
    for msg in await read_stream(js, Stream.SILVER.value, "cryptoflow.silver.>", after[Stream.SILVER]):
        batch = BatchReady.model_validate_json(msg.data)
        if batch.table == "ohlcv" and "/resampled-" not in batch.key:
            silver.setdefault(batch.source_event_id, (batch.event_id, msg_time(msg)))
    loaded: dict[str, float] = {}  # BatchReady id → Loaded stored at
    for msg in await read_stream(js, Stream.WAREHOUSE.value, "cryptoflow.warehouse.>", after[Stream.WAREHOUSE]):
        loaded.setdefault(Loaded.model_validate_json(msg.data).batch_event_id, msg_time(msg))

    e2e, polled, missing = [], [], 0
    stages: dict[str, list[float]] = defaultdict(list)
    for page in pages:
        if page.polled:
            polled.append((page.polled - page.published) * 1000)
        obj = objects.get(page.snapshot.event_id)
        one_m = silver.get(obj[0]) if obj else None
        done = loaded.get(one_m[0]) if one_m else None
        if obj is None or one_m is None or done is None:
            missing += 1
            continue
        e2e.append((done - page.published) * 1000)
        stages["RAW publish → ObjectWritten (lake-writer)"].append((obj[1] - page.published) * 1000)
        stages["ObjectWritten → BatchReady 1m (transformer)"].append((one_m[1] - obj[1]) * 1000)
        stages["BatchReady → Loaded (loader, queue incl.)"].append((done - one_m[1]) * 1000)
    return Latency(e2e, polled, dict(stages), missing, count, count * size, 1000 * max(lags, default=0.0))


# --- phase 4: the loader alone ---------------------------------------------------------------


async def silver_batches(js: JetStreamContext, upto_seq: int) -> list[BatchReady]:
    msgs = await read_stream(js, Stream.SILVER.value, "cryptoflow.silver.>", 0)
    return [BatchReady.model_validate_json(m.data) for m in msgs if m.metadata.sequence.stream <= upto_seq]


async def fresh_database(server_url: str, name: str) -> str:
    """An empty, migrated database; made before the services start, so that its schema comes from
    the same code as the one they migrate."""
    url = await create_database(server_url, name)
    await asyncio.to_thread(migrate, url)
    return url


async def loader_alone(
    url: str, lake_root: Path, batches: list[BatchReady], group: int = 1
) -> tuple[int, float, float]:
    """(rows, seconds loading, seconds reading the Parquet files) into the empty database `url`:
    `load_batch` per batch, or with `group` > 1 as the service loads a pull of that many
    (`load_batches` per table of each run of `group` consecutive batches)."""
    started = time.perf_counter()
    frames = [pl.read_parquet(lake_root / b.key) for b in batches]
    read_s = time.perf_counter() - started
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CHECKPOINT")
        started = time.perf_counter()
        if group == 1:
            for frame, batch in zip(frames, batches, strict=True):
                await load_batch(conn, TABLES[batch.table], frame, batch)
        else:
            for start in range(0, len(batches), group):
                pulled: dict[tuple[str, str], list[tuple[BatchReady, pl.DataFrame]]] = defaultdict(list)
                for batch, frame in zip(batches[start : start + group], frames[start : start + group], strict=True):
                    pulled[(batch.table, batch.dataset.value)].append((batch, frame))
                for (table, _), items in pulled.items():
                    await load_batches(conn, TABLES[table], items)
        return sum(f.height for f in frames), time.perf_counter() - started, read_s
    finally:
        await conn.close()


# --- the profile -----------------------------------------------------------------------------


def per(total: float, count: float) -> float:
    return total / count if count else float("nan")


async def ledger_profile(url: str, after_batch_no: int) -> list[str]:
    """The loader's own per-batch cost (batches.duration_ms: load_batch inside the transaction, by
    table and path), fitted as fixed cost per batch + cost per row."""
    rows = await fetch(
        url,
        """
        SELECT b.target_table, coalesce(b.load_path, '?') AS path, b.rows, b.duration_ms,
               b.silver_key LIKE '%/resampled-%' AS resampled
        FROM batches b WHERE b.duration_ms IS NOT NULL AND b.batch_no > $1
        """,
        after_batch_no,
    )
    groups: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        label = f"{r['target_table']}{' (resampled)' if r['resampled'] else ''} {r['path']}"
        groups[label].append((int(r["rows"]), float(r["duration_ms"])))
    lines = [
        f"    {'table / path':<28} {'batches':>7} {'rows':>10} {'rows/batch':>10} {'s total':>8} {'ms/batch':>9} {'fixed ms':>9} {'µs/row':>7}"
    ]
    for label, items in sorted(groups.items(), key=lambda kv: -sum(d for _, d in kv[1])):
        n = np.array([r for r, _ in items], dtype=float)
        ms = np.array([d for _, d in items], dtype=float)
        fixed, per_row = float("nan"), float("nan")
        if len(items) >= 3 and n.std() > 0:
            per_row, fixed = (float(x) for x in np.polyfit(n, ms, 1))
        lines.append(
            f"    {label:<28} {len(items):>7} {int(n.sum()):>10,} {n.mean():>10.0f} {ms.sum() / 1000:>8.2f} "
            f"{ms.mean():>9.1f} {fixed:>9.1f} {per_row * 1000:>7.1f}"
        )
    return lines


def log_counts(procs: list[ServiceProc]) -> dict[str, int]:
    texts = {p.name: p.log_text() for p in procs}
    return {
        "transformer: series recomputed from an earlier checkpoint (re-reads silver history)": texts.get(
            "transformer", ""
        ).count("series recomputed from an earlier checkpoint"),
        "warehouse-loader: load failed, will retry": texts.get("warehouse-loader", "").count("load failed, will retry"),
        "any: ERROR lines": sum(len(re.findall(r'"level": ?"ERROR"', t)) for t in texts.values()),
    }


async def stage_profile(
    title: str,
    stack: Stack,
    js: JetStreamContext,
    metrics: dict[str, Metrics],
    cpu: dict[str, float],
    busy: float,
    wall: float,
    after_batch_no: int = 0,
) -> None:
    cores = os.cpu_count() or 1
    ours = sum(v for v in cpu.values() if v == v)
    log(
        f"\n-- per-stage profile: {title} ({wall:.1f}s wall; {cores} cores = {cores * wall:.0f} core-s; "
        f"machine busy {busy:.0f} core-s, ours {ours:.0f}, others' {max(0.0, busy - ours):.0f}) --"
    )
    log(f"  {'process':<18}{'CPU s':>8}{'% of a core':>12}{'inputs':>9}{'handler s':>10}{'ms/input':>9}  notes")
    for name, used in cpu.items():
        m = metrics.get(name)
        inputs = handled = 0.0
        notes = ""
        if m is not None:
            handled = m.total("cryptoflow_handler_seconds_sum", service=name)
            inputs = m.total("cryptoflow_handler_seconds_count", service=name)
            if name == "lake-writer":
                snaps = m.total("cryptoflow_batch_messages_sum", service=name)
                objs = m.total("cryptoflow_lake_objects_written_total")
                notes = (
                    f"inputs = fetched batches: {per(snaps, inputs):.0f} snapshots/batch, "
                    f"{objs:.0f} bronze objects ({per(snaps, objs):.1f} snapshots, "
                    f"{m.total('cryptoflow_lake_bytes_written_total') / max(objs, 1) / 1024:.0f} KiB each), "
                    f"{per(handled * 1000, objs):.1f} ms/object"
                )
            elif name == "transformer":
                rows = m.total("cryptoflow_transformer_silver_rows_total")
                derived = m.by_label("cryptoflow_transformer_derived_rows_total", "table")
                anomalies = m.total("cryptoflow_transformer_anomalies_total")
                notes = (
                    f"inputs = bronze objects: {per(rows, inputs):.0f} silver rows each; derived rows "
                    f"{ {k: int(v) for k, v in derived.items()} }, {anomalies:.0f} anomalies; "
                    f"{per(used, rows) * 1e6:.1f} CPU-µs/candle"
                )
            elif name == "warehouse-loader":
                rows = m.total("cryptoflow_warehouse_rows_total")
                notes = (
                    f"inputs = silver batches: {per(rows, inputs):.0f} rows each, {rows:,.0f} rows; "
                    f"idle/waiting {max(0.0, wall - handled):.0f}s of {wall:.0f}s"
                )
        handler = f"{inputs:>9.0f}{handled:>10.1f}{per(handled * 1000, inputs):>9.1f}" if m is not None else " " * 28
        log(f"  {name:<18}{used:>8.1f}{100 * used / wall:>11.0f}%{handler}  {notes}")
    log("  streams (messages, MiB):")
    for stream in (Stream.RAW, Stream.LAKE, Stream.SILVER, Stream.WAREHOUSE, Stream.ANOMALIES, Stream.RUNS, Stream.DLQ):
        info = await js.stream_info(stream.value)
        log(f"    {stream.value:<10}{info.state.messages:>9,}{info.state.bytes / 2**20:>9.1f}")
    for stream, durable in DURABLES.values():
        log(
            f"    consumer {durable} on {stream.value}: (pending, unacked, redelivered) = "
            f"{await consumer_state(js, stream.value, durable)}"
        )
    log("  loader ledger, load_batch time per batch (inside the transaction; fixed + per-row fit):")
    for line in await ledger_profile(stack.postgres.url, after_batch_no):
        log(line)
    log("  PostgreSQL time by statement (pg_stat_statements, track=all: nested statements counted too):")
    for line in await statement_profile(stack.postgres.url, top=16):
        log(line)
    for what, count in log_counts(stack.procs).items():
        log(f"  {what}: {count}")


# --- main ------------------------------------------------------------------------------------


async def main() -> None:
    candles = env_int("E2E_CANDLES", 2_000_000)
    series = env_int("E2E_SERIES", 20)
    page_size = env_int("E2E_PAGE", 1000)
    latency_s = env_float("E2E_LATENCY_S", 30.0)
    latency_rate = env_int("E2E_LATENCY_RATE", 1000)
    latency_page = env_int("E2E_LATENCY_PAGE", 100)
    timeout_s = env_float("E2E_TIMEOUT_S", 3600.0)
    profile = os.environ.get("E2E_PROFILE") == "1"
    log(
        f"e2e benchmark: {candles:,} 1m candles over {series} series in pages of {page_size}; derived series "
        f"{ {k: os.environ.get(k, v) for k, v in DERIVED_DEFAULTS.items()} }; latency {latency_rate}/s for "
        f"{latency_s:.0f}s in pages of {latency_page}{'; services under cProfile' if profile else ''}"
    )

    home = Path(tempfile.mkdtemp(prefix="cryptoflow-e2e-"))
    nats_server = await asyncio.to_thread(start_nats, home / "nats")
    postgres = await asyncio.to_thread(start_postgres, home / "pg", settings=PG_SETTINGS)
    stack = Stack(home, nats_server, postgres, f"file://{home / 'lake'}")
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        alone_urls = [
            await fresh_database(postgres.url, name)
            for name in ("loader_alone", "loader_alone_grouped", "loader_alone_all")
        ]
        await reset_statements(postgres.url)

        source = CandleSource(series)
        started = time.perf_counter()
        pages = source.backfill(candles, page_size)
        built = time.perf_counter() - started
        started = time.perf_counter()
        published = await publish_snapshots(js, pages)
        raw = await js.stream_info(Stream.RAW.value)
        log(
            f"backlog: {published:,} candles in {len(pages)} RawSnapshots ({raw.state.bytes / 2**20:.0f} MiB in RAW), "
            f"built in {built:.1f}s, published in {time.perf_counter() - started:.1f}s"
        )
        del pages

        meter = CpuMeter(
            {
                "postgres": (postgres.pid, True),
                "nats-server": (nats_server.pid, False),
                "bench (this)": (os.getpid(), False),
            }
        )
        meter.begin()
        env = stack.env()
        for name in SERVICES:
            stack.procs.append(spawn_service(name, env, home, profile=profile))
        for proc in stack.procs:
            meter.pids[proc.name] = (proc.popen.pid, False)  # from 0: the process's whole life
        log("throughput phase: services started")
        result = await throughput(stack, js, published, timeout_s)
        count_1m = int((await fetch(postgres.url, "SELECT count(*) FROM ohlcv WHERE timeframe = '1m'"))[0][0])
        assert count_1m == published, (count_1m, published)
        e2e_rate = published / result.done_s
        log(
            f"  all {published:,} 1m candles visible after {result.done_s:.1f}s: {e2e_rate:,.0f} candles/s "
            f"(first visible after {result.first_row_s:.1f}s; {result.steady_rate:,.0f}/s between 10 % and 90 %); "
            f"everything (derived series too) drained after {result.drained_s:.1f}s"
        )
        cpu, busy, wall = meter.read()
        metrics = {p.name: await scrape(p.metrics_url) for p in stack.procs}
        await stage_profile("throughput phase", stack, js, metrics, cpu, busy, wall)
        silver_seq = await stream_last_seq(js, Stream.SILVER.value)

        log(f"\nlatency phase: {latency_rate} candles/s for {latency_s:.0f}s")
        await reset_statements(postgres.url)
        batch_mark = int((await fetch(postgres.url, "SELECT coalesce(max(batch_no), 0) FROM batches"))[0][0])
        meter.begin()
        before = metrics
        lat = await latency(stack, js, source, latency_s, latency_rate, latency_page)
        cpu, busy, wall = meter.read()
        metrics = {p.name: (await scrape(p.metrics_url)).minus(before[p.name]) for p in stack.procs}
        log(
            f"  pages traced {lat.pages - lat.missing}/{lat.pages}; publisher's worst lag behind schedule {lat.publish_lag_ms:.0f} ms"
        )
        for label, values in [
            ("RAW publish → rows committed (Loaded)", lat.e2e_ms),
            ("RAW publish → seen by 20 ms poll", lat.poll_ms),
            *lat.stages_ms.items(),
        ]:
            log(
                f"  {label:<46} p50 {percentile(values, 50):>7.0f} ms  p90 {percentile(values, 90):>7.0f}  "
                f"p99 {percentile(values, 99):>7.0f}  max {max(values, default=float('nan')):>7.0f}"
            )
        await stage_profile("latency phase", stack, js, metrics, cpu, busy, wall, batch_mark)

        for proc in stack.procs:
            proc.stop()
        if profile:
            for proc in stack.procs:
                if proc.profile_path and proc.profile_path.exists():
                    log(f"\n-- cProfile: {proc.name} --\n{profile_summary(proc.profile_path)}")

        log("\nloader alone (services stopped): the same silver batches through upsert, one connection")
        batches = await silver_batches(js, silver_seq)
        native = [b for b in batches if b.table == "ohlcv" and "/resampled-" not in b.key]
        rows, alone_s, read_s = await loader_alone(alone_urls[0], stack.lake_root, native)
        assert rows == published, (rows, published)
        one_rate = rows / alone_s
        log(
            f"  1m candles, load_batch per batch: {len(native)} batches, {rows:,} rows in {alone_s:.1f}s = "
            f"{one_rate:,.0f} rows/s (reading the Parquet files beforehand: {read_s:.1f}s)"
        )
        group = int(env_float("E2E_LOADER_GROUP", 32))
        rows, grouped_s, _ = await loader_alone(alone_urls[1], stack.lake_root, native, group)
        grouped_rate = rows / grouped_s
        log(
            f"  1m candles, load_batches per {group} pulled (as the service): {rows:,} rows in {grouped_s:.1f}s = "
            f"{grouped_rate:,.0f} rows/s"
        )
        # The denominator is the loader's best on these rows, whichever way that is.
        alone_rate = max(one_rate, grouped_rate)
        all_rows, all_s, _ = await loader_alone(alone_urls[2], stack.lake_root, batches, group)
        log(
            f"  every SILVER batch of the run (1m + indicators + resampled): {len(batches)} batches, "
            f"{all_rows:,} rows in {all_s:.1f}s = {all_rows / all_s:,.0f} rows/s; "
            f"= {published / all_s:,.0f} 1m candles/s: the ceiling of the loader on this workload"
        )
    finally:
        for proc in stack.procs:
            proc.stop()
        await nc.close()
        await asyncio.to_thread(postgres.stop)
        await asyncio.to_thread(nats_server.stop)
        if os.environ.get("E2E_KEEP") == "1":
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    log("\nsummary")
    log(f"  e2e (3 services, derived series on): {e2e_rate:>10,.0f} 1m candles/s")
    log(f"  loader alone, 1m batches (its best):  {alone_rate:>10,.0f} rows/s")
    p99 = percentile(lat.e2e_ms, 99)
    log(f"e2e_candles_per_s={e2e_rate:.0f} e2e_vs_loader_alone={e2e_rate / alone_rate:.3f} e2e_p99_ms={p99:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
