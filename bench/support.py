"""Shared pieces of the pipeline benchmarks (e2e.py, replay.py): candles as the extractor publishes
them, the services as OS processes (optionally under cProfile), and what the profile reads —
Prometheus /metrics, JetStream stream/consumer info, OS CPU time, pg_stat_statements, the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pstats
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import numpy as np
import orjson
import psutil
from cryptoflow_cli.processes import SERVICE_MODULES
from cryptoflow_cli.servers import free_port
from cryptoflow_contracts import Dataset, NativeCall, NativeResponse, RawSnapshot, raw_subject
from cryptoflow_runtime import msg_id_headers
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client.parser import text_string_to_metric_families

MINUTE_MS = 60_000
T0_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
EXCHANGE = "binance"
# The durable settings of bench/loader.py (fsync, synchronous_commit, full_page_writes stay on),
# plus pg_stat_statements, to see where the database's time goes (a measuring aid: ~1 % overhead).
PG_SETTINGS = {
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",
}


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM (a `kill`, `python -m bench` stopped) unwinds like Ctrl-C: every `finally` stops the
    # servers and services a benchmark started, which would otherwise run on as orphans.
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _exit_on_sigterm)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)).replace("_", ""))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


def log(text: str) -> None:
    print(text, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


# --- candles as the extractor publishes them ---------------------------------------------------


def symbols(count: int) -> list[str]:
    return [f"S{i:03d}/USDT" for i in range(count)]


class CandleSource:
    """Per series, the next 1m candles of a random walk, as ccxt hands them to the extractor:
    `[ts_ms, open, high, low, close, volume]`, always valid (high ≥ open/close ≥ low, volume ≥ 0)."""

    def __init__(self, series: int, start_ms: int = T0_MS, seed: int = 7) -> None:
        self.symbols = symbols(series)
        self.next_ts = [start_ms] * series
        self.close = [100.0 * (1 + i) for i in range(series)]
        self.rng = np.random.default_rng(seed)

    def candles(self, series: int, count: int) -> list[list[Any]]:
        step = self.rng.normal(0.0, 0.001, count)
        closes = self.close[series] * np.exp(np.cumsum(step))
        opens = np.concatenate(([self.close[series]], closes[:-1]))
        spread = np.abs(self.rng.normal(0.0, 0.0005, (2, count)))
        highs = np.maximum(opens, closes) * (1 + spread[0])
        lows = np.minimum(opens, closes) * (1 - spread[1])
        volumes = np.abs(self.rng.normal(10.0, 3.0, count))
        ts = self.next_ts[series] + MINUTE_MS * np.arange(count, dtype=np.int64)
        self.next_ts[series] = int(ts[-1]) + MINUTE_MS
        self.close[series] = float(closes[-1])
        columns = [np.round(a, 6).tolist() for a in (opens, highs, lows, closes, volumes)]
        return [[int(t), *values] for t, values in zip(ts.tolist(), zip(*columns, strict=True), strict=True)]

    def page(self, series: int, count: int, page_limit: int = 1000) -> RawSnapshot:
        """One page as `OhlcvJob._publish` builds it (services/extractor/.../ohlcv.py): ccxt's
        candles, and what Binance sent for them (its twelve-field klines, the transformer's input)."""
        since = self.next_ts[series]
        candles = self.candles(series, count)
        symbol = self.symbols[series]
        return RawSnapshot(
            schema_version=2,
            native=[binance_klines_call(symbol, since, page_limit, candles)],
            dataset=Dataset.OHLCV,
            exchange=EXCHANGE,
            symbol=symbol,
            timeframe="1m",
            fetched_at=datetime.now(UTC),
            request={"symbol": symbol, "timeframe": "1m", "since": since, "limit": page_limit},
            payload=candles,
            first_ts=candles[0][0],
            last_ts=candles[-1][0],
            final=True,
        )

    def backfill(self, total: int, page_size: int) -> list[RawSnapshot]:
        """`total` candles over every series in pages of `page_size`, interleaved across series
        (round robin) as concurrent backfill jobs publish them, each series in time order."""
        per_series = [
            total // len(self.symbols) + (1 if i < total % len(self.symbols) else 0) for i in range(len(self.symbols))
        ]
        left = list(per_series)
        pages = []
        while any(left):
            for i, n in enumerate(left):
                if n:
                    take = min(n, page_size)
                    pages.append(self.page(i, take, page_size))
                    left[i] -= take
        return pages


async def publish_snapshots(js: JetStreamContext, snapshots: Iterable[RawSnapshot], concurrency: int = 64) -> int:
    """Publish as the extractor does (subject raw_subject(...), Nats-Msg-Id = event_id), a few in flight."""
    items = list(snapshots)
    for offset in range(0, len(items), concurrency):
        chunk = items[offset : offset + concurrency]
        await asyncio.gather(*(publish_snapshot(js, s) for s in chunk))
    return sum(len(s.payload) for s in items)


async def publish_snapshot(js: JetStreamContext, snapshot: RawSnapshot) -> None:
    await js.publish(
        raw_subject(snapshot.dataset, snapshot.exchange, snapshot.symbol),
        snapshot.to_json(),
        headers=msg_id_headers(snapshot.event_id),
    )


# --- services as OS processes ----------------------------------------------------------------


@dataclass
class ServiceProc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    http_port: int
    profile_path: Path | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/metrics"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


def spawn_service(name: str, env: dict[str, str], workdir: Path, *, profile: bool = False) -> ServiceProc:
    """`python -m <service module>` (or under `-m cProfile -o <file>`), with its /metrics on a free port."""
    port = free_port()
    prefix = name.upper().replace("-", "_")
    log_path = workdir / f"{name}.log"
    profile_path = workdir / f"{name}.prof" if profile else None
    argv = [sys.executable, "-m", SERVICE_MODULES[name]]
    if profile_path is not None:
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile_path), "-m", SERVICE_MODULES[name]]
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            argv, env={**env, f"{prefix}_HTTP_PORT": str(port)}, stdout=out, stderr=subprocess.STDOUT
        )
    return ServiceProc(name, popen, log_path, port, profile_path)


def check_alive(procs: Iterable[ServiceProc]) -> None:
    for proc in procs:
        code = proc.popen.poll()
        if code is not None:
            raise RuntimeError(f"{proc.name} exited with code {code}:\n{proc.log_text()[-4000:]}")


def profile_summary(path: Path, top: int = 18) -> str:
    """A cProfile dump, condensed: the top functions by own time; the project's functions by
    cumulative time; who calls the hot native calls (Polars collect, JSON decoding, sockets)."""
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    out.write("by own time:\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write("the project's functions by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(r"/cryptoflow_\w+/", top)
    out.write("callers of the hot native calls:\n")
    stats.sort_stats("tottime").print_callers(r"PyLazyFrame|orjson.loads|validate_json|'send' of|fsync|sha256", 8)
    site = str(Path(np.__file__).parent.parent) + "/"
    text = out.getvalue().replace(site, "").replace(str(Path.cwd()) + "/", "")
    lines = [
        line.rstrip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("Ordered by", "List reduced", "Function was called"))
    ]
    return "\n".join(line[:170] for line in lines)


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Metrics:
    """One scrape of a service's /metrics: samples by (name, sorted labels)."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def total(self, name: str, **labels: str) -> float:
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= set(ls))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, ls), v in self.samples.items():
            if n == name:
                key = dict(ls).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out

    def minus(self, before: Metrics) -> Metrics:
        return Metrics({k: v - before.samples.get(k, 0.0) for k, v in self.samples.items()})


async def scrape(url: str) -> Metrics:
    async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        text = await resp.text()
    metrics = Metrics()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            metrics.samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return metrics


def cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """User + system CPU of a process; with its live and reaped children (PostgreSQL's backends)."""
    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        total = times.user + times.system
        if with_children:
            total += times.children_user + times.children_system
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
        return float(total)
    except psutil.Error:
        return float("nan")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU seconds per named process between two points in time, and the machine's busy time."""

    pids: dict[str, tuple[int, bool]]
    start: dict[str, float] = field(default_factory=dict)
    machine_start: float = 0.0
    wall_start: float = 0.0

    def begin(self) -> None:
        self.start = {name: cpu_seconds(pid, with_children=kids) for name, (pid, kids) in self.pids.items()}
        self.machine_start = machine_busy_seconds()
        self.wall_start = time.perf_counter()

    def read(self) -> tuple[dict[str, float], float, float]:
        used = {
            name: cpu_seconds(pid, with_children=kids) - self.start.get(name, 0.0)
            for name, (pid, kids) in self.pids.items()
        }
        return used, machine_busy_seconds() - self.machine_start, time.perf_counter() - self.wall_start


async def consumer_state(js: JetStreamContext, stream: str, durable: str) -> tuple[int, int, int] | None:
    """(pending, ack pending, redelivered) of a durable consumer, None while it does not exist."""
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        return None
    return info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0


async def stream_last_seq(js: JetStreamContext, stream: str) -> int:
    return int((await js.stream_info(stream)).state.last_seq or 0)


async def read_stream(js: JetStreamContext, stream: str, subject: str, after_seq: int = 0) -> list[Msg]:
    """Every message of `stream` after `after_seq` up to its current end, with an ordered consumer."""
    last = await stream_last_seq(js, stream)
    if last <= after_seq:
        return []
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1)
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, config=config)
    msgs: list[Msg] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=5)
            except NatsTimeout:
                break
            msgs.append(msg)
            if msg.metadata.sequence.stream >= last:
                break
    finally:
        await sub.unsubscribe()
    return msgs


def msg_time(msg: Msg) -> float:
    """When JetStream stored the message, as epoch seconds (the server runs on this machine's clock)."""
    return float(msg.metadata.timestamp.timestamp())


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def create_database(server_url: str, name: str) -> str:
    """A new database on `server_url`'s server; its URL."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


async def statement_profile(url: str, top: int = 12) -> list[str]:
    """The database's time by statement (pg_stat_statements, every database of the server)."""
    rows = await fetch(
        url,
        """
        SELECT calls, total_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g') AS query
        FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1
        """,
        top,
    )
    lines = [f"    {'calls':>7} {'total s':>8} {'ms/call':>8} {'rows':>9}  statement"]
    for r in rows:
        query = r["query"][:110]
        ms = r["total_exec_time"] / max(r["calls"], 1)
        lines.append(f"    {r['calls']:>7} {r['total_exec_time'] / 1000:>8.2f} {ms:>8.2f} {r['rows']:>9}  {query}")
    return lines


async def reset_statements(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


def binance_klines_call(symbol: str, since: int, limit: int, candles: list[list[Any]]) -> NativeCall:
    """The `fetchOHLCV` call that returned `candles`, as the extractor records it: Binance's
    `/api/v3/klines` body (twelve fields a candle, decimals as strings) and the ccxt market."""
    base, quote = symbol.split("/")
    body = [
        [ts, *(f"{v:.8f}" for v in (o, h, low, c, v)), ts + MINUTE_MS - 1, f"{v * c:.8f}", 100, f"{v / 2:.8f}",
         f"{v * c / 2:.8f}", "0"]
        for ts, o, h, low, c, v in candles
    ]  # fmt: skip
    market = {
        "id": f"{base}{quote}", "symbol": symbol, "base": base, "quote": quote, "baseId": base, "quoteId": quote,
        "type": "spot", "spot": True, "active": True, "precision": {}, "limits": {}, "info": {},
    }  # fmt: skip
    return NativeCall(
        ccxt_version="bench",
        method="fetchOHLCV",
        args=[symbol, "1m", since, limit, {}],
        market=market,
        responses=[
            NativeResponse(
                method="GET",
                path="/api/v3/klines",
                params={"symbol": f"{base}{quote}", "interval": "1m", "startTime": str(since), "limit": str(limit)},
                status=200,
                body=orjson.dumps(body).decode(),
            )
        ],
    )
