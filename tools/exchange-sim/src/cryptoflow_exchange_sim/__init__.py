"""Exchange simulator: Binance's, Bybit's and Gate's public spot REST wire formats on 127.0.0.1."""

from cryptoflow_exchange_sim.csv_market import CsvCandleMarket
from cryptoflow_exchange_sim.derived import BookSnapshot, Level, TickerSnapshot, book_snapshot, ticker_snapshot
from cryptoflow_exchange_sim.fault_plan import (
    FAULT_KINDS,
    Fault,
    FaultPlan,
    fault_from_json,
    faults_from_json,
    load_fault_file,
    parse_fault_spec,
)
from cryptoflow_exchange_sim.faults import FaultyMarket, MalformedCandle, malform, parse_malformed_spec
from cryptoflow_exchange_sim.intervals import INTERVALS, Interval
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Listing, Market, Trade, TradeStats, TradeWindow
from cryptoflow_exchange_sim.random_walk import RandomWalkMarket
from cryptoflow_exchange_sim.server import EXCHANGES, Simulator, Stats, create_app, running_simulator

__all__ = [
    "EXCHANGES",
    "FAULT_KINDS",
    "INTERVALS",
    "BookSnapshot",
    "CsvCandleMarket",
    "Fault",
    "FaultPlan",
    "FaultyMarket",
    "Interval",
    "Kline",
    "KlineWindow",
    "Level",
    "Listing",
    "MalformedCandle",
    "Market",
    "RandomWalkMarket",
    "Simulator",
    "Stats",
    "TickerSnapshot",
    "Trade",
    "TradeStats",
    "TradeWindow",
    "book_snapshot",
    "create_app",
    "fault_from_json",
    "faults_from_json",
    "load_fault_file",
    "malform",
    "parse_fault_spec",
    "parse_malformed_spec",
    "running_simulator",
    "ticker_snapshot",
]
