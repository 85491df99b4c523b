"""What every exchange's wire module provides: routes of pure handlers, its error bodies,
its rate-limit and server-error replies, and where the records sit in its response bodies.

A handler takes the query pairs, the market and the server clock's `now_ms` and returns a
JSON-able body (or a `Reply`); refusals are raised as a `WireError` whose `reply()` is the
exchange's own error. `server.py` is the only place that does HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptoflow_exchange_sim.market import Market

JsonObject = dict[str, object]
QueryPairs = Sequence[tuple[str, str]]
Handler = Callable[[QueryPairs, Market, int], object]

# What a route serves; fault endpoints name these (`ohlcv`, `bybit.ohlcv`).
DATASETS = ("markets", "currencies", "ohlcv", "ticker", "orderbook", "trades", "time")

GATEWAY_ERROR_TEMPLATE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
)


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: a JSON body, or `raw` bytes of `content_type` when it is not JSON."""

    body: object = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"


class WireError(Exception):
    """A request the exchange would refuse, rendered in that exchange's error format."""

    def reply(self) -> Reply:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: `path` under the exchange's prefix, the dataset it serves, its handler and,
    where the exchange reports request weight, the weight of one call."""

    path: str
    dataset: str
    handle: Handler
    weight: Callable[[QueryPairs], int] | None = None


@dataclass(frozen=True, slots=True)
class Venue:
    """An exchange's wire format.

    * `prefixes`: where the routes are mounted; the first is the exchange's own API prefix.
    * `records(dataset, body)`: the records a body holds (dicts or positional lists), for the
      field faults; a body of another shape (an error) holds none.
    * `row_fields[dataset]`: names of the columns of positional records (klines).
    * `rate_limited(status, retry_after_s, now_ms)`: the exchange's own rate-limit answer.
    * `server_error(status, now_ms)`: the exchange's own JSON body for a 5xx.
    * `weight_header`: header reporting the request weight used in the current minute.
    """

    name: str
    prefixes: tuple[str, ...]
    routes: tuple[Route, ...]
    records: Callable[[str, object], list[object]]
    row_fields: Mapping[str, Sequence[str]]
    rate_limited: Callable[[int, float, int], Reply]
    server_error: Callable[[int, int], object]
    default_rate_limit_status: int = 429
    weight_header: str | None = None


def gateway_error(status: int, reason: str) -> Reply:
    """What a load balancer in front of an exchange answers: HTML, not the exchange's JSON."""
    page = GATEWAY_ERROR_TEMPLATE.format(status=status, reason=reason)
    return Reply(status=status, raw=page.encode(), content_type="text/html")


def retry_after_header(seconds: float) -> str:
    """HTTP's Retry-After is whole seconds; a fractional plan is rounded up."""
    whole = int(seconds)
    return str(whole if whole == seconds else whole + 1)
