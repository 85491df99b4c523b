"""One exchange as the jobs see it: calls with resilience, drift checks, validation, dead letters."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, NoReturn, TypeVar

import ccxt.async_support as ccxt
from cryptoflow_contracts import (
    Dataset,
    DeadLetter,
    KnownGap,
    LiveUpdate,
    NativeCall,
    RawSnapshot,
    SchemaDrift,
    Stage,
)
from cryptoflow_native import complete
from pydantic import ValidationError

from .drift import DriftDetector
from .metrics import DRIFT_EVENTS, PAGES_DEAD_LETTERED
from .native import UnifiedCall, unified_call
from .profiles import profile
from .resilience import ExchangeCaller

log = logging.getLogger(__name__)

ParsedT = TypeVar("ParsedT")


class BadPageError(Exception):
    """A response failed validation or drifted; it was dead-lettered and will be fetched again."""


@dataclass(frozen=True)
class Publisher:
    """Where jobs send what they produce (JetStream in the service, lists in unit tests)."""

    snapshot: Callable[[RawSnapshot], Awaitable[None]]
    dead_letter: Callable[[DeadLetter], Awaitable[None]]
    gap: Callable[[KnownGap], Awaitable[None]]
    drift: Callable[[SchemaDrift], Awaitable[None]]
    live: Callable[[LiveUpdate], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Page(Generic[ParsedT]):
    """One checked answer: ccxt's result exactly as returned, and the typed view of it."""

    result: Any  # what is published (RawSnapshot.payload): never rebuilt from `parsed`
    parsed: ParsedT  # what the job reasons with (validation.py models)
    native: NativeCall  # what the exchange sent for it (RawSnapshot.native)


def describe_invalid(exc: Exception) -> str:
    """One line naming where a payload is wrong: `[3][0]: Input should be a valid integer`."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        first = errors[0]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{where or 'payload'}: {first['msg']}{more}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class ExchangeSession:
    def __init__(
        self,
        exchange_id: str,
        exchange: ccxt.Exchange,
        caller: ExchangeCaller,
        publisher: Publisher,
        drift: DriftDetector | None = None,
        base_url: str | None = None,
    ) -> None:
        self.exchange_id = exchange_id
        # The simulator's (or a proxy's) URL the REST instance was rehosted to; None: the exchange.
        self.base_url = base_url
        self.exchange = exchange
        self.caller = caller
        self.publisher = publisher
        self.drift = drift or DriftDetector()

    async def fetch(
        self,
        dataset: Dataset,
        symbol: str,
        call: UnifiedCall,
        validate: Callable[[Any], ParsedT],
        endpoint: str = "",
    ) -> Page[ParsedT]:
        """Call the exchange, check the answer (drift, structure), dead-letter it when bad.

        Raises BadPageError after dead-lettering; otherwise the result, its typed view and what
        the exchange sent for it. `endpoint` names a call whose responses have another shape than
        the dataset's usual one (Binance's trades by id: `historicalTrades`, not `aggTrades`):
        its drift is checked against a baseline of its own.
        """
        options = profile(self.exchange_id).load_options

        def request() -> Awaitable[tuple[Any, NativeCall]]:
            return unified_call(self.exchange, call, symbol, options)

        fetched = await self.caller.call(dataset.value, request)
        result, native = fetched.result
        # Completed where ccxt leaves a gap, as the replay of `native` completes it.
        result = complete(self.exchange_id, call.method, result)
        if fetched.raw_json is None and fetched.raw_text:
            # ccxt turns a body that is not JSON (cut short, an HTML error page) into empty results.
            await self._dead_letter(dataset, symbol, "response is not valid JSON", "BadResponse", fetched.raw_text)
        drift = self.drift.check(
            self.exchange_id, f"{dataset.value}/{endpoint}" if endpoint else dataset.value, fetched.raw_json
        )
        if drift:
            await self._report_drift(dataset, symbol, drift.appeared, drift.vanished, drift.changed, drift.breaking)
            if drift.breaking:
                await self._dead_letter(
                    dataset, symbol, f"schema drift: {drift.describe()}", "SchemaDrift", fetched.raw_text
                )
        try:
            parsed = validate(result)
        except (ValidationError, ValueError, TypeError) as exc:
            await self._dead_letter(
                dataset,
                symbol,
                f"invalid {dataset.value} payload: {describe_invalid(exc)}",
                type(exc).__name__,
                fetched.raw_text,
            )
        return Page(result, parsed, native)

    async def _report_drift(
        self,
        dataset: Dataset,
        symbol: str,
        appeared: dict[str, str],
        vanished: dict[str, str],
        changed: dict[str, tuple[str, str]],
        breaking: bool,
    ) -> None:
        for change, fields in (("appeared", appeared), ("vanished", vanished), ("changed", changed)):
            if fields:
                DRIFT_EVENTS.labels(self.exchange_id, dataset.value, change).inc(len(fields))
        event = SchemaDrift(
            exchange=self.exchange_id,
            dataset=dataset,
            symbol=symbol,
            appeared=appeared,
            vanished=vanished,
            changed=changed,
            breaking=breaking,
            detected_at=datetime.now(UTC),
        )
        log.warning(
            "schema drift", extra={"exchange": self.exchange_id, "dataset": dataset.value, "breaking": breaking}
        )
        await self.publisher.drift(event)

    async def _dead_letter(
        self, dataset: Dataset, symbol: str, reason: str, error_type: str, raw_text: str | None
    ) -> NoReturn:
        PAGES_DEAD_LETTERED.labels(self.exchange_id, dataset.value, error_type).inc()
        await self.publisher.dead_letter(
            DeadLetter(
                stage=Stage.EXTRACTOR,
                dataset=dataset,
                reason=reason,
                error_type=error_type,
                payload=raw_text,
                details={"exchange": self.exchange_id, "symbol": symbol},
            )
        )
        raise BadPageError(reason)
