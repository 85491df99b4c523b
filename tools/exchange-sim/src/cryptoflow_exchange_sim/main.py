"""`cryptoflow-exchange-sim` command line: serve a simulated Binance until SIGTERM/SIGINT."""

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

from cryptoflow_exchange_sim.csv_market import CsvCandleMarket
from cryptoflow_exchange_sim.faults import FaultyMarket, MalformedCandle, parse_malformed_spec
from cryptoflow_exchange_sim.market import Market
from cryptoflow_exchange_sim.random_walk import RandomWalkMarket
from cryptoflow_exchange_sim.server import Simulator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptoflow-exchange-sim",
        description="Serve Binance's public spot REST API (exchangeInfo, klines, ping, time) on localhost.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--data", type=Path, help="directory of SYMBOL-INTERVAL.csv recorded candles")
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
    parser.add_argument("--url-file", type=Path, help="write the base URL here once listening")
    return parser


def parse_instant_ms(text: str) -> int:
    """Epoch milliseconds from digits, or from ISO 8601 read as UTC when it has no offset."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def build_market(args: argparse.Namespace) -> Market:
    market: Market
    if args.data is not None:
        market = CsvCandleMarket(args.data)
    else:
        symbols = [symbol.strip() for symbol in args.symbols.split(",") if symbol.strip()]
        end_ms = None if args.end is None else parse_instant_ms(args.end)
        market = RandomWalkMarket(symbols, args.seed, parse_instant_ms(args.start), end_ms)
    faults: list[MalformedCandle] = [parse_malformed_spec(spec) for spec in args.malformed]
    return FaultyMarket(market, faults) if faults else market


async def serve(market: Market, host: str, port: int, url_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    simulator = Simulator(market, host, port)
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
        market = build_market(args)
    except ValueError as error:
        parser.error(str(error))
    asyncio.run(serve(market, args.host, args.port, args.url_file))
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
