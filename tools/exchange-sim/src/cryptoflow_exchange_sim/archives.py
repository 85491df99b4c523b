"""Binance's public bulk archives (data.binance.vision), built from the simulated market's candles and trades.

The tree under `/data/spot/` (and the same under `/data/futures/um/` and `/data/futures/cm/`): `monthly/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-YYYY-MM.zip`
for months that have ended, `daily/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-YYYY-MM-DD.zip`
for days that have ended, each with a `.zip.CHECKSUM` beside it (`sha256sum`'s line: the hex
digest, two spaces, the zip's name). A zip holds one CSV of the period's klines, Binance's twelve
columns, no header: the same rows `/api/v3/klines` serves for the period.

The tree is listed as data.binance.vision's S3 bucket lists it (ListObjects, version 1: `GET
/?prefix=data/spot/monthly/klines/BTCUSDT/1m/&marker=...`, 1000 keys a page, XML): a zip and its
CHECKSUM for every period from the symbol's first candle to its last (up to the last ended
period), which is how a client learns where a symbol's archive starts and ends.

The traps users meet in the real archives are served on request (`ArchiveFaults`, by file name
pattern): a CHECKSUM that does not match its zip, a header row, timestamps in microseconds (as
Binance's spot files have from 2025 on), a missing file (404), and a zip replaced after
publication (different values, a new checksum: `replace`).

Beside `klines`, the `trades` and `aggTrades` trees (no interval level:
`<period>/trades/<SYMBOL>/<SYMBOL>-trades-YYYY-MM[-DD].zip`), built from the trades the REST side
serves for the period: a trades CSV has Binance's seven columns (id, price, qty, quoteQty, time,
isBuyerMaker, isBestMatch), an aggTrades CSV its eight (agg id, price, qty, first and last trade
id, time, isBuyerMaker, isBestMatch), the trades grouped as `/api/v3/aggTrades` groups them
(consecutive trades of one time, price and taker side; the aggregate's id is its first trade's).
The same faults apply, by file name.
"""

from __future__ import annotations

import calendar
import fnmatch
import hashlib
import io
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from xml.sax.saxutils import escape

from aiohttp import web

from cryptoflow_exchange_sim.binance import agg_trades_body, aggregate
from cryptoflow_exchange_sim.intervals import INTERVALS
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Market, Trade, TradeWindow

ARCHIVE_MARKETS = ("spot", "futures/um", "futures/cm")
# One route per tree: spot, and the USDⓈ-M and COIN-M futures trees, laid out alike and serving the
# same market's files (a header row, as most real futures files have, is a `header` fault).
ARCHIVE_ROUTES = tuple(
    f"/data/{market}/{{period:daily|monthly}}/klines/{{symbol}}/{{interval}}/{{name}}" for market in ARCHIVE_MARKETS
) + tuple(
    f"/data/{market}/{{period:daily|monthly}}/{{kind:trades|aggTrades}}/{{symbol}}/{{name}}"
    for market in ARCHIVE_MARKETS
)
TRADE_KINDS = ("trades", "aggTrades")
_NAME = re.compile(r"^([A-Z0-9]+)-(\w+)-(\d{4})-(\d{2})(?:-(\d{2}))?\.zip(\.CHECKSUM)?$")
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
)
TRADES_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match"
AGG_TRADES_HEADER = (
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match"
)
FAULT_KINDS = ("bad_checksum", "header", "microseconds", "missing", "replace")
_CACHE_FILES = 256
_LIST_PAGE = 1000
# A fixed member time: the same period's zip is the same bytes every time it is built.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


@dataclass
class ArchiveFaults:
    """Which files misbehave, by fnmatch pattern on the zip's name (e.g. `BTCUSDT-1m-2024-02-*`)."""

    patterns: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, pattern: str) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown archive fault {kind!r} (kinds: {', '.join(FAULT_KINDS)})")
        self.patterns.setdefault(kind, []).append(pattern)

    def applies(self, kind: str, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns.get(kind, ()))


def parse_archive_fault_spec(spec: str) -> tuple[str, str]:
    """`KIND:PATTERN`, e.g. `microseconds:BTCUSDT-1m-2024-03*`."""
    kind, sep, pattern = spec.partition(":")
    if not sep or not pattern or kind not in FAULT_KINDS:
        raise ValueError(
            f"archive fault {spec!r}: expected KIND:FILE_PATTERN with KIND one of {', '.join(FAULT_KINDS)}"
        )
    return kind, pattern


@dataclass(frozen=True, slots=True)
class Period:
    start_ms: int
    end_ms: int  # exclusive


def period_of(year: int, month: int, day: int | None) -> Period:
    if day is None:
        first = datetime(year, month, 1, tzinfo=UTC)
        days = calendar.monthrange(year, month)[1]
        return Period(int(first.timestamp() * 1000), int(first.timestamp() * 1000) + days * 86_400_000)
    start = int(datetime(year, month, day, tzinfo=UTC).timestamp() * 1000)
    return Period(start, start + 86_400_000)


def _replaced(kline: Kline) -> Kline:
    """The values a corrected file carries instead: the volume restated."""
    volume = Decimal(kline.volume) + Decimal("1")
    return kline._replace(volume=f"{volume:f}")


def kline_csv(klines: list[Kline], header: bool, microseconds: bool) -> bytes:
    scale = 1000 if microseconds else 1
    lines = [HEADER] if header else []
    for k in klines:
        close_time = (k.close_time + 1) * scale - 1 if microseconds else k.close_time
        lines.append(
            f"{k.open_time * scale},{k.open},{k.high},{k.low},{k.close},{k.volume},{close_time},"
            f"{k.quote_volume},{k.trade_count},{k.taker_buy_base_volume},{k.taker_buy_quote_volume},{k.ignore}"
        )
    return ("\n".join(lines) + "\n").encode()


def _replaced_trade(trade: Trade) -> Trade:
    """The values a corrected trades file carries instead: the amount restated."""
    return trade._replace(qty=f"{Decimal(trade.qty) + Decimal(1):f}")


def _flag(value: bool) -> str:
    return "True" if value else "False"  # as Binance's CSVs write booleans


def trades_csv(trades: list[Trade], header: bool, microseconds: bool) -> bytes:
    scale = 1000 if microseconds else 1
    lines = [TRADES_HEADER] if header else []
    lines += [
        f"{t.id},{t.price},{t.qty},{t.quote_qty},{t.time_ms * scale},{_flag(t.is_buyer_maker)},True" for t in trades
    ]
    return ("\n".join(lines) + "\n").encode()


def agg_trades_csv(trades: list[Trade], header: bool, microseconds: bool) -> bytes:
    scale = 1000 if microseconds else 1
    lines = [AGG_TRADES_HEADER] if header else []
    lines += [
        f"{a['a']},{a['p']},{a['q']},{a['f']},{a['l']},{int(str(a['T'])) * scale},{_flag(a['m'] is True)},True"
        for a in agg_trades_body(aggregate(trades))
    ]
    return ("\n".join(lines) + "\n").encode()


def zipped(member: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(member, date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, content)
    return out.getvalue()


class ArchiveTree:
    """Serves the archive tree of a market (Binance's symbol ids and intervals)."""

    def __init__(self, market: Market, clock: Callable[[], int], faults: ArchiveFaults | None = None) -> None:
        self.market = market
        self.clock = clock
        self.faults = faults or ArchiveFaults()
        # By name and variant (a fault added later changes the file).
        self._zips: OrderedDict[tuple[str, bool, bool, bool], bytes] = OrderedDict()
        self.requests: dict[str, int] = {}

    def zip_bytes(self, name: str) -> bytes | None:
        """The zip of that name, or None when there is no such file (yet)."""
        match = _NAME.match(name.removesuffix(".CHECKSUM"))
        if match is None or self.faults.applies("missing", name.removesuffix(".CHECKSUM")):
            return None
        symbol_id, interval_name, year, month, day, _ = match.groups()
        interval = INTERVALS.get("1m" if interval_name in TRADE_KINDS else interval_name)
        if interval is None or symbol_id not in {listing.symbol_id for listing in self.market.listings()}:
            return None
        period = period_of(int(year), int(month), int(day) if day else None)
        now = self.clock()
        if period.end_ms > now:
            return None  # published once the period has ended
        zip_name = name.removesuffix(".CHECKSUM")
        replaced = self.faults.applies("replace", zip_name)
        header = self.faults.applies("header", zip_name)
        micro = self.faults.applies("microseconds", zip_name)
        key = (zip_name, replaced, header, micro)
        cached = self._zips.get(key)
        if cached is not None:
            self._zips.move_to_end(key)
            return cached
        if interval_name in TRADE_KINDS:
            csv = self._trades_csv(symbol_id, interval_name, period, now, replaced, header, micro)
        else:
            window = KlineWindow(start_ms=period.start_ms, end_ms=period.end_ms - 1, limit=10**9)
            klines = self.market.klines(symbol_id, interval, window, now)
            csv = kline_csv([_replaced(k) for k in klines] if replaced else klines, header, micro) if klines else None
        if csv is None:
            return None
        built = zipped(zip_name.removesuffix(".zip") + ".csv", csv)
        self._zips[key] = built
        if len(self._zips) > _CACHE_FILES:
            self._zips.popitem(last=False)
        return built

    def _trades_csv(
        self, symbol_id: str, kind: str, period: Period, now: int, replaced: bool, header: bool, micro: bool
    ) -> bytes | None:
        """A period's trades (or aggregate trades) as the REST side serves them, as CSV; None when
        the period has none."""
        window = TradeWindow(start_ms=period.start_ms, end_ms=period.end_ms - 1, limit=10**9)
        trades = self.market.trades(symbol_id, window, now)
        if not trades:
            return None
        if replaced:
            trades = [_replaced_trade(t) for t in trades]
        return (trades_csv if kind == "trades" else agg_trades_csv)(trades, header, micro)

    def csv_of(self, name: str) -> bytes:
        """The CSV inside the zip of that name, as served now (tests compare bronze with it)."""
        content = self.zip_bytes(name)
        if content is None:
            raise KeyError(name)
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return archive.read(archive.namelist()[0])

    def checksum_text(self, zip_name: str, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        if self.faults.applies("bad_checksum", zip_name):
            digest = hashlib.sha256(content + b"corrupted").hexdigest()
        return f"{digest}  {zip_name}\n"

    def keys(self, prefix: str) -> list[str]:
        """Every key under a `data/<market>/<period>/klines/<SYMBOL>/<interval>/` prefix (or
        `data/<market>/<period>/<trades|aggTrades>/<SYMBOL>/`), sorted."""
        parts = prefix.strip("/").split("/")
        if parts[:3] in (["data", "futures", "um"], ["data", "futures", "cm"]):
            parts = ["data", "futures", *parts[3:]]  # the futures trees: one level deeper than spot
        if len(parts) == 5 and parts[3] in TRADE_KINDS:
            parts = [*parts, parts[3]]  # no interval level: the kind names the files (`BTCUSDT-trades-...`)
        if len(parts) != 6 or parts[:2] not in (["data", "spot"], ["data", "futures"]):
            return []
        if parts[2] not in ("monthly", "daily"):
            return []
        period, symbol_id, interval_name = parts[2], parts[4], parts[5]
        # Trades exist where candles do: the 1m candles bound a trades tree's span.
        interval = INTERVALS.get("1m" if interval_name in TRADE_KINDS else interval_name)
        if interval is None or symbol_id not in {listing.symbol_id for listing in self.market.listings()}:
            return []
        now = self.clock()
        first = self.market.klines(symbol_id, interval, KlineWindow(start_ms=0, end_ms=None, limit=1), now)
        last = self.market.klines(symbol_id, interval, KlineWindow(start_ms=None, end_ms=None, limit=1), now)
        if not first or not last:
            return []
        names: list[str] = []
        moment = datetime.fromtimestamp(first[0].open_time / 1000, UTC)
        cursor = moment.replace(day=1) if period == "monthly" else moment
        while True:
            label = cursor.strftime("%Y-%m" if period == "monthly" else "%Y-%m-%d")
            bounds = period_of(cursor.year, cursor.month, None if period == "monthly" else cursor.day)
            if bounds.start_ms > last[0].open_time or bounds.end_ms > now:
                break
            name = f"{symbol_id}-{interval_name}-{label}.zip"
            if not self.faults.applies("missing", name):
                names += [f"{prefix.rstrip('/')}/{name}", f"{prefix.rstrip('/')}/{name}.CHECKSUM"]
            if period == "monthly":
                cursor = (cursor + timedelta(days=32)).replace(day=1)
            else:
                cursor += timedelta(days=1)
        return sorted(names)

    async def list_bucket(self, request: web.Request) -> web.Response:
        """S3 ListObjects (v1) of the tree, as data.binance.vision's bucket answers it."""
        prefix = request.query.get("prefix", "")
        marker = request.query.get("marker", "")
        keys = [key for key in self.keys(prefix) if key > marker]
        page, truncated = keys[:_LIST_PAGE], len(keys) > _LIST_PAGE
        contents = "".join(f"<Contents><Key>{escape(key)}</Key></Contents>" for key in page)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>data.binance.vision</Name><Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>"
            f"<MaxKeys>{_LIST_PAGE}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
            f"{contents}</ListBucketResult>"
        )
        return web.Response(text=body, content_type="application/xml")

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests[name] = self.requests.get(name, 0) + 1
        content = self.zip_bytes(name)
        if content is None:
            # S3's answer for a key that is not there (data.binance.vision is an S3 bucket).
            return web.Response(
                status=404, text="<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml"
            )
        if name.endswith(".CHECKSUM"):
            return web.Response(text=self.checksum_text(name.removesuffix(".CHECKSUM"), content))
        return web.Response(body=content, content_type="application/zip")
