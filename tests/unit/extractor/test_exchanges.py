"""create_exchange: a base URL replaces the API host of every endpoint, paths stay the exchange's."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from cryptoflow_extractor.exchanges import create_exchange


def flatten(urls: object, prefix: str = "") -> dict[str, str]:
    """{dotted path: url} of every string in a (possibly nested) urls['api'] tree."""
    if isinstance(urls, str):
        return {prefix: urls}
    assert isinstance(urls, dict), type(urls)
    out: dict[str, str] = {}
    for key, value in urls.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


async def test_without_base_url_the_live_endpoints_stay() -> None:
    exchange = create_exchange("binance", None, timeout_ms=1234)
    try:
        assert exchange.id == "binance"
        assert exchange.timeout == 1234
        hosts = {urlsplit(url).hostname for url in flatten(exchange.urls["api"]).values()}
        assert all(host and host.endswith("binance.com") for host in hosts), hosts
    finally:
        await exchange.close()


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:18080", "http://127.0.0.1:18080/", "https://sim.local:8443"])
async def test_every_api_url_is_rehosted_keeping_its_path(base_url: str) -> None:
    live = create_exchange("binance", None)
    sim = create_exchange("binance", base_url)
    try:
        live_urls, sim_urls = flatten(live.urls["api"]), flatten(sim.urls["api"])
        assert sim_urls.keys() == live_urls.keys()
        assert len(sim_urls) > 5  # binance has many API families (public, sapi, fapi...)
        base = urlsplit(base_url)
        for name, original in live_urls.items():
            rewritten = urlsplit(sim_urls[name])
            source = urlsplit(original)
            assert (rewritten.scheme, rewritten.netloc) == (base.scheme, base.netloc), name
            assert (rewritten.path, rewritten.query) == (source.path, source.query), name
        assert sim_urls["public"] == base.scheme + "://" + base.netloc + urlsplit(live_urls["public"]).path
    finally:
        await live.close()
        await sim.close()


async def test_rehosting_one_exchange_does_not_touch_another() -> None:
    sim = create_exchange("binance", "http://127.0.0.1:18080")
    live = create_exchange("binance", None)
    try:
        assert all("127.0.0.1" not in url for url in flatten(live.urls["api"]).values())
    finally:
        await sim.close()
        await live.close()
