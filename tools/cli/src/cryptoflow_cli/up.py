"""`cryptoflow up`: the whole pipeline on this machine, state under $CRYPTOFLOW_HOME.

NATS (JetStream), PostgreSQL (unless DATABASE_URL), the lake (file:// unless LAKE_URL or
S3_ENDPOINT_URL), the exchange simulator (unless --live) and the four services, each its own
OS process. A second `up` on the same home resumes: streams, checkpoints and tables persist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import yaml
from cryptoflow_contracts import Dataset
from cryptoflow_exchange_sim import EXCHANGES as SIMULATED_EXCHANGES
from cryptoflow_exchange_sim.aggregators import KNOWN_IDS, coin_names
from cryptoflow_extractor import DatasetsSpec

from .access import CONSUMER
from .lockdown import StackSecurity
from .nats_cluster import replication_env
from .processes import ServiceProcess
from .servers import ServerProcess, free_port
from .stackfile import StackInfo, stack_path, write_stack
from .stages import stages
from .supervisor import Supervisor, pid_updater

log = logging.getLogger("cryptoflow.up")

DERIVED_DEFAULTS = {
    "TRANSFORMER_RESAMPLE_TO": "5m,15m,1h,4h,1d",
    "TRANSFORMER_INDICATORS": "true",
    "TRANSFORMER_ANOMALIES": "true",
}


@dataclass(frozen=True)
class UpOptions:
    home: Path
    symbols: str = "BTC/USDT,ETH/USDT"
    timeframes: str = "1m"
    since: datetime | None = None
    sim_data: Path | None = None
    live: bool = False
    exchanges: str = "binance,bybit,gate"
    datasets: str = ""  # comma-separated; empty: every dataset the extractor has jobs for
    config: Path | None = None
    poll_interval_s: float = 10.0
    ready_timeout_s: float = 120.0
    tls: bool = False  # NATS (and PostgreSQL, where built with SSL) accept TLS connections only
    nats_cluster: int = 1  # nats-servers; more than one: a routed cluster, streams and KV at 3 replicas
    replicas: dict[str, int] = field(default_factory=dict)  # processes per stage (default 1)
    mode: str = "poll"  # poll: REST polling; stream: websocket streams (ccxt pro), REST fills their holes
    source: str = "rest"  # binance-archive: binance's candles from its bulk archives first
    aggregators: str = ""  # comma-separated: coingecko, coinpaprika (market listings into market_snapshots)

    def aggregator_ids(self) -> list[str]:
        return [a.strip() for a in self.aggregators.split(",") if a.strip()]

    def exchange_ids(self) -> list[str]:
        return [e.strip() for e in self.exchanges.split(",") if e.strip()]

    def since_or_default(self) -> datetime:
        if self.since is not None:
            return self.since
        if self.sim_data is not None:
            first = earliest_candle(self.sim_data)
            if first is not None:
                return first
        # A day of history by default: enough to see every stage work, quick to fetch.
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return today - timedelta(days=1)


def earliest_candle(directory: Path) -> datetime | None:
    """The first open time of the recorded candle files (`SYMBOL-INTERVAL.csv`, no header)."""
    firsts = []
    for path in directory.glob("*.csv"):
        with path.open() as handle:
            token = handle.readline().split(",", 1)[0].strip()
        if token.isdigit():
            firsts.append(int(token))
    return datetime.fromtimestamp(min(firsts) / 1000, UTC) if firsts else None


def dataset_blocks(options: UpOptions, since: datetime) -> dict[str, dict[str, object]]:
    """Every dataset the extractor knows, as its `datasets:` block would say it: the poll
    interval, `timeframes` where the spec has them, and `since` where the spec backfills by
    default (a dataset that starts at the newest page unless told, like trades, keeps doing so);
    the rest at their defaults."""
    blocks: dict[str, dict[str, object]] = {}
    for dataset in Dataset:
        try:
            fields = DatasetsSpec.spec_type(dataset).model_fields
        except LookupError:
            continue  # a dataset no extractor job produces
        if "source" in fields and fields["source"].is_required():
            continue  # a dataset only an archive has (agg_trades): --source binance-archive adds it
        block: dict[str, object] = {"poll_interval_s": options.poll_interval_s, "mode": options.mode}
        if "since" in fields and fields["since"].default is not None:
            block["since"] = since.isoformat()
        if "timeframes" in fields:
            block["timeframes"] = options.timeframes.split(",")
        blocks[dataset.value] = block
    return blocks


def check_simulated(exchanges: Iterable[str]) -> None:
    """Without --live, every exchange is the simulator: it speaks three exchanges' wire formats."""
    other = sorted(set(exchanges) - set(SIMULATED_EXCHANGES))
    if other:
        raise RuntimeError(
            f"the exchange simulator speaks {', '.join(SIMULATED_EXCHANGES)}, not {', '.join(other)}: "
            "add --live to collect from the real exchange"
        )


ARCHIVED_EXCHANGES = ("binance", "binanceusdm", "binancecoinm")
AGGREGATORS = ("coingecko", "coinpaprika")


def jobs_yaml(options: UpOptions, since: datetime, url: str | None) -> str:
    """The extractor's jobs file for --exchanges × --symbols × --datasets."""
    specs = dataset_blocks(options, since)
    datasets = {d.strip() for d in options.datasets.split(",") if d.strip()} or set(specs)
    unknown = datasets - specs.keys() - {"agg_trades"}
    if unknown:
        raise RuntimeError(f"--datasets: unknown {', '.join(sorted(unknown))} (known: {', '.join(specs)})")
    exchanges: dict[str, object] = {}
    for exchange in options.exchange_ids():
        chosen = {name: dict(spec) for name, spec in specs.items() if name in datasets}
        if options.source == "binance-archive" and exchange in ARCHIVED_EXCHANGES:
            # From the archives first: candles and trades (then REST), aggregate trades (archives only).
            archived = {"source": "binance-archive", "mode": "poll", "since": since.isoformat()}
            for name in ("ohlcv", "trades"):
                if name in chosen:
                    chosen[name] |= archived
            if not options.datasets or "agg_trades" in datasets:
                chosen["agg_trades"] = {"poll_interval_s": options.poll_interval_s, **archived}
        block: dict[str, object] = {"symbols": options.symbols.split(","), "datasets": chosen}
        if url is not None:
            block["url"] = url
        exchanges[exchange] = block
    aggregators: dict[str, object] = {}
    for provider in options.aggregator_ids():
        # The simulator lists its markets as coins each minute: poll a little more often than that.
        listing: dict[str, object] = {"poll_interval_s": max(options.poll_interval_s, 30.0)}
        if url is not None:
            listing |= {"url": url, "min_request_interval_s": 0.5}
        coins = coin_ids(provider, options.symbols.split(","), simulated=url is not None)
        if coins:
            # The coins of the markets asked for: their price history and candles beside the listing.
            listing |= {"history": coins, "history_since": since.isoformat()}
            listing |= {"candles": coins, "candles_since": since.isoformat()}
        aggregators[provider] = listing
    document: dict[str, object] = {"exchanges": exchanges}
    if aggregators:
        document["aggregators"] = aggregators
    return json.dumps(document, indent=2)  # JSON is YAML


def coin_ids(provider: str, symbols: Iterable[str], *, simulated: bool) -> list[str]:
    """The provider's ids of the symbols' base coins: the well-known coins' real ids, which the
    simulator uses too; another coin only on the simulator (its made-up id; a real provider's id
    for it is not guessable from a ticker, a jobs file names it)."""
    ids: list[str] = []
    for symbol in symbols:
        base = symbol.strip().split("/")[0].upper()
        if base and (simulated or base in KNOWN_IDS):
            ids.append(getattr(coin_names(base), provider))
    return list(dict.fromkeys(ids))


def configured_exchanges(config: Path) -> list[str]:
    return list((yaml.safe_load(config.read_text()) or {}).get("exchanges", {}))


def configured_symbols(config: Path) -> list[str]:
    document = yaml.safe_load(config.read_text())
    return sorted({s for spec in document.get("exchanges", {}).values() for s in spec.get("symbols", [])})


def lake_url_for(home: Path) -> str:
    if url := os.environ.get("LAKE_URL"):
        return url
    if os.environ.get("S3_ENDPOINT_URL"):
        return "s3://cryptoflow"
    return f"file://{home / 'lake'}"


async def wait_healthy(url: str, proc: ServiceProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.proc is not None and proc.proc.returncode is not None:
                raise RuntimeError(f"{proc.name} exited with code {proc.proc.returncode} during start")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{proc.name} not healthy at {url} after {timeout_s:.0f}s")


async def wait_for_file(path: Path, proc: ServiceProcess, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text().strip()):
            return text
        if proc.proc is not None and proc.proc.returncode is not None:
            raise RuntimeError(f"{proc.name} exited with code {proc.proc.returncode} during start")
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not write {path} within {timeout_s:.0f}s")


def service_processes(
    shared_env: dict[str, str],
    own_env: dict[str, dict[str, str]] | None = None,
    replicas: Mapping[str, int] | None = None,
) -> list[tuple[ServiceProcess, int]]:
    """Every registered stage as processes (`replicas` of it, default one) with their HTTP ports,
    consumers first (the last stage first), so each stage's input is drained from the start.

    A stage's processes share its durable consumer (they pull from it in turn); the extractor's
    share its jobs by leases, each under a stable replica id, so that a restarted one takes its
    own leases back at once (decision 0042)."""
    planned = []
    for spec in reversed(stages()):
        for replica in range((replicas or {}).get(spec.name, 1)):
            port = free_port()
            env = {**shared_env, **(own_env or {}).get(spec.name, {}), f"{spec.env_prefix}HTTP_PORT": str(port)}
            if spec.name == "extractor":
                env["EXTRACTOR_REPLICA_ID"] = f"extractor-{replica}"
            planned.append((ServiceProcess(spec.name, [], env, replica), port))
    return planned


def parse_replicas(text: str) -> dict[str, int]:
    """`extractor=2,transformer=3` → {"extractor": 2, "transformer": 3}; ValueError naming the fault."""
    known = [spec.name for spec in stages()]
    counts: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        stage, sep, number = part.partition("=")
        stage = stage.strip()
        if not sep or stage not in known:
            raise ValueError(f"--replicas: {part!r} is not STAGE=N with STAGE one of {', '.join(known)}")
        try:
            count = int(number)
        except ValueError:
            raise ValueError(f"--replicas: {part!r}: N must be a whole number") from None
        if not 1 <= count <= 8:
            raise ValueError(f"--replicas: {part!r}: from 1 to 8 processes")
        counts[stage] = count
    return counts


async def run_up(options: UpOptions) -> int:
    try:
        if not options.live:
            check_simulated(configured_exchanges(options.config) if options.config else options.exchange_ids())
        unknown = sorted(set(options.aggregator_ids()) - set(AGGREGATORS))
        if unknown:
            raise RuntimeError(f"--aggregators: unknown {', '.join(unknown)} (known: {', '.join(AGGREGATORS)})")
    except RuntimeError as exc:
        print(f"cryptoflow up    | error: {exc}", flush=True)
        return 2
    home = options.home
    home.mkdir(parents=True, exist_ok=True)
    (home / "run").mkdir(exist_ok=True)
    servers: list[ServerProcess] = []
    children: list[ServiceProcess] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    exit_code = 0
    try:
        # Locked down (decision 0036): an identity per service, passwords, streams made by admin.
        security = await asyncio.to_thread(StackSecurity, home, tls=options.tls)
        replication: dict[str, str] = {}
        if options.nats_cluster > 1:
            nodes = await asyncio.to_thread(security.start_nats_cluster, options.nats_cluster)
            # Every stream and KV bucket on 3 servers (or all of a smaller cluster): one node may die.
            replication = replication_env(min(3, options.nats_cluster))
        else:
            nodes = [await asyncio.to_thread(security.start_nats)]
        servers.extend(nodes)
        for node in nodes:
            print(f"nats-server      | {node.url} (pid {node.pid})", flush=True)
        await security.provision_streams(nodes, {**os.environ, **replication})
        postgres: ServerProcess | None = None
        database_url = os.environ.get("DATABASE_URL")
        if database_url is None:
            postgres = await asyncio.to_thread(security.start_postgres)
            servers.append(postgres)
            await security.provision_roles(postgres)
            database_url = security.database_url(postgres)
            print(f"postgres         | {postgres.url} (pid {postgres.pid}){security.postgres_note}", flush=True)
        lake_url = lake_url_for(home)
        since = options.since_or_default()

        sim_url: str | None = None
        if not options.live:
            url_file = home / "run" / "exchange-sim.url"
            url_file.unlink(missing_ok=True)
            # One simulator serves all three exchanges' wire formats (their paths do not overlap).
            sim_args = ["--port", "0", "--url-file", str(url_file), "--exchange", "all"]
            if options.sim_data is not None:
                sim_args += ["--data", str(options.sim_data.resolve())]
            else:
                symbols = configured_symbols(options.config) if options.config else options.symbols.split(",")
                sim_args += ["--symbols", ",".join(symbols), "--start", since.isoformat()]
                if options.mode == "stream":
                    # A market that trades as time passes and books that move every 100 ms.
                    sim_args += ["--live-trades", "--trade-scale", "10"]
            if options.mode == "stream":
                sim_args += ["--book-tick-ms", "100"]
            sim = ServiceProcess("exchange-sim", sim_args, {})
            children.append(sim)
            await sim.start()
            sim_url = await wait_for_file(url_file, sim, 30)
            sim.args[sim.args.index("--port") + 1] = str(urlsplit(sim_url).port)  # a restart keeps the URL

        shared_env = {
            "NATS_URL": ",".join(node.url for node in nodes),
            "DATABASE_URL": database_url,
            "LAKE_URL": lake_url,
            **replication,
        }
        # The local stack shows everything: resampled candles, indicators and anomaly events
        # (the services default them off; a variable set by the user wins).
        for name, value in DERIVED_DEFAULTS.items():
            shared_env[name] = os.environ.get(name, value)
        if options.config is not None:
            shared_env["EXTRACTOR_CONFIG"] = str(options.config.resolve())
            if sim_url is not None:
                document = yaml.safe_load(options.config.read_text())
                urls = dict.fromkeys(document.get("exchanges", {}), sim_url)
                shared_env["EXTRACTOR_EXCHANGE_URLS"] = json.dumps(urls)
        else:
            jobs = home / "run" / "jobs.yaml"
            jobs.write_text(jobs_yaml(options, since, sim_url))
            shared_env["EXTRACTOR_CONFIG"] = str(jobs)
        services: dict[str, dict[str, object]] = {}
        for proc, port in service_processes(shared_env, security.service_env(), options.replicas):
            children.append(proc)
            await proc.start()
            services[proc.name] = {"pid": proc.pid, "metrics_url": f"http://127.0.0.1:{port}/metrics"}
        # The read API, with the read-only identities: the reader login (the owner's URL when
        # DATABASE_URL points elsewhere) and NATS' consumer, which may only subscribe.
        api_port = free_port()
        reader_url = security.stack_fields(nodes, postgres)["reader_database_url"] or database_url
        api_env = {
            "NATS_URL": shared_env["NATS_URL"],
            **security.nats_env(CONSUMER),
            "DATABASE_URL": reader_url,
            "API_HTTP_PORT": str(api_port),
        }
        api = ServiceProcess("api", [], api_env)
        children.append(api)
        await api.start()
        api_url = f"http://127.0.0.1:{api_port}"
        services[api.name] = {"pid": api.pid, "metrics_url": f"{api_url}/metrics"}
        print(f"api              | {api_url} (keys: cryptoflow api-key create NAME)", flush=True)
        for proc in children[1 if sim_url else 0 :]:
            health = str(services[proc.name]["metrics_url"]).replace("/metrics", "/healthz")
            await wait_healthy(health, proc, options.ready_timeout_s)

        info = StackInfo(
            nats_url=security.nats_url(nodes),
            **security.stack_fields(nodes, postgres),
            database_url=database_url,
            lake_url=lake_url,
            exchange_sim_url=sim_url,
            s3_endpoint_url=os.environ.get("S3_ENDPOINT_URL"),
            services=services,
            api_url=api_url,
        )
        path = write_stack(home, info)
        print(f"cryptoflow up    | all services running; endpoints in {path}; Ctrl-C stops", flush=True)

        # Until Ctrl-C/SIGTERM: what dies is restarted; a server that cannot come back ends it (1).
        exit_code = await Supervisor(children, servers, stop, restarted=pid_updater(home, info)).run()
    except (RuntimeError, OSError) as exc:
        print(f"cryptoflow up    | error: {exc}", flush=True)
        exit_code = 1
    finally:
        stack_path(home).unlink(missing_ok=True)
        # Producers first, so consumers can drain what is already in flight.
        for child in reversed(children):
            await child.stop()
        for server in reversed(servers):
            await asyncio.to_thread(server.stop)
        print("cryptoflow up    | stopped", flush=True)
    return exit_code
