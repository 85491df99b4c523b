"""`cryptoflow-extractor`: run the service, check a jobs file, or backfill a date range.

    cryptoflow-extractor                          run the extractor service
    cryptoflow-extractor validate-config FILE     check a jobs file and exit
    cryptoflow-extractor backfill --exchange binance --symbols BTC/USDT --timeframe 1m \\
        --from 2024-01-01 --to 2024-01-31 [--source binance-archive] [--dataset trades|agg_trades]
    cryptoflow-extractor ingest PATH_OR_S3_URL --dataset ohlcv|trades --mapping mapping.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptoflow_runtime import ConfigError, load_settings, run_service
from cryptoflow_runtime.logs import configure_logging

from .app import NAME, build
from .config import ExtractorSettings
from .jobs import JobsConfigError, load_jobs


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def validate_config(path: Path) -> int:
    try:
        config = load_jobs(path)
    except JobsConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for exchange_id, spec in config.exchanges.items():
        datasets = ", ".join(d.value for d in spec.datasets.enabled()) or "none"
        print(f"{exchange_id}: {len(spec.symbols)} symbol(s) [{', '.join(spec.symbols)}]; datasets: {datasets}")
    print(f"{path}: ok")
    return 0


def backfill(args: argparse.Namespace) -> int:
    from .archive import ArchiveReport
    from .backfill import BackfillRequest, run_backfill
    from .trade_backfill import run_trade_backfill

    try:
        settings = load_settings(ExtractorSettings)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging(NAME + "-backfill", "WARNING")
    request = BackfillRequest(
        exchange=args.exchange or settings.exchange,
        symbols=[s.strip() for s in args.symbols.split(",")] if args.symbols else settings.symbols,
        timeframe=args.timeframe,
        start=args.start,
        end=args.end,
        source=args.source,
        archive_url=args.archive_url,
        archive_market=args.archive_market,
        dataset=args.dataset,
    )
    report = ArchiveReport()
    try:
        if request.dataset == "ohlcv":
            done = asyncio.run(run_backfill(settings, request, report=report))
        else:
            done = asyncio.run(run_trade_backfill(settings, request, report=report))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if request.source != "rest":
        for outcome in ("loaded", "skipped", "replaced", "missing", "corrupt"):
            names = report.names(outcome)
            if names:
                print(f"archive files {outcome}: {len(names)}: {', '.join(names)}")
        for name, detail in sorted(report.details.items()):
            print(f"  {name}: {detail}")
    what = "candle slots covered" if request.dataset == "ohlcv" else f"{request.dataset} published"
    print(f"backfill done: {done} {what} for {', '.join(request.symbols)}")
    # A corrupt archive was not loaded: the run is not complete until it is retried.
    return 1 if report.names("corrupt") else 0


def ingest(args: argparse.Namespace) -> int:
    """Publish a CSV or Parquet file's rows to RAW (`ingest.py`); 2 on a bad file or mapping."""
    from cryptoflow_runtime import LakeSettings, ServiceSettings

    from .ingest import IngestError, load_mapping, run_ingest

    try:
        settings = load_settings(ServiceSettings)
        s3_endpoint_url = load_settings(LakeSettings).s3_endpoint_url
        mapping = load_mapping(args.mapping, args.dataset)
        configure_logging(NAME + "-ingest", "WARNING")
        report = asyncio.run(run_ingest(settings, args.path, args.dataset, mapping, s3_endpoint_url, sys.stderr))
    except (ConfigError, IngestError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    markets = ", ".join(f"{exchange} {symbol}" for exchange, symbol in sorted(report.markets)) or "none"
    print(f"file sha256 {report.sha256}: {report.rows} rows in {report.pages} pages published for {markets}")
    if report.dead_lettered_rows:
        print(f"{report.dead_lettered_rows} rows could not be published (no valid exchange or symbol): see the DLQ")
    return 0


def main(argv: list[str] | None = None) -> None:
    args_in = sys.argv[1:] if argv is None else argv
    if not args_in:
        run_service(NAME, lambda: load_settings(ExtractorSettings), build)
        return
    parser = argparse.ArgumentParser(
        prog="cryptoflow-extractor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate-config", help="check a jobs YAML file")
    check.add_argument("file", type=Path)
    fill = sub.add_parser("backfill", help="fetch a date range of candles as fast as limits allow")
    fill.add_argument("--exchange", help="ccxt id (default EXTRACTOR_EXCHANGE)")
    fill.add_argument("--symbols", help="comma-separated unified symbols (default EXTRACTOR_SYMBOLS)")
    fill.add_argument("--timeframe", default="1m")
    fill.add_argument("--from", dest="start", type=_instant, required=True, help="ISO 8601, UTC")
    fill.add_argument("--to", dest="end", type=_instant, required=True, help="ISO 8601, UTC (inclusive)")
    fill.add_argument(
        "--source",
        default="rest",
        choices=["rest", "binance-archive"],
        help="rest (default), or Binance's bulk archives (data.binance.vision) then REST for what they lack",
    )
    fill.add_argument(
        "--archive-url", help="archive host (default: the exchange URL when set, else https://data.binance.vision)"
    )
    fill.add_argument("--archive-market", default="spot", help="archive tree: spot, futures/um or futures/cm")
    fill.add_argument(
        "--dataset",
        default="ohlcv",
        choices=["ohlcv", "trades", "agg_trades"],
        help="ohlcv (default); trades or agg_trades from the archives (--source binance-archive), trades then by REST",
    )
    put = sub.add_parser("ingest", help="publish a CSV or Parquet file's rows to RAW")
    put.add_argument("path", help="CSV or Parquet file: a local path or s3://bucket/key (S3_ENDPOINT_URL)")
    put.add_argument("--dataset", required=True, choices=["ohlcv", "trades"])
    put.add_argument("--mapping", required=True, type=Path, help="YAML: columns, ts_unit, exchange[_column], ...")
    sub.add_parser("run", help="run the extractor service (the default)")
    args = parser.parse_args(args_in)
    if args.command == "validate-config":
        sys.exit(validate_config(args.file))
    if args.command == "backfill":
        sys.exit(backfill(args))
    if args.command == "ingest":
        sys.exit(ingest(args))
    run_service(NAME, lambda: load_settings(ExtractorSettings), build)


if __name__ == "__main__":
    main()
