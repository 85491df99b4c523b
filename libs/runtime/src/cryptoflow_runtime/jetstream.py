"""JetStream streams, KV buckets and publishing conventions, declared once."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import nats.errors
from cryptoflow_contracts import STREAM_SUBJECTS, Stream
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue

from .settings import ConfigError, NumberT, StreamLimits, stream_env_name, stream_limits_from_env

log = logging.getLogger(__name__)

# Retries of a publish within this window carry the same Nats-Msg-Id and are dropped.
DUPLICATE_WINDOW_S = 15 * 60


# What a JetStream API request meets while a server restarts or a cluster elects a leader.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    ServiceUnavailableError,
)

T = TypeVar("T")


async def retry_transient(what: str, step: Callable[[], Awaitable[T]], timeout_s: float = 120.0) -> T:
    """`step()`, retried with backoff while JetStream does not answer (up to `timeout_s`).

    A service starting while a cluster node dies, or while JetStream elects its leaders, gets
    timeouts for a few seconds; that is no reason to exit (and be restarted).
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    while True:
        try:
            return await step()
        except TRANSIENT_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("JetStream not answering; retrying", extra={"what": what, "error": repr(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def ensure_consumer(js: JetStreamContext, stream: str, subject: str, config: ConsumerConfig) -> None:
    """Create the durable pull consumer unless it exists (what a pull subscription would do)."""
    durable = config.durable_name
    assert durable, "a durable consumer has a name"
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        wanted = dataclasses.replace(config, name=durable, filter_subject=config.filter_subject or subject)
        await js.add_consumer(stream, config=wanted)
        log.info("created consumer", extra={"stream": stream, "durable": durable})


# Limits a stream is created with when its STREAM_<NAME>_* variables are unset.
DEFAULT_LIMITS = StreamLimits(max_age_s=7 * 24 * 3600, max_bytes=-1, max_msgs=-1, replicas=1)
# LIVE carries every streamed update for consumers that want them at once; the lake keeps them
# (through RAW), so an hour is plenty and keeps the stream small at thousands of updates a second.
STREAM_DEFAULTS: dict[Stream, StreamLimits] = {Stream.LIVE: dataclasses.replace(DEFAULT_LIMITS, max_age_s=3600)}


def default_limits(stream: Stream) -> StreamLimits:
    return STREAM_DEFAULTS.get(stream, DEFAULT_LIMITS)


def stream_config(stream: Stream, limits: StreamLimits | None = None) -> StreamConfig:
    """The stream's full configuration: configured limits, the defaults for the others."""
    chosen = limits or StreamLimits()
    defaults = default_limits(stream)
    return StreamConfig(
        name=stream.value,
        subjects=[STREAM_SUBJECTS[stream]],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=_pick(chosen.max_age_s, defaults.max_age_s),
        max_bytes=_pick(chosen.max_bytes, defaults.max_bytes),
        max_msgs=_pick(chosen.max_msgs, defaults.max_msgs),
        num_replicas=_pick(chosen.replicas, defaults.replicas),
    )


def _pick(value: NumberT | None, default: NumberT | None) -> NumberT | None:
    return default if value is None else value


def limit_changes(current: StreamConfig, limits: StreamLimits) -> dict[str, Any]:
    """StreamConfig fields to update so the stream has the configured (set) limits; {} when it has."""
    wanted: dict[str, Any] = {}
    if limits.max_age_s is not None and not _same_age(current.max_age, limits.max_age_s):
        wanted["max_age"] = limits.max_age_s
    if limits.max_bytes is not None and _unlimited(current.max_bytes) != limits.max_bytes:
        wanted["max_bytes"] = limits.max_bytes
    if limits.max_msgs is not None and _unlimited(current.max_msgs) != limits.max_msgs:
        wanted["max_msgs"] = limits.max_msgs
    if limits.replicas is not None and (current.num_replicas or 1) != limits.replicas:
        wanted["num_replicas"] = limits.replicas
    return wanted


def _configured_fields(limits: StreamLimits) -> dict[str, Any]:
    """The configured (set) limits, by StreamConfig field."""
    fields = {
        "max_age": limits.max_age_s,
        "max_bytes": limits.max_bytes,
        "max_msgs": limits.max_msgs,
        "num_replicas": limits.replicas,
    }
    return {field: value for field, value in fields.items() if value is not None}


def _same_age(current: float | None, wanted: float) -> bool:
    # The server keeps nanoseconds; nats-py hands them back as float seconds.
    return abs((current or 0.0) - wanted) < 1e-6


def _unlimited(value: int | None) -> int:
    return -1 if value is None or value <= 0 else value


# A JetStream API request this identity may not make gets no answer: the server drops it.
_NOT_ALLOWED = (
    "stream {stream}: no answer when asked to {what}; with NATS authorization only the admin identity "
    "creates and changes streams (`cryptoflow up`, `python -m cryptoflow_runtime.streams`): run that "
    "with the same STREAM_* settings first"
)

# StreamConfig field → the knob of its variable, for messages naming the setting.
_KNOBS = {"max_age": "MAX_AGE_S", "max_bytes": "MAX_BYTES", "max_msgs": "MAX_MSGS", "num_replicas": "REPLICAS"}


async def ensure_streams(js: JetStreamContext, limits: Mapping[Stream, StreamLimits] | None = None) -> None:
    """Create every platform stream if missing, and bring configured limits up to date.

    `limits` defaults to the `STREAM_<NAME>_*` environment variables (stream_limits_from_env). A
    stream is created with its configured limits (defaults for the unset ones); an existing
    stream whose configured limits differ is updated (`js.update_stream`), its other settings
    untouched. Any service may call it at start. A limit the server refuses (e.g. replicas on a
    single server) raises ConfigError naming the variable.

    With NATS authorization (decision 0036) only the admin identity may create or change streams:
    the stack's provisioning step (`cryptoflow up`, `python -m cryptoflow_runtime.streams`) runs
    this as admin first, and a service then only reads `stream_info`. A service that would have
    to create or change a stream is refused by the server (no answer: a timeout), which raises
    ConfigError saying so.
    """
    all_limits = stream_limits_from_env() if limits is None else limits
    for stream in Stream:
        wanted = all_limits.get(stream, StreamLimits())
        try:
            info = await js.stream_info(stream.value)
        except NotFoundError:
            try:
                await js.add_stream(stream_config(stream, wanted))
                log.info("created stream", extra={"stream": stream.value, **_described(stream_config(stream, wanted))})
                continue
            except ServiceUnavailableError:
                raise  # JetStream not ready: not a configuration problem
            except nats.errors.TimeoutError:
                raise ConfigError(_NOT_ALLOWED.format(stream=stream.value, what="create it")) from None
            except APIError as exc:
                # Another service may have created it between our lookup and add: that is fine.
                try:
                    info = await js.stream_info(stream.value)
                except NotFoundError:
                    configured = _configured_fields(wanted)
                    hint = f" with {_variables(stream, configured, configured)}" if configured else ""
                    raise ConfigError(
                        f"stream {stream.value}: nats-server refused to create it{hint} ({exc.description})"
                    ) from None
        await _update_limits(js, stream, info.config, wanted)


async def _update_limits(js: JetStreamContext, stream: Stream, current: StreamConfig, wanted: StreamLimits) -> None:
    changes = limit_changes(current, wanted)
    if not changes:
        return
    before = {field: getattr(current, field) for field in changes}
    try:
        await js.update_stream(current.evolve(**changes))
    except ServiceUnavailableError:
        raise
    except nats.errors.TimeoutError:
        what = f"set {_variables(stream, changes, changes)}"
        raise ConfigError(_NOT_ALLOWED.format(stream=stream.value, what=what)) from None
    except APIError as exc:
        raise ConfigError(
            f"stream {stream.value}: nats-server refused {_variables(stream, changes, changes)} ({exc.description})"
        ) from None
    log.info("updated stream limits", extra={"stream": stream.value, "from": before, "to": changes})


def _variables(stream: Stream, fields: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    return ", ".join(f"{stream_env_name(stream, _KNOBS[field])}={values[field]}" for field in fields)


def _described(config: StreamConfig) -> dict[str, Any]:
    return {
        "max_age_s": config.max_age,
        "max_bytes": config.max_bytes,
        "max_msgs": config.max_msgs,
        "replicas": config.num_replicas,
    }


async def ensure_kv(js: JetStreamContext, bucket: str, history: int = 1, ttl_s: float | None = None) -> KeyValue:
    """The KV bucket, created when missing with `KV_REPLICAS` copies (1; 3 on a cluster, so that
    checkpoints survive a node); `ttl_s`: each key's value expires that long after its last write."""
    try:
        return await js.key_value(bucket)
    except (NotFoundError, BadRequestError):
        config = KeyValueConfig(bucket=bucket, history=history, replicas=kv_replicas(), ttl=ttl_s)
        return await js.create_key_value(config)


def kv_replicas(environ: Mapping[str, str] | None = None) -> int:
    text = (os.environ if environ is None else environ).get("KV_REPLICAS", "1")
    try:
        replicas = int(text)
    except ValueError:
        raise ConfigError(f"KV_REPLICAS: expected a whole number from 1 to 5 (got {text!r})") from None
    if not 1 <= replicas <= 5:
        raise ConfigError(f"KV_REPLICAS: expected a whole number from 1 to 5 (got {text!r})")
    return replicas


async def connect(url: str, name: str) -> Client:
    import nats

    return await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5)


def msg_id_headers(event_id: str) -> dict[str, str]:
    return {"Nats-Msg-Id": event_id}


def _pull_fetch_raises_nats_timeouts() -> None:
    """Make `PullSubscription.fetch` time out with `nats.errors.TimeoutError` only (decision 0031).

    nats-py's `fetch` can also raise a bare `asyncio.TimeoutError` (when the deadline runs out
    between its two pull requests). FastStream's pull loop catches only the nats one: the bare one
    kills its consume task, and the messages that task had fetched for the batch are dropped
    unacked — redelivered only after `ack_wait` (60 s for the lake-writer), one delivery spent.
    The nats error subclasses asyncio's, so code catching either still does.
    """
    pull = JetStreamContext.PullSubscription
    original = pull.fetch
    if getattr(original, "_cryptoflow_shim", False):
        return

    @functools.wraps(original)
    async def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        except nats.errors.TimeoutError:
            raise
        except TimeoutError as exc:
            raise nats.errors.TimeoutError from exc

    fetch._cryptoflow_shim = True  # type: ignore[attr-defined]
    setattr(pull, "fetch", fetch)  # noqa: B010


_pull_fetch_raises_nats_timeouts()
