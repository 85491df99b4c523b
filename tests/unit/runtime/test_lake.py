"""The lake contract, run against every implementation: FileLake, S3Lake, S3Lake under a key prefix."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptoflow_runtime.lake import FileLake, Lake, ObjectConflictError, S3Lake, open_lake

S3_PREFIX = "some/prefix"

KEYS = {
    "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/1-a.ndjson.zst": b"btc day 1",
    "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-02/2-b.ndjson.zst": b"btc day 2",
    "bronze/ohlcv/exchange=binance/symbol=ETH-USDT/date=2024-06-01/1-c.ndjson.zst": b"eth",
    "silver/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-01/1-a.parquet": b"PAR1...",
    "quarantine/x.parquet": b"\x00\xff binary",
}


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(params=["file", "s3", "s3-prefix"])
def lake_location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """(lake URL, S3 endpoint) of an empty lake of the parametrized kind."""
    if request.param == "file":
        return f"file://{tmp_path / 'lake'}", None
    request.getfixturevalue("s3_credentials")
    endpoint: str = request.getfixturevalue("s3_endpoint_url")
    bucket: str = request.getfixturevalue("s3_bucket")
    if request.param == "s3":
        return f"s3://{bucket}", endpoint
    return f"s3://{bucket}/{S3_PREFIX}", endpoint


@pytest.fixture
async def lake(lake_location: tuple[str, str | None]) -> AsyncIterator[Lake]:
    url, endpoint = lake_location
    opened = await open_lake(url, endpoint)
    try:
        yield opened
    finally:
        await opened.close()


async def test_put_then_get(lake: Lake, lake_location: tuple[str, str | None]) -> None:
    url, _ = lake_location
    assert isinstance(lake, FileLake if url.startswith("file://") else S3Lake)
    assert lake.url == url.rstrip("/")
    for key, data in KEYS.items():
        await lake.put(key, data)
    for key, data in KEYS.items():
        assert await lake.get(key) == data
    await lake.put("empty", b"")
    assert await lake.get("empty") == b""
    with pytest.raises(ObjectConflictError):
        await lake.put("empty", b"x")


async def test_put_same_bytes_again_is_a_no_op(lake: Lake) -> None:
    key, data = "bronze/a/obj.bin", b"same bytes"
    await lake.put(key, data)
    await lake.put(key, data)
    await lake.put(key, bytes(data))  # an equal but distinct object
    assert await lake.get(key) == data
    assert await lake.list("") == [key]


async def test_put_different_bytes_raises_and_keeps_the_original(lake: Lake) -> None:
    key = "bronze/a/obj.bin"
    await lake.put(key, b"original")
    with pytest.raises(ObjectConflictError) as excinfo:
        await lake.put(key, b"changed")
    assert excinfo.value.key == key
    assert key in str(excinfo.value)
    assert await lake.get(key) == b"original"
    # A same-length change is a conflict too (not a size check).
    with pytest.raises(ObjectConflictError):
        await lake.put(key, b"ORIGINAL")
    assert await lake.get(key) == b"original"


async def test_exists_and_missing_keys(lake: Lake) -> None:
    assert not await lake.exists("bronze/a/obj.bin")
    with pytest.raises(FileNotFoundError):
        await lake.get("bronze/nothing/here")
    await lake.put("bronze/a/obj.bin", b"x")
    assert await lake.exists("bronze/a/obj.bin")
    assert not await lake.exists("bronze/a/other.bin")
    assert not await lake.exists("bronze/a/obj.bi")
    with pytest.raises(FileNotFoundError):
        await lake.get("bronze/a/obj.bin2")


async def test_list_returns_exactly_the_keys_under_a_prefix(lake: Lake) -> None:
    assert await lake.list("") == []
    # Put in reverse order, so a sorted answer cannot come from insertion order.
    for key in sorted(KEYS, reverse=True):
        await lake.put(key, KEYS[key])

    def expected(prefix: str) -> list[str]:
        return sorted(k for k in KEYS if k.startswith(prefix))

    for prefix in [
        "",
        "bronze/",
        "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/",
        "bronze/ohlcv/exchange=binance/symbol=BTC-USDT/date=2024-06-02/",
        "silver/",
        "quarantine/",
        "gold/",
    ]:
        assert await lake.list(prefix) == expected(prefix), prefix
    assert len(await lake.list("")) == len(KEYS)


async def test_keys_are_relative_to_the_lake_root(lake: Lake, lake_location: tuple[str, str | None]) -> None:
    """Where the objects physically are: under the directory, the bucket, or the bucket's prefix."""
    url, endpoint = lake_location
    await lake.put("bronze/a/obj.bin", b"x")
    if url.startswith("file://"):
        assert (Path(url.removeprefix("file://")) / "bronze/a/obj.bin").read_bytes() == b"x"
        return
    bucket = url.removeprefix("s3://").split("/")[0]
    root = await open_lake(f"s3://{bucket}", endpoint)
    try:
        full = f"{S3_PREFIX}/bronze/a/obj.bin" if url.endswith(S3_PREFIX) else "bronze/a/obj.bin"
        assert await root.list("") == [full]
        assert await root.get(full) == b"x"
    finally:
        await root.close()


async def test_prefixed_s3_lake_does_not_see_neighbours(
    s3_credentials: None, s3_endpoint_url: str, s3_bucket: str
) -> None:
    root = await open_lake(f"s3://{s3_bucket}", s3_endpoint_url)
    prefixed = await open_lake(f"s3://{s3_bucket}/{S3_PREFIX}/", s3_endpoint_url)
    try:
        await root.put("outside.bin", b"o")
        await root.put(f"{S3_PREFIX}x/sibling.bin", b"s")  # shares the prefix string, not the folder
        await prefixed.put("inside.bin", b"i")
        assert await prefixed.list("") == ["inside.bin"]
        assert not await prefixed.exists("outside.bin")
        with pytest.raises(FileNotFoundError):
            await prefixed.get("outside.bin")
        assert await root.list("") == sorted(["outside.bin", f"{S3_PREFIX}x/sibling.bin", f"{S3_PREFIX}/inside.bin"])
    finally:
        await prefixed.close()
        await root.close()


# --- FileLake specifics -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", "."])
async def test_file_lake_refuses_keys_outside_its_root(tmp_path: Path, key: str) -> None:
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    with pytest.raises(ValueError):
        await lake.put(key, b"x")
    with pytest.raises(ValueError):
        await lake.get(key)
    with pytest.raises(ValueError):
        await lake.exists(key)
    assert not (tmp_path / "x").exists()


async def test_file_lake_leaves_no_temporary_files(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    lake = FileLake(f"file://{root}")
    await lake.put("a/b.bin", b"1")
    with pytest.raises(ObjectConflictError):
        await lake.put("a/b.bin", b"2")
    await lake.put("a/b.bin", b"1")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == ["a/b.bin"]


async def test_file_lake_folder_is_not_an_object(tmp_path: Path) -> None:
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    await lake.put("bronze/a/obj.bin", b"x")
    assert not await lake.exists("bronze/a")
    with pytest.raises(FileNotFoundError):
        await lake.get("bronze/a")


async def test_file_lake_two_writers_of_one_key_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """put() runs in a worker thread (asyncio.to_thread), so two puts of one key can interleave.

    The interleaving is made deterministic: the second writer runs its whole put between the first
    writer's fsync and its link(). Writing the same bytes twice must still be a no-op.
    """
    lake = FileLake(f"file://{tmp_path / 'lake'}")
    real_link = os.link
    interleaved: list[bool] = []

    def link_after_another_writer(src: str, dst: str) -> None:
        if not interleaved:
            interleaved.append(True)
            asyncio.run(lake.put("a/obj.bin", b"payload"))  # the other writer, start to finish
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_another_writer)
    await lake.put("a/obj.bin", b"payload")
    assert interleaved == [True]
    assert await lake.get("a/obj.bin") == b"payload"


# --- S3Lake specifics ---------------------------------------------------------------------------


async def test_s3_lake_conflicting_writer_between_check_and_put(
    s3_credentials: None, s3_endpoint_url: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas writing one key: the second one's whole put lands just before the first one's PUT.

    S3Lake writes with If-None-Match: *, so the store itself refuses the later PUT: there is no
    window between a check and the write in which different bytes could slip in.
    """
    first = await open_lake(f"s3://{s3_bucket}", s3_endpoint_url)
    second = await open_lake(f"s3://{s3_bucket}", s3_endpoint_url)
    assert isinstance(first, S3Lake)
    assert await first.supports_conditional_writes()  # moto honours If-None-Match
    client = await first._s3()
    real_put = client.put_object

    async def let_the_other_writer_in_first(**kwargs: object) -> object:
        await second.put("k.bin", b"second writer")
        return await real_put(**kwargs)

    monkeypatch.setattr(client, "put_object", let_the_other_writer_in_first)
    try:
        with pytest.raises(ObjectConflictError):
            await first.put("k.bin", b"first writer")
        assert await second.get("k.bin") == b"second writer"
    finally:
        await first.close()
        await second.close()
