"""Warehouse tables as the loader sees them, derived from the silver tables (contracts silver.py).

Every silver table lands in a warehouse table `<name>_data` with the silver columns, except the
series' names (exchange, symbol, timeframe), plus `series_id` (the row's series in `series`)
and bookkeeping (`batch_no`, `loaded_at`, `version`). Readers use the view `<name>`, which joins
the names and the batch id back (decision 0026). What the loader needs to build its SQL — the
conflict key, the columns whose change makes an update, the series a row belongs to — follows
from silver.py by the rules below, so a new silver table needs a migration, not new loader code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from cryptoflow_contracts import SILVER_TABLES
from cryptoflow_contracts.silver import ColumnType, SilverTable

# Columns the warehouse adds to every silver table.
SERIES_ID = "series_id"  # series.series_id of the row's table·exchange·symbol·timeframe: the key's head
BATCH_ID = "batch_id"  # the silver batch (BatchReady event_id) that last changed the row: in the view
BATCH_NO = "batch_no"  # ...stored as that batch's batches.batch_no
LOADED_AT = "loaded_at"  # when that happened
VERSION = "version"  # 1 on insert, +1 per update: tells inserts from updates in RETURNING

# Lineage and change flags, not values: a newer batch carrying the same values is not a change.
NOT_VALUES = frozenset({"source_event_id"})
# A row with final = true is not overwritten by one with final = false (an in-progress candle
# fetched earlier but loaded later must not replace the closed candle).
FINAL = "final"
RESAMPLED = "resampled"
SERIES_COLUMNS = ("exchange", "symbol", "timeframe")
TS = "ts"

PG_TYPES: dict[ColumnType, str] = {
    ColumnType.TEXT: "text",
    ColumnType.INT: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.BOOL: "boolean",
    ColumnType.TIMESTAMP: "timestamptz",
}


@dataclass(frozen=True)
class WarehouseTable:
    silver: SilverTable

    @property
    def name(self) -> str:
        return self.silver.name

    @property
    def silver_columns(self) -> list[str]:
        return self.silver.column_names

    @property
    def storage(self) -> str:
        """The table the rows are stored in; `name` is the view readers use."""
        return f"{self.name}_data"

    @property
    def stored_silver_columns(self) -> list[tuple[str, ColumnType]]:
        """The silver columns the storage table has: all but the series' names."""
        return [(c, kind) for c, kind in self.silver.columns if c not in SERIES_COLUMNS]

    @property
    def load_columns(self) -> list[str]:
        """What the loader writes: the stored silver columns, the series id and the batch number."""
        return [name for name, _ in self.load_column_types]

    @property
    def load_column_types(self) -> list[tuple[str, ColumnType]]:
        return [*self.stored_silver_columns, (SERIES_ID, ColumnType.INT), (BATCH_NO, ColumnType.INT)]

    @property
    def natural_key(self) -> tuple[str, ...]:
        """Silver's natural key, plus `ts` when the key lacks it.

        Tables are range-partitioned on `ts`, and PostgreSQL enforces uniqueness only per
        partition unless the partition column is part of the key (decision 0021).
        """
        key = self.silver.key
        return key if TS in key else (*key, TS)

    @property
    def conflict_key(self) -> tuple[str, ...]:
        """The primary key: the natural key with its series columns replaced by `series_id`, `ts` next.

        One series id stands for exchange·symbol[·timeframe], so the key is as unique as the
        natural one and half as costly to maintain on insert (decision 0026). `ts` right after it
        makes every per-series time range one index range scan, and new rows land at the end of
        their series (trade ids are text: their order is not time order).
        """
        rest = (c for c in self.natural_key if c not in SERIES_COLUMNS and c != TS)
        return (SERIES_ID, TS, *rest)

    @property
    def value_columns(self) -> list[str]:
        """Columns whose change turns a conflicting row into an update."""
        return [c for c in self.update_columns if c not in NOT_VALUES]

    @property
    def update_columns(self) -> list[str]:
        """Columns an update rewrites: values and lineage (never the key or the series' names)."""
        return [c for c in self.silver_columns if c not in self.natural_key and c not in SERIES_COLUMNS]

    @property
    def has_final(self) -> bool:
        return FINAL in self.silver_columns

    @property
    def has_resampled(self) -> bool:
        return RESAMPLED in self.silver_columns

    @property
    def series_columns(self) -> list[str]:
        """The columns naming a series (exchange·symbol[·timeframe]) in this table."""
        return [c for c in SERIES_COLUMNS if c in self.silver_columns]


class _Tables(Mapping[str, WarehouseTable]):
    """Every registered silver table as a warehouse table, read when asked: a table registered
    after import (a new dataset's) is known too."""

    def __getitem__(self, name: str) -> WarehouseTable:
        return WarehouseTable(SILVER_TABLES[name])

    def __iter__(self) -> Iterator[str]:
        return iter(list(SILVER_TABLES))

    def __len__(self) -> int:
        return len(SILVER_TABLES)


TABLES: Mapping[str, WarehouseTable] = _Tables()


def warehouse_table(name: str) -> WarehouseTable:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no warehouse table {name!r} (known: {', '.join(TABLES)})") from None
