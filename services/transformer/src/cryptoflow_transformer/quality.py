"""Row checks: the first failed check names a row's one reject reason; good rows and rejects apart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

# (condition that marks a row bad, reason); evaluated in order, the first true one wins.
Check = tuple[pl.Expr, str]


def first_failure(checks: Sequence[Check]) -> pl.Expr:
    """The reason of the first check a row fails, or null when it passes all of them.

    A check whose condition is null (a compared value missing) does not fire: a check for
    missing values earlier in the list catches those rows with their own reason.
    """
    expr: Any = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    for condition, reason in checks[1:]:
        expr = expr.when(condition).then(pl.lit(reason))
    result: pl.Expr = expr.otherwise(pl.lit(None, dtype=pl.String))
    return result


def unparsable(raw: str, parsed: str) -> pl.Expr:
    """A value was given but is not a number (read as text, the cast gave null)."""
    return pl.col(raw).is_not_null() & pl.col(parsed).is_null()


def non_finite(columns: Sequence[str]) -> pl.Expr:
    """A value parsed as NaN or ±inf ("NaN", "inf" are valid float text): no check can judge it."""
    return pl.any_horizontal((~pl.col(c).is_finite()).fill_null(False) for c in columns)


def check_code(reason: str) -> str:
    """`malformed_row: expected …` → `malformed_row`: the stable name a check is counted under."""
    return reason.split(":", 1)[0]


@dataclass(frozen=True)
class CheckedRows:
    """One bronze object's rows, checked: silver rows, quarantined rows (+ `reason`), duplicates dropped."""

    good: pl.DataFrame
    rejected: pl.DataFrame
    duplicates: int = 0

    @property
    def input_rows(self) -> int:
        return self.good.height + self.rejected.height

    @property
    def quality_score(self) -> float:
        """Share of rows that passed every check (duplicates of a good row are not counted twice)."""
        return self.good.height / self.input_rows if self.input_rows else 1.0

    @property
    def reasons(self) -> dict[str, int]:
        """Quarantined rows per full reason text."""
        if not self.rejected.height:
            return {}
        counts = self.rejected.group_by("reason").len().sort("reason")
        return {str(reason): int(n) for reason, n in counts.iter_rows()}

    @property
    def check_failures(self) -> dict[str, int]:
        """Quarantined rows per check (the reason's code), as BatchReady.check_failures reports them."""
        failures: dict[str, int] = {}
        for reason, count in self.reasons.items():
            failures[check_code(reason)] = failures.get(check_code(reason), 0) + count
        return failures


def split_rows(checked: pl.DataFrame, columns: Sequence[pl.Expr], key: Sequence[str], schema: pl.Schema) -> CheckedRows:
    """Rows with a null `reason` → silver (deduplicated by key, the later row wins); the rest → quarantine.

    The usual object (rows already in fetch order, each key once, in key order) skips the sorts
    and the dedupe, which would return it unchanged.
    """
    passed = pl.col("reason").is_null()
    rejects = checked.height - checked["reason"].null_count()
    good = checked.filter(passed) if rejects else checked
    if not _ascending(good["fetched"]):
        good = good.sort("fetched", nulls_last=False, maintain_order=True)
    good = good.select(columns)
    # In fetch order (stable): of two copies of a key, the later one was fetched last.
    deduped = good
    if not _strictly_ascending(good, key):
        deduped = good.unique(subset=list(key), keep="last", maintain_order=True).sort(list(key))
    if deduped.schema != schema:
        deduped = deduped.cast(schema)
    if rejects:
        rejected = checked.filter(~passed).select([*columns, pl.col("reason")])
    else:
        rejected = good.clear().hstack([pl.Series("reason", [], dtype=pl.String)])
    return CheckedRows(good=deduped, rejected=rejected, duplicates=good.height - deduped.height)


def _ascending(column: pl.Series) -> bool:
    """No nulls and never decreasing: a stable sort would leave it as it is."""
    return column.null_count() == 0 and column.is_sorted()


def _strictly_ascending(rows: pl.DataFrame, key: Sequence[str]) -> bool:
    """Every row's key above the previous one's (no nulls): unique by key and sorted by it already."""
    if rows.height < 2:
        return True
    if any(rows[name].null_count() for name in key):
        return False
    # Lexicographic, from the last key column out: above on this column, or equal and above on the rest.
    above: pl.Series | None = None
    for name in reversed(key):
        column = rows[name]
        current, previous = column.slice(1), column.slice(0, rows.height - 1)
        above = current > previous if above is None else (current > previous) | ((current == previous) & above)
    return bool(above is not None and above.all())
