"""`cryptoflow-exchange-sim` command line: serve simulated exchanges until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from cryptoflow_exchange_sim.aggregators import PROVIDERS
from cryptoflow_exchange_sim.archives import ArchiveFaults, parse_archive_fault_spec
from cryptoflow_exchange_sim.csv_market import CsvCandleMarket
from cryptoflow_exchange_sim.fault_plan import Fault, load_fault_file, parse_fault_spec
from cryptoflow_exchange_sim.faults import FaultyMarket, MalformedCandle, parse_malformed_spec
from cryptoflow_exchange_sim.live import LiveMarket
from cryptoflow_exchange_sim.market import Market
from cryptoflow_exchange_sim.random_walk import RandomWalkMarket
from cryptoflow_exchange_sim.server import EXCHANGES, AnswerCache, Simulator
from cryptoflow_exchange_sim.stream_faults import StreamFault, parse_stream_fault_spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptoflow-exchange-sim",
        description=(
            "Serve exchanges' public spot REST APIs (Binance /api/v3, Bybit /v5/market, Gate /api/v4) "
            "on localhost: markets, OHLCV, 24h tickers, order books and trades."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--exchange",
        default="binance",
        metavar="NAME[,NAME...]",
        help=f"wire format(s) served: {', '.join(EXCHANGES)}, a comma list, or 'all' (default binance)",
    )
    parser.add_argument(
        "--data", type=Path, help="directory of recorded SYMBOL-INTERVAL.csv candles (and SYMBOL-trades.csv trades)"
    )
    parser.add_argument("--trades-data", type=Path, help="another directory of SYMBOL-trades.csv files (with --data)")
    parser.add_argument(
        "--symbols", default="BTC/USDT,ETH/USDT", help="random-walk symbols, comma separated (without --data)"
    )
    parser.add_argument("--seed", type=int, default=42, help="random-walk seed (without --data)")
    parser.add_argument(
        "--start",
        default="2024-01-01T00:00:00Z",
        help="first random-walk instant: ISO 8601 (UTC if naive) or ms",
    )
    parser.add_argument("--end", help="random-walk end, exclusive (default: candles keep coming until now)")
    parser.add_argument(
        "--malformed",
        action="append",
        default=[],
        metavar="SYMBOL:OPEN_TIME_MS[:KIND]",
        help="serve that candle broken; KIND is high_below_low (default), negative_price or negative_volume",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND:ENDPOINT[:OPTION=VALUE,...]",
        help="HTTP fault, e.g. rate_limit:ohlcv:count=2,retry_after=1 (see the README for kinds and options)",
    )
    parser.add_argument("--faults", type=Path, metavar="FILE", help='JSON fault plan: {"faults": [{...}, ...]}')
    parser.add_argument(
        "--book-tick-ms",
        type=int,
        help="live order books: a few levels change every tick (websocket depth streams need this; e.g. 100)",
    )
    parser.add_argument(
        "--trade-scale", type=int, default=1, help="random walk: multiply every candle's trade count (default 1)"
    )
    parser.add_argument(
        "--live-trades",
        action="store_true",
        help="random walk: a trade is public once its time has passed, not once its candle closed (streams)",
    )
    parser.add_argument(
        "--stream-fault",
        action="append",
        default=[],
        metavar="KIND:EXCHANGE.CHANNEL[:OPTION=VALUE,...]",
        help="websocket fault, e.g. skip:binance.orderbook:after=20 (kinds: drop, stall, skip, reorder, stale_snapshot)",
    )
    parser.add_argument(
        "--archive-fault",
        action="append",
        default=[],
        metavar="KIND:FILE_PATTERN",
        help="Binance archive fault by zip name pattern, e.g. microseconds:BTCUSDT-1m-2024-03* "
        "(kinds: bad_checksum, header, microseconds, missing, replace)",
    )
    parser.add_argument(
        "--aggregator-key",
        default=os.environ.get("SIM_AGGREGATOR_KEY"),
        help="API key CoinGecko's and CoinPaprika's endpoints require (default $SIM_AGGREGATOR_KEY; none: open)",
    )
    parser.add_argument(
        "--aggregator-rate-limited",
        action="append",
        default=[],
        metavar="PROVIDER:N",
        help="answer the provider's next N requests 429 with Retry-After, e.g. coingecko:3",
    )
    parser.add_argument("--url-file", type=Path, help="write the base URL here once listening")
    parser.add_argument(
        "--cache-closed",
        action="store_true",
        help="with --end in the past: answer repeated requests from a cache (benchmarks: the simulator is not measured)",
    )
    return parser


def parse_instant_ms(text: str) -> int:
    """Epoch milliseconds from digits, or from ISO 8601 read as UTC when it has no offset."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_exchanges(text: str) -> list[str]:
    names = list(EXCHANGES) if text.strip() == "all" else [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXCHANGES]
    if unknown or not names:
        raise ValueError(
            f"unknown exchange {', '.join(unknown) or repr(text)}; choose from {', '.join(EXCHANGES)} or all"
        )
    return list(dict.fromkeys(names))


def build_market(args: argparse.Namespace) -> Market:
    market: Market
    if args.data is not None:
        market = CsvCandleMarket(args.data, args.trades_data)
    else:
        if args.trades_data is not None:
            raise ValueError("--trades-data needs --data (a random walk makes its own trades)")
        symbols = [symbol.strip() for symbol in args.symbols.split(",") if symbol.strip()]
        end_ms = None if args.end is None else parse_instant_ms(args.end)
        market = RandomWalkMarket(
            symbols, args.seed, parse_instant_ms(args.start), end_ms, args.trade_scale, args.live_trades
        )
    faults: list[MalformedCandle] = [parse_malformed_spec(spec) for spec in args.malformed]
    if faults:
        market = FaultyMarket(market, faults)
    return market if args.book_tick_ms is None else LiveMarket(market, args.book_tick_ms)


def build_cache(args: argparse.Namespace) -> AnswerCache | None:
    if not args.cache_closed:
        return None
    if args.end is None or args.data is not None:
        raise ValueError("--cache-closed needs a random walk with --end: only a finished market never changes")
    return AnswerCache(closed_after_ms=parse_instant_ms(args.end))


def build_stream_faults(args: argparse.Namespace) -> list[StreamFault]:
    return [parse_stream_fault_spec(spec) for spec in args.stream_fault]


def build_archive_faults(args: argparse.Namespace) -> ArchiveFaults:
    faults = ArchiveFaults()
    for spec in args.archive_fault:
        faults.add(*parse_archive_fault_spec(spec))
    return faults


def parse_rate_limited(spec: str) -> tuple[str, int]:
    provider, _, count = spec.partition(":")
    if provider not in PROVIDERS or not count.isdigit():
        raise ValueError(
            f"--aggregator-rate-limited {spec!r}: expected PROVIDER:N, PROVIDER one of {', '.join(PROVIDERS)}"
        )
    return provider, int(count)


def build_faults(args: argparse.Namespace) -> list[Fault]:
    faults = [] if args.faults is None else load_fault_file(args.faults)
    return faults + [parse_fault_spec(spec) for spec in args.fault]


async def serve(
    market: Market,
    host: str,
    port: int,
    url_file: Path | None,
    exchanges: Sequence[str] = ("binance",),
    faults: Sequence[Fault] = (),
    cache: AnswerCache | None = None,
    stream_faults: Sequence[StreamFault] = (),
    archive_faults: ArchiveFaults | None = None,
    aggregator_key: str | None = None,
    rate_limited: Sequence[tuple[str, int]] = (),
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    simulator = Simulator(
        market,
        host,
        port,
        exchanges=exchanges,
        faults=faults,
        cache=cache,
        stream_faults=stream_faults,
        archive_faults=archive_faults,
        aggregator_key=aggregator_key,
    )
    for provider, count in rate_limited:
        simulator.aggregators.rate_limited[provider] += count
    base_url = await simulator.start()
    try:
        if url_file is not None:
            _write_atomically(url_file, base_url)
        _log({"event": "exchange_sim.listening", "url": base_url, "pid": os.getpid()})
        await stop.wait()
    finally:
        await simulator.stop()
        _log({"event": "exchange_sim.stopped", "url": base_url})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        exchanges = parse_exchanges(args.exchange)
        market = build_market(args)
        faults = build_faults(args)
        cache = build_cache(args)
        stream_faults = build_stream_faults(args)
        archive_faults = build_archive_faults(args)
        rate_limited = [parse_rate_limited(spec) for spec in args.aggregator_rate_limited]
    except ValueError as error:
        parser.error(str(error))
    asyncio.run(
        serve(
            market, args.host, args.port, args.url_file, exchanges, faults, cache, stream_faults, archive_faults,
            args.aggregator_key, rate_limited,
        )
    )  # fmt: skip
    return 0


def _write_atomically(path: Path, text: str) -> None:
    # A parent polling for the file must never read it half-written.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _log(event: dict[str, object]) -> None:
    sys.stdout.write(orjson.dumps(event).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
