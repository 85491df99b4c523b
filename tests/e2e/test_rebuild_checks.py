"""The rebuild's own decisions, without servers: which objects the lake-writer wrote, in which order
a market's objects are rebuilt, how markets are dealt to processes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import zstandard
from cryptoflow_cli.rebuild import BronzeKey, Refused, plan, shares, verified_snapshots
from cryptoflow_contracts import Dataset, RawSnapshot
from cryptoflow_lake_writer import build_objects
from cryptoflow_runtime.lake import sha256_hex

T0 = 1_704_067_200_000
MINUTE = 60_000


def page(first: int, count: int = 3, symbol: str = "BTC/USDT", fetched_s: int = 0) -> RawSnapshot:
    candles = [[first + i * MINUTE, 1.0, 2.0, 0.5, 1.5, 10.0] for i in range(count)]
    return RawSnapshot(
        dataset=Dataset.OHLCV,
        exchange="binance",
        symbol=symbol,
        timeframe="1m",
        fetched_at=datetime.fromtimestamp(fetched_s, UTC),
        payload=candles,
        first_ts=first,
        last_ts=candles[-1][0],
    )


def named(lines: list[bytes], first: int = T0) -> tuple[BronzeKey, bytes]:
    """NDJSON under the key the lake-writer would give it (digest of the content)."""
    ndjson = b"".join(lines)
    key = f"bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-01-01/{first}-{sha256_hex(ndjson)[:24]}.ndjson.zst"
    parsed = BronzeKey.parse(key)
    assert parsed is not None
    return parsed, zstandard.ZstdCompressor().compress(ndjson)


def test_an_object_of_the_lake_writer_is_accepted_whatever_its_compression() -> None:
    (obj,) = build_objects([page(T0 + 3 * MINUTE), page(T0)])
    bronze = BronzeKey.parse(obj.key)
    assert bronze is not None and bronze.first_ts == T0
    snapshots = verified_snapshots(bronze, obj.data)
    assert [s.first_ts for s in snapshots] == [T0, T0 + 3 * MINUTE]
    ndjson = zstandard.ZstdDecompressor().decompress(obj.data)
    assert verified_snapshots(bronze, zstandard.ZstdCompressor(level=19).compress(ndjson)) == snapshots


@pytest.mark.parametrize(
    ("lines", "check"),
    [
        ([page(T0 + 3 * MINUTE).to_json() + b"\n", page(T0).to_json() + b"\n"], "not_lake_writer_object"),  # order
        ([page(T0).to_json() + b"\n"] * 2, "not_lake_writer_object"),  # one event twice
        ([page(T0, symbol="ETH/USDT").to_json() + b"\n"], "not_lake_writer_object"),  # another partition
        ([b'{"dataset": "ohlcv"}\n'], "not_raw_snapshots"),
        ([b"not json\n"], "not_raw_snapshots"),
        ([b"\n"], "not_raw_snapshots"),
    ],
)
def test_content_the_lake_writer_does_not_write_is_refused(lines: list[bytes], check: str) -> None:
    bronze, data = named(lines)
    with pytest.raises(Refused) as refused:
        verified_snapshots(bronze, data)
    assert refused.value.check == check


def test_a_name_that_is_not_the_content_digest_or_first_time_is_refused() -> None:
    line = page(T0).to_json() + b"\n"
    bronze, data = named([line])
    other = BronzeKey.parse(bronze.key.replace(bronze.digest, "0" * 24))
    assert other is not None
    with pytest.raises(Refused, match="its name says sha256") as refused:
        verified_snapshots(other, data)
    assert refused.value.check == "name_not_content"
    later, data = named([line], first=T0 + MINUTE)
    with pytest.raises(Refused, match="earliest snapshot starts at"):
        verified_snapshots(later, data)
    with pytest.raises(Refused) as refused:
        verified_snapshots(bronze, b"plain bytes")
    assert refused.value.check == "not_zstd"


def test_markets_are_rebuilt_in_time_order_and_strays_set_apart() -> None:
    partition = "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-01-01"
    keys = [
        f"{partition}/{T0 + 2 * MINUTE}-{'b' * 24}.ndjson.zst",
        f"{partition}/{T0 + 10 * MINUTE}-{'a' * 24}.ndjson.zst",
        f"{partition}/{T0}-{'c' * 24}.ndjson.zst",
        "bronze/ticker/exchange=binance/symbol=BTC-USDT/date=2024-01-01/5-" + "d" * 24 + ".ndjson.zst",
        f"{partition}/notes.txt",
        f"{partition}/{T0}-{'C' * 24}.ndjson.zst",  # not a sha256 (upper case)
    ]
    groups, strays = plan(keys)
    assert [[b.first_ts for b in group] for group in groups] == [[T0, T0 + 2 * MINUTE, T0 + 10 * MINUTE], [5]]
    assert strays == [f"{partition}/notes.txt", f"{partition}/{T0}-{'C' * 24}.ndjson.zst"]


def test_markets_are_dealt_to_processes_by_size() -> None:
    def market(n: int, name: str) -> list[BronzeKey]:
        key = f"bronze/ohlcv/exchange=binance/symbol={name}/date=2024-01-01/{{}}-{'a' * 24}.ndjson.zst"
        return [b for i in range(n) if (b := BronzeKey.parse(key.format(i))) is not None]

    groups = [market(n, f"S{n}-USDT") for n in (10, 6, 5, 1)]
    dealt = shares(groups, 2)
    assert sorted(sum(len(g) for g in share) for share in dealt) == [11, 11]
    assert shares(groups[:1], 4) == [[groups[0]]]  # never more processes than markets
