"""`cryptoflow`: run the pipeline locally (`up`), inspect it (`status`, `runs`), migrate the warehouse."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from .stackfile import default_home


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryptoflow", description=__doc__)
    parser.add_argument("--home", type=Path, default=None, help="state dir (default $CRYPTOFLOW_HOME or ./.cryptoflow)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run NATS, PostgreSQL, the simulator and the four services")
    up.add_argument("--symbols", default="BTC/USDT,ETH/USDT", help="unified symbols, comma-separated")
    up.add_argument("--timeframes", default="1m", help="e.g. 1m,5m")
    up.add_argument(
        "--since",
        type=_instant,
        help="first candle (ISO 8601, UTC); default: yesterday 00:00, or the first candle of --sim-data",
    )
    up.add_argument("--sim-data", type=Path, help="serve recorded SYMBOL-INTERVAL.csv candles from this dir")
    up.add_argument("--live", action="store_true", help="extract from the real exchange, no simulator")
    up.add_argument("--poll-interval", type=float, default=10.0, help="seconds between polls once caught up")
    up.add_argument("--exchanges", default="binance,bybit,gate", help="ccxt ids, comma-separated")
    up.add_argument("--datasets", default="", help="datasets, comma-separated (default: every one)")
    up.add_argument("--config", type=Path, help="extractor jobs YAML (replaces --exchanges/--datasets/--symbols)")
    up.add_argument(
        "--source",
        choices=("rest", "binance-archive"),
        default="rest",
        help="candles of binance from its bulk archives (data.binance.vision) up to yesterday, then REST",
    )
    up.add_argument(
        "--aggregators",
        default="",
        metavar="PROVIDER[,...]",
        help="also list coins from coingecko and/or coinpaprika into market_snapshots (the simulator's unless --live; "
        "keys from EXTRACTOR_COINGECKO_API_KEY / EXTRACTOR_COINPAPRIKA_API_KEY)",
    )
    up.add_argument(
        "--mode",
        choices=("poll", "stream"),
        default="poll",
        help="poll the REST APIs, or stream over the exchanges' websockets (REST fills what a stream misses)",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="TLS only, with a self-signed CA in $CRYPTOFLOW_HOME/tls (NATS; PostgreSQL too where built with SSL)",
    )
    up.add_argument(
        "--nats-cluster",
        type=int,
        default=1,
        metavar="N",
        help="run N nats-servers routed into one cluster (streams and KV buckets at 3 replicas); default 1",
    )

    up.add_argument(
        "--replicas",
        default="",
        metavar="STAGE=N[,...]",
        help="processes per stage, e.g. extractor=2,transformer=3,warehouse-loader=2 (default 1 each)",
    )

    status = sub.add_parser("status", help="messages per stream, consumer lag, lake objects, ohlcv rows")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    replay = sub.add_parser("replay", help="re-process a stage's input stream from a time or sequence")
    replay.add_argument(
        "--stage", required=True, help="a stage with an input stream (lake-writer, transformer, warehouse-loader, ...)"
    )
    replay.add_argument("--from", dest="start", required=True, help="ISO 8601 time (UTC) or stream sequence")
    replay.add_argument("--to", dest="end", help="ISO 8601 time or stream sequence (inclusive); default: now")
    replay.add_argument("--filter", help="exchange/symbol/dataset, * for any, e.g. binance/*/ohlcv")

    rebuild = sub.add_parser("rebuild", help="rebuild silver and the warehouse from the lake's bronze objects")
    rebuild.add_argument("--from-lake", action="store_true", required=True, help="read bronze objects only")
    rebuild.add_argument("--filter", help="exchange/symbol/dataset, * for any")
    rebuild.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="markets rebuilt at once per process, each in time order (default 4)",
    )
    rebuild.add_argument(
        "--processes", type=int, default=None, help="processes sharing the markets (default: CPUs, ≤ 4)"
    )

    query = sub.add_parser(
        "query", help="SQL (DuckDB) over the lake's silver files: views ohlcv, tickers, order_books, trades, indicators"
    )
    query.add_argument("sql", help="e.g. \"SELECT * FROM ohlcv WHERE symbol = 'BTC/USDT' ORDER BY ts\"")
    query.add_argument("--format", choices=("table", "csv", "parquet"), default="table")
    query.add_argument("--output", type=Path, help="write the result to this file (default: standard output)")
    query.add_argument("--exchange", help="read only this exchange's files (the views hold its rows only)")
    query.add_argument("--symbol", help="read only this market's files, e.g. BTC/USDT (the views hold its rows only)")

    compact = sub.add_parser(
        "compact", help="rewrite each closed silver partition into one file (bronze is never touched)"
    )
    compact.add_argument(
        "--older-than", default="1d", help="compact partitions whose day ended this long ago (e.g. 1d, 12h)"
    )
    compact.add_argument(
        "--grace", default="1h", help="delete replaced files only when their replacement is this old (e.g. 1h)"
    )

    ingest = sub.add_parser(
        "ingest", help="load a CSV or Parquet file (local or s3://) as ohlcv or trades, by a column mapping"
    )
    # The extractor's own `ingest` command runs it (imported only then: ccxt is slow to import).
    ingest.add_argument("path", help="CSV or Parquet file: a local path or s3://bucket/key (S3_ENDPOINT_URL)")
    ingest.add_argument("--dataset", required=True, choices=["ohlcv", "trades"])
    ingest.add_argument(
        "--mapping", required=True, type=Path, help="YAML: columns, ts_unit, timezone, exchange[_column], ..."
    )

    asyncapi = sub.add_parser("asyncapi", help="write (or --check) docs/asyncapi/cryptoflow.yaml")
    asyncapi.add_argument("--check", action="store_true", help="fail when the committed document is stale")
    asyncapi.add_argument("--output", help="where to write it")

    openapi = sub.add_parser("openapi", help="write (or --check) docs/openapi.json, the read API's document")
    openapi.add_argument("--check", action="store_true", help="fail when the committed document is stale")
    openapi.add_argument("--output", help="where to write it")

    warehouse = sub.add_parser("warehouse", help="warehouse schema")
    warehouse_sub = warehouse.add_subparsers(dest="warehouse_command", required=True)
    migrate = warehouse_sub.add_parser("migrate", help="apply pending migrations (reads DATABASE_URL)")
    migrate.add_argument("--database-url", help="default: $DATABASE_URL, else the running stack's")

    api_key = sub.add_parser("api-key", help="keys of the read API (stored hashed; admin database URL)")
    api_key_sub = api_key.add_subparsers(dest="api_key_command", required=True)
    key_create = api_key_sub.add_parser("create", help="make a key; its last output line is the key (shown once)")
    key_create.add_argument("name", help="who or what the key is for")
    key_create.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    key_create.add_argument("--burst", type=int, default=100, help="requests at once above the rate (default 100)")
    key_revoke = api_key_sub.add_parser("revoke", help="revoke the active keys of a name, or the key of a prefix")
    key_revoke.add_argument("name", help="a key's name, or its listed prefix (cfk_…)")
    key_list = api_key_sub.add_parser("list", help="every key: name, prefix, rate, created, revoked")
    key_list.add_argument("--json", action="store_true", help="machine-readable output")
    for key_parser in (key_create, key_revoke, key_list):
        key_parser.add_argument("--database-url", help="default: $DATABASE_URL, else the running stack's")

    runs = sub.add_parser("runs", help="run history of the services (service_runs), or the latest batches")
    runs.add_argument("--database-url", help="default: $DATABASE_URL, else the running stack's")
    runs.add_argument("--service", help="only this service's runs")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--batches", action="store_true", help="the latest loaded batches instead of runs")
    runs.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    home = (args.home or default_home()).resolve()
    if args.command == "up" and args.nats_cluster < 1:
        parser.error("--nats-cluster: at least 1 server")
    if args.command == "up":
        from .up import UpOptions, parse_replicas, run_up

        try:
            replicas = parse_replicas(args.replicas)
        except ValueError as exc:
            parser.error(str(exc))

        options = UpOptions(
            home=home,
            symbols=args.symbols,
            timeframes=args.timeframes,
            since=args.since,
            sim_data=args.sim_data,
            live=args.live,
            poll_interval_s=args.poll_interval,
            exchanges=args.exchanges,
            datasets=args.datasets,
            config=args.config,
            tls=args.tls,
            nats_cluster=args.nats_cluster,
            replicas=replicas,
            mode=args.mode,
            source=args.source,
            aggregators=args.aggregators,
        )
        sys.exit(asyncio.run(run_up(options)))
    if args.command == "status":
        from .status import collect_status, render

        try:
            report = asyncio.run(collect_status(home))
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        print(render(report, args.json))
    if args.command == "asyncapi":
        from .asyncapi import main as asyncapi_main

        forwarded = (["--check"] if args.check else []) + (["--output", args.output] if args.output else [])
        sys.exit(asyncapi_main(forwarded))
    if args.command == "openapi":
        from .openapi import main as openapi_main

        forwarded = (["--check"] if args.check else []) + (["--output", args.output] if args.output else [])
        sys.exit(openapi_main(forwarded))
    if args.command in ("replay", "rebuild"):
        from .replay import run_rebuild, run_replay
        from .stackfile import stack_env

        stack_env(home)  # connect to the running local stack unless the environment says otherwise
        if args.command == "replay":
            sys.exit(run_replay(args.stage, args.start, args.end, args.filter))
        from .stackfile import stack_path

        local_stack = stack_path(home).exists()
        sys.exit(run_rebuild(args.filter, args.concurrency, args.processes, local_stack=local_stack))
    if args.command == "query":
        from .lake_query import Markets, run_query
        from .stackfile import stack_env

        stack_env(home)  # the running local stack's lake unless the environment says otherwise
        sys.exit(run_query(args.sql, args.format, args.output, Markets(args.exchange, args.symbol)))
    if args.command == "compact":
        from .compact import parse_duration, run_compact
        from .stackfile import stack_env

        try:
            older_than, grace = parse_duration(args.older_than), parse_duration(args.grace)
        except ValueError as exc:
            parser.error(str(exc))
        stack_env(home)
        sys.exit(run_compact(older_than, grace))
    if args.command == "ingest":
        from cryptoflow_extractor.main import ingest as run_ingest

        from .stackfile import stack_env

        stack_env(home)  # publish to the running local stack unless the environment says otherwise
        sys.exit(run_ingest(args))
    if args.command == "warehouse":
        from .warehouse import database_url
        from .warehouse import main as warehouse_main

        warehouse_main(database_url(args.database_url, home))
    if args.command == "api-key":
        from . import api_keys
        from .warehouse import database_url

        if args.api_key_command == "create" and (args.rate <= 0 or args.burst < 1):
            parser.error("--rate must be positive and --burst at least 1")
        sys.exit(
            api_keys.main(
                database_url(args.database_url, home),
                args.api_key_command,
                getattr(args, "name", None),
                getattr(args, "rate", 20.0),
                getattr(args, "burst", 100),
                getattr(args, "json", False),
            )
        )
    if args.command == "runs":
        from . import runs as run_history
        from .warehouse import database_url

        url = database_url(args.database_url, home)
        if args.batches:
            batches = asyncio.run(run_history.fetch_batches(url, args.limit))
            print(run_history.to_json(batches) if args.json else run_history.render_batches(batches))
        else:
            found = asyncio.run(run_history.fetch_runs(url, args.service, args.limit))
            print(run_history.to_json(found) if args.json else run_history.render_runs(found))


if __name__ == "__main__":
    main()
