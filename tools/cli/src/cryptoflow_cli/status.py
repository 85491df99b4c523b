"""`cryptoflow status`: messages per stream, lag per consumer, extractor streams, lake objects, warehouse rows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import asyncpg
import nats
from cryptoflow_contracts import Stream
from cryptoflow_extractor.config import ExtractorSettings
from cryptoflow_extractor.leases import read_owners
from cryptoflow_runtime import open_lake
from cryptoflow_runtime.nats_auth import inbox_prefix, server_urls, tls_context
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError
from prometheus_client.parser import text_string_to_metric_families

from .stackfile import read_stack
from .stages import stages


def consumers() -> dict[str, Stream]:
    """Every stage's durable consumers (durable → stream), from the stage registry."""
    return {durable: stream for spec in stages() for stream, durable in spec.consumes}


async def collect_status(home: Path) -> dict[str, Any]:
    info = read_stack(home)
    report: dict[str, Any] = {"streams": {}, "consumers": {}, "lake": {}, "warehouse": {}}
    # The read-only identities when the stack has them (decision 0036): status changes nothing.
    nats_url = info.consumer_nats_url or info.nats_url
    user = urlsplit(server_urls(nats_url)[0]).username
    nc = await nats.connect(
        server_urls(nats_url),
        connect_timeout=5,
        tls=tls_context(Path(info.tls_ca) if info.tls_ca else None),
        **({"inbox_prefix": inbox_prefix(unquote(user))} if user else {}),
    )
    try:
        js = nc.jetstream()
        for stream in Stream:
            with contextlib.suppress(NotFoundError):
                state = (await js.stream_info(stream.value)).state
                report["streams"][stream.value] = {"messages": state.messages, "bytes": state.bytes}
        for durable, stream in consumers().items():
            with contextlib.suppress(NotFoundError):
                consumer = await js.consumer_info(stream.value, durable)
                report["consumers"][durable] = {
                    "stream": stream.value,
                    "pending": consumer.num_pending,
                    "ack_pending": consumer.num_ack_pending,
                    "redelivered": consumer.num_redelivered,
                }
        report["extractor_jobs"] = await job_owners(js)
    finally:
        await nc.close()
    report["extractor_streams"] = await stream_stats(
        [str(entry["metrics_url"]) for name, entry in info.services.items() if name.startswith("extractor")]
    )
    lake = await open_lake(info.lake_url, info.s3_endpoint_url)
    try:
        for layer in ("bronze", "silver", "quarantine"):
            report["lake"][layer] = len(await lake.list(f"{layer}/"))
    finally:
        await lake.close()
    conn = await asyncpg.connect(info.reader_database_url or info.database_url, timeout=5)
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.ohlcv_data') IS NOT NULL")
        report["warehouse"]["ohlcv_rows"] = await conn.fetchval("SELECT count(*) FROM ohlcv_data") if exists else 0
    finally:
        await conn.close()
    return report


async def job_owners(js: JetStreamContext) -> dict[str, str]:
    """Which extractor replica holds which job's lease (decision 0042)."""
    bucket = str(ExtractorSettings.model_fields["lease_bucket"].default)
    try:
        kv = await js.key_value(bucket)
    except (NotFoundError, BadRequestError):
        return {}
    return await read_owners(js, kv, bucket)


async def stream_stats(metrics_urls: list[str], interval_s: float = 1.0) -> dict[str, dict[str, float]]:
    """Per stream (exchange symbol dataset): messages a second (over `interval_s`), the last
    message's age and the order books' resyncs, read from the extractors' /metrics."""
    first = await _scrape_all(metrics_urls)
    if not first["messages"]:
        return {}
    await asyncio.sleep(interval_s)
    second = await _scrape_all(metrics_urls)
    now = time.time()
    stats: dict[str, dict[str, float]] = {}
    for key, count in second["messages"].items():
        exchange, symbol, dataset = key
        resyncs = sum(v for (ex, sym, _), v in second["resyncs"].items() if (ex, sym) == (exchange, symbol))
        stats[f"{exchange} {symbol} {dataset}"] = {
            "messages_per_s": round((count - first["messages"].get(key, 0.0)) / interval_s, 1),
            "last_message_age_s": round(now - second["last"].get(key, 0.0), 1),
            "resyncs": resyncs if dataset == "orderbook" else 0.0,
        }
    return stats


async def _scrape_all(urls: list[str]) -> dict[str, dict[tuple[str, ...], float]]:
    found: dict[str, dict[tuple[str, ...], float]] = {"messages": {}, "last": {}, "resyncs": {}}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for url in urls:
            try:
                async with session.get(url) as response:
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                continue  # a replica restarting: the others still count
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    labels = sample.labels
                    if sample.name == "cryptoflow_extractor_stream_messages_total":
                        key = (labels["exchange"], labels["symbol"], labels["dataset"])
                        found["messages"][key] = found["messages"].get(key, 0.0) + sample.value
                    elif sample.name == "cryptoflow_extractor_stream_last_message_timestamp_seconds":
                        key = (labels["exchange"], labels["symbol"], labels["dataset"])
                        found["last"][key] = max(found["last"].get(key, 0.0), sample.value)
                    elif sample.name == "cryptoflow_extractor_stream_resyncs_total":
                        key = (labels["exchange"], labels["symbol"], labels["reason"])
                        found["resyncs"][key] = found["resyncs"].get(key, 0.0) + sample.value
    return found


def format_streams(streams: dict[str, dict[str, float]]) -> list[str]:
    if not streams:
        return []
    lines = ["extractor streams (messages/s, last message age, book resyncs):"]
    lines += [
        f"  {name:<32} {s['messages_per_s']:>8.1f}/s  age {s['last_message_age_s']:>6.1f}s  resyncs {s['resyncs']:.0f}"
        for name, s in sorted(streams.items())
    ]
    return lines


def format_owners(owners: dict[str, str]) -> list[str]:
    by_replica: dict[str, list[str]] = {}
    for job, replica in sorted(owners.items()):
        by_replica.setdefault(replica, []).append(job)
    lines = [f"extractor replicas ({len(owners)} jobs leased):"]
    lines += [f"  {replica:<24} {len(jobs):>4} jobs: {', '.join(jobs)}" for replica, jobs in sorted(by_replica.items())]
    return lines


def format_status(report: dict[str, Any]) -> str:
    lines = ["streams:"]
    lines += [f"  {name:<10} {s['messages']:>10} messages" for name, s in report["streams"].items()]
    lines.append("consumers (lag = pending + unacked):")
    lines += [
        f"  {name:<17} on {c['stream']:<7} lag {c['pending'] + c['ack_pending']:>8}  redelivered {c['redelivered']}"
        for name, c in report["consumers"].items()
    ]
    lines += format_owners(report.get("extractor_jobs", {}))
    lines += format_streams(report.get("extractor_streams", {}))
    lines.append("lake objects:")
    lines += [f"  {layer:<10} {count:>10}" for layer, count in report["lake"].items()]
    lines.append(f"warehouse:\n  ohlcv rows {report['warehouse']['ohlcv_rows']:>10}")
    return "\n".join(lines)


def render(report: dict[str, Any], as_json: bool) -> str:
    return json.dumps(report, indent=2) if as_json else format_status(report)
