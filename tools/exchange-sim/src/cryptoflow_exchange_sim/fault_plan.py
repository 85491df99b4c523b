"""HTTP faults: which requests get a rate limit, a 5xx, a delay, or a damaged body.

A fault names a kind, an endpoint and options. On the command line:
`KIND:ENDPOINT[:OPTION=VALUE,...]`, e.g. `rate_limit:ohlcv:count=2,retry_after=1`; in a file
or on `POST /_sim/faults`: `{"kind": "rate_limit", "endpoint": "ohlcv", "count": 2, ...}`.

ENDPOINT is `*` (everything), a dataset (`markets`, `currencies`, `ohlcv`, `ticker`,
`orderbook`, `trades`, `time`), an exchange-qualified one (`bybit.ohlcv`, `gate.*`), or a
request path (`/api/v3/aggTrades`).

Kinds (and their options):
* `rate_limit` (`status`, `retry_after` seconds, default 1): the exchange's own rate-limit
  answer with `Retry-After`; Binance 429 (`status=418` is its IP ban), Gate 429, Bybit HTTP
  200 with retCode 10006 (`status=403` is its gateway's bare "access too frequent");
* `server_error` (`status` 500..599, default 503; `body=gateway` HTML page, or `native` JSON);
* `delay` (`seconds`): answer normally, that much later (a client timeout fires first);
* `truncate` (`cut`): half the body is sent, then the connection is closed although the
  `Content-Length` promised more (`cut=connection`, default; ccxt raises ExchangeError); or a
  complete HTTP answer whose JSON is cut in half (`cut=body`; ccxt does not raise: it hands the
  unparsable text to its parsers, which yield `[]` or `None` fields);
* `drop_field` (`field`): that key removed from every record, or, in positional records
  (klines), that column (a name from the exchange's kline layout, or an index) removed;
* `add_field` (`field`, `value`): an unknown key added to every record (appended to
  positional ones).

Every fault applies to the next `count` matching requests (default 1; `count=always` for
all), after letting the first `after` matching requests through (default 0). Matching is by
request order, so a plan is deterministic. A request can get one delay, then either one
replacing answer (rate_limit/server_error, the first in plan order) or its normal answer with
every body fault applied in plan order (truncation last). A fault is used up only by the
requests it changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import orjson

FaultKind = Literal["rate_limit", "server_error", "delay", "truncate", "drop_field", "add_field"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
REPLACING: frozenset[str] = frozenset({"rate_limit", "server_error"})
BODY_FAULTS: frozenset[str] = frozenset({"truncate", "drop_field", "add_field"})
_OPTIONS = frozenset({"count", "after", "status", "retry_after", "seconds", "field", "value", "body", "cut"})


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    endpoint: str = "*"
    count: int | None = 1  # None: every matching request
    after: int = 0
    status: int | None = None
    retry_after: float = 1.0
    seconds: float = 0.0
    field: str | None = None
    value: object = "unexpected"
    body: Literal["gateway", "native"] = "gateway"
    cut: Literal["connection", "body"] = "connection"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; choose from {', '.join(FAULT_KINDS)}")
        if not self.endpoint:
            raise ValueError("a fault needs an endpoint ('*' for every endpoint)")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or 'always')")
        if self.after < 0:
            raise ValueError("after must not be negative")
        if self.retry_after < 0 or not math.isfinite(self.retry_after):
            raise ValueError("retry_after must be a non-negative number of seconds")
        if self.kind == "server_error" and self.status is not None and not 500 <= self.status <= 599:
            raise ValueError("server_error status must be 500..599")
        if self.kind == "rate_limit" and self.status is not None and not 200 <= self.status <= 599:
            raise ValueError("rate_limit status must be an HTTP status")
        if self.kind == "delay" and not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError("delay needs seconds > 0")
        if self.kind in ("drop_field", "add_field") and not self.field:
            raise ValueError(f"{self.kind} needs a field")
        if self.body not in ("gateway", "native"):
            raise ValueError("body must be gateway or native")
        if self.cut not in ("connection", "body"):
            raise ValueError("cut must be connection or body")

    def matches(self, exchange: str, dataset: str, path: str) -> bool:
        target = self.endpoint
        if target.startswith("/"):
            return target == path
        if target == "*":
            return True
        if "." in target:
            venue, _, name = target.partition(".")
            return venue == exchange and name in ("*", dataset)
        return target == dataset

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["count"] = "always" if self.count is None else self.count
        return data


def parse_fault_spec(spec: str) -> Fault:
    """The command-line form `KIND:ENDPOINT[:OPTION=VALUE,...]`."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ValueError(f"expected KIND:ENDPOINT[:OPTION=VALUE,...], got {spec!r}")
    endpoint, _, options = rest.partition(":")
    values: dict[str, object] = {"kind": kind, "endpoint": endpoint}
    for item in filter(None, options.split(",")):
        name, eq, text = item.partition("=")
        if not eq:
            raise ValueError(f"expected OPTION=VALUE in {spec!r}, got {item!r}")
        values[name.strip()] = _option_value(text.strip())
    return fault_from_json(values)


def fault_from_json(data: Mapping[str, object]) -> Fault:
    unknown = set(data) - _OPTIONS - {"kind", "endpoint"}
    if unknown:
        raise ValueError(f"unknown fault option(s): {', '.join(sorted(unknown))}")
    kind = data.get("kind")
    known_kind = next((k for k in FAULT_KINDS if k == kind), None)
    if known_kind is None:
        raise ValueError(f"unknown fault kind {kind!r}; choose from {', '.join(FAULT_KINDS)}")
    count = data.get("count", 1)
    body = data.get("body", "gateway")
    if body not in ("gateway", "native"):
        raise ValueError("body must be gateway or native")
    cut = data.get("cut", "connection")
    if cut not in ("connection", "body"):
        raise ValueError("cut must be connection or body")
    try:
        return Fault(
            kind=known_kind,
            endpoint=str(data.get("endpoint", "*")),
            count=None if count in ("always", None) else _int(count, "count"),
            after=_int(data.get("after", 0), "after"),
            status=None if data.get("status") is None else _int(data["status"], "status"),
            retry_after=_float(data.get("retry_after", 1.0), "retry_after"),
            seconds=_float(data.get("seconds", 0.0), "seconds"),
            field=None if data.get("field") is None else str(data["field"]),
            value=data.get("value", "unexpected"),
            body="native" if body == "native" else "gateway",
            cut="body" if cut == "body" else "connection",
        )
    except TypeError as error:
        raise ValueError(str(error)) from None


def faults_from_json(data: object) -> list[Fault]:
    """A fault object, a list of them, or `{"faults": [...]}`."""
    if isinstance(data, Mapping) and "faults" in data:
        data = data["faults"]
    if isinstance(data, Mapping):
        return [fault_from_json(data)]
    if isinstance(data, list) and all(isinstance(item, Mapping) for item in data):
        return [fault_from_json(item) for item in data]
    raise ValueError('expected a fault object, a list of them, or {"faults": [...]}')


def load_fault_file(path: Path) -> list[Fault]:
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as error:
        raise ValueError(f"cannot read fault plan {path}: {error.strerror}") from None
    except orjson.JSONDecodeError as error:
        raise ValueError(f"fault plan {path} is not JSON: {error}") from None
    try:
        return faults_from_json(data)
    except ValueError as error:
        raise ValueError(f"fault plan {path}: {error}") from None


@dataclass(slots=True)
class _Active:
    fault: Fault
    seen: int = 0
    served: int = 0

    @property
    def exhausted(self) -> bool:
        return self.fault.count is not None and self.served >= self.fault.count


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do to one request."""

    delay: Fault | None = None
    replace: Fault | None = None
    body: tuple[Fault, ...] = field(default_factory=tuple)

    @property
    def applied(self) -> tuple[Fault, ...]:
        chosen = [self.delay, self.replace] if self.replace is not None else [self.delay, *self.body]
        return tuple(fault for fault in chosen if fault is not None)


class FaultPlan:
    """The faults in force and their counters. Used from one event loop only."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._active: list[_Active] = [_Active(fault) for fault in faults]

    def add(self, faults: Iterable[Fault]) -> None:
        self._active.extend(_Active(fault) for fault in faults)

    def clear(self) -> None:
        self._active.clear()

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {
                **entry.fault.to_json(),
                "seen": entry.seen,
                "served": entry.served,
                "remaining": "always" if entry.fault.count is None else entry.fault.count - entry.served,
            }
            for entry in self._active
        ]

    def decide(self, exchange: str, dataset: str, path: str) -> Decision:
        due: list[_Active] = []
        for entry in self._active:
            if entry.exhausted or not entry.fault.matches(exchange, dataset, path):
                continue
            entry.seen += 1
            if entry.seen > entry.fault.after:
                due.append(entry)
        delay = next((e for e in due if e.fault.kind == "delay"), None)
        replacing = next((e for e in due if e.fault.kind in REPLACING), None)
        body = [] if replacing is not None else [e for e in due if e.fault.kind in BODY_FAULTS]
        body.sort(key=lambda e: e.fault.kind == "truncate")  # stable: truncation last
        for used in (delay, replacing, *body):
            if used is not None:
                used.served += 1
        return Decision(
            delay=None if delay is None else delay.fault,
            replace=None if replacing is None else replacing.fault,
            body=tuple(used.fault for used in body),
        )


def mutate_records(records: Sequence[object], fault: Fault, row_fields: Sequence[str]) -> None:
    """Apply a drop_field/add_field fault in place to dict records and positional rows."""
    name = fault.field or ""
    for record in records:
        if isinstance(record, dict):
            if fault.kind == "drop_field":
                record.pop(name, None)
            else:
                record[name] = fault.value
        elif isinstance(record, list):
            if fault.kind == "add_field":
                record.append(fault.value)
                continue
            index = row_fields.index(name) if name in row_fields else int(name) if name.isdigit() else None
            if index is not None and index < len(record):
                del record[index]


def _option_value(text: str) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{name} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
