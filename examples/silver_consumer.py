"""Follow cryptoflow's silver batches from outside the platform: a runnable example consumer.

Subscribes to `cryptoflow.silver.ohlcv.>` (stream SILVER; `--subject
cryptoflow.silver.ohlcv.binance.BTC-USDT` follows one table of one market) with an *ordered* consumer — ephemeral,
server-side state nobody has to clean up, messages in stream order — starting at `--since`
(JetStream's DeliverPolicy.BY_START_TIME: the time each event was stored), and prints every
BatchReady. With `--rows N` it also reads the batch's Parquet file from the lake (file:// or
s3://) and prints its first N rows.

    python examples/silver_consumer.py --since 2024-01-01T00:00:00Z
    python examples/silver_consumer.py --since 2024-06-01T00:00:00Z --rows 5
    python examples/silver_consumer.py --from-start --exit-when-caught-up --format json

It needs only `nats-py` (and `polars` for `--rows`): outside consumers do not import cryptoflow.
The message body is the JSON of a BatchReady (schema: docs/asyncapi/cryptoflow.yaml); its
`event_id`, also the `Nats-Msg-Id` header, is the key to deduplicate on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

DEFAULT_SUBJECT = "cryptoflow.silver.ohlcv.>"


def parse_time(text: str) -> datetime:
    """ISO 8601; `Z` or an offset, naive means UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        help="with credentials, e.g. stack.json's consumer_nats_url (the read-only identity)",
    )
    parser.add_argument("--subject", default=DEFAULT_SUBJECT, help=f"default: {DEFAULT_SUBJECT}")
    parser.add_argument("--stream", default="SILVER")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--since", type=parse_time, help="replay events stored at or after this time (UTC)")
    start.add_argument("--from-start", action="store_true", help="replay the whole stream")
    parser.add_argument("--exit-when-caught-up", action="store_true", help="stop after the last stored event")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="json: one object per line")
    parser.add_argument("--rows", type=int, default=0, help="also print the first N rows of each batch's Parquet")
    parser.add_argument("--lake-url", help="read Parquet from this lake root instead of the event's lake_url")
    parser.add_argument("--s3-endpoint-url", default=os.environ.get("S3_ENDPOINT_URL"), help="MinIO, moto, ...")
    return parser.parse_args(argv)


def consumer_config(args: argparse.Namespace) -> ConsumerConfig:
    if args.since is not None:
        return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=args.since)
    if args.from_start:
        return ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    return ConsumerConfig(deliver_policy=DeliverPolicy.NEW)


def read_rows(batch: dict[str, Any], count: int, lake_url: str | None, s3_endpoint_url: str | None) -> Any:
    """The first rows of the batch's silver Parquet file, as a Polars DataFrame."""
    import polars as pl

    root = (lake_url or batch["lake_url"]).rstrip("/")
    if root.startswith("file://"):
        path = Path(urlsplit(root).netloc + urlsplit(root).path) / batch["key"]
        return pl.read_parquet(path, n_rows=count)
    if root.startswith("s3://"):
        options = {}
        if s3_endpoint_url:
            options["aws_endpoint_url"] = s3_endpoint_url
            options["aws_allow_http"] = str(s3_endpoint_url.startswith("http://")).lower()
        for variable, option in (
            ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
            ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
            ("AWS_DEFAULT_REGION", "aws_region"),
            ("AWS_REGION", "aws_region"),
        ):
            if os.environ.get(variable):
                options[option] = os.environ[variable]
        return pl.read_parquet(f"{root}/{batch['key']}", n_rows=count, storage_options=options)
    raise ValueError(f"unsupported lake URL {root!r}")


def show(msg: Any, batch: dict[str, Any], args: argparse.Namespace) -> None:
    stored = msg.metadata.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    rows = read_rows(batch, args.rows, args.lake_url, args.s3_endpoint_url) if args.rows > 0 else None
    if args.format == "json":
        line: dict[str, Any] = {
            "stream_seq": msg.metadata.sequence.stream,
            "stored_at": stored,
            "subject": msg.subject,
            "batch": batch,
        }
        if rows is not None:
            line["rows"] = rows.to_dicts()
        print(json.dumps(line, default=str), flush=True)
        return
    span = ""
    if batch.get("min_ts") is not None and batch.get("max_ts") is not None:
        first = datetime.fromtimestamp(batch["min_ts"] / 1000, UTC).isoformat()
        last = datetime.fromtimestamp(batch["max_ts"] / 1000, UTC).isoformat()
        span = f" {first}..{last}"
    print(
        f"#{msg.metadata.sequence.stream} {stored} {msg.subject} table={batch['table']} rows={batch['rows']}"
        f" quarantined={batch['quarantined_rows']} quality={batch['quality_score']:.3f}{span}"
        f"\n    {batch['lake_url']}/{batch['key']}  {batch['event_id']}",
        flush=True,
    )
    if rows is not None:
        print(rows, flush=True)


def inbox_prefix(nats_url: str) -> str:
    """`_INBOX.<user>` when the URL names a user: a locked-down deployment lets each user read
    replies on its own inbox only (`consumer`: `_INBOX.consumer.>`, docs/decisions/0036)."""
    user = urlsplit(nats_url.split(",")[0].strip()).username
    return f"_INBOX.{unquote(user)}" if user else "_INBOX"


async def consume(args: argparse.Namespace) -> int:
    nc = await nats.connect(
        args.nats_url, name="cryptoflow-example-silver-consumer", inbox_prefix=inbox_prefix(args.nats_url)
    )
    try:
        js = nc.jetstream()
        sub = await js.subscribe(args.subject, stream=args.stream, ordered_consumer=True, config=consumer_config(args))
        if args.exit_when_caught_up:
            info = await sub.consumer_info()
            if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
                return 0  # nothing stored from that point on: neither pending nor already on its way
        while True:
            try:
                msg = await sub.next_msg(timeout=None)
            except nats.errors.TimeoutError:
                continue
            show(msg, json.loads(msg.data), args)
            if args.exit_when_caught_up and msg.metadata.num_pending == 0:
                return 0
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(consume(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
