"""Exchange simulator: Binance's public spot REST wire format served on 127.0.0.1."""

from cryptoflow_exchange_sim.csv_market import CsvCandleMarket
from cryptoflow_exchange_sim.faults import FaultyMarket, MalformedCandle, malform, parse_malformed_spec
from cryptoflow_exchange_sim.intervals import INTERVALS, Interval
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Listing, Market
from cryptoflow_exchange_sim.random_walk import RandomWalkMarket
from cryptoflow_exchange_sim.server import Simulator, create_app, running_simulator

__all__ = [
    "INTERVALS",
    "CsvCandleMarket",
    "FaultyMarket",
    "Interval",
    "Kline",
    "KlineWindow",
    "Listing",
    "MalformedCandle",
    "Market",
    "RandomWalkMarket",
    "Simulator",
    "create_app",
    "malform",
    "parse_malformed_spec",
    "running_simulator",
]
