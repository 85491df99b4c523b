"""A NATS cluster on this machine: `size` nats-server processes routed to each other on loopback.

For `cryptoflow up --nats-cluster 3` and the distributed chaos cell: every server has its own
store, client port and route port; streams and KV buckets get 3 replicas from
`STREAM_<NAME>_REPLICAS` / `KV_REPLICAS`, so a node killed with -9 loses nothing and the clients
(given every server's URL, comma-separated) fail over.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from cryptoflow_contracts import Stream
from cryptoflow_runtime.nats_auth import server_urls

from .servers import HOST, ServerProcess, TlsFiles, free_port, start_nats

# The identity servers of the cluster present on each other's route ports.
ROUTE_USER = "route"


def replication_env(replicas: int) -> dict[str, str]:
    """The settings that give every platform stream and KV bucket `replicas` copies."""
    env = {f"STREAM_{stream.name}_REPLICAS": str(replicas) for stream in Stream}
    env["KV_REPLICAS"] = str(replicas)
    return env


def start_nats_servers(
    base: Path,
    size: int = 3,
    *,
    config: str | None = None,
    env: Mapping[str, str] | None = None,
    tls: TlsFiles | None = None,
    route_password: str | None = None,
) -> list[ServerProcess]:
    """Start `size` routed servers (`n1`…`n<size>` under `base`); `config` is added to each one's
    configuration. With `route_password`, the route ports accept only servers that know it (a
    route port open to anyone on the host would let any process join the cluster and read every
    stream); it goes to the servers through their environment, not their files."""
    if size < 1:
        raise ValueError("a cluster has at least one server")
    routes = [free_port() for _ in range(size)]
    servers: list[ServerProcess] = []
    try:
        for index in range(size):
            others = [port for other, port in enumerate(routes) if other != index]
            server_env = dict(env or {})
            if route_password is not None:
                server_env["NATS_ROUTE_PASSWORD"] = route_password
                credentials = f"{ROUTE_USER}:{quote(route_password, safe='')}@"
                auth = f"  authorization {{ user: {ROUTE_USER}, password: $NATS_ROUTE_PASSWORD }}\n"
            else:
                credentials, auth = "", ""
            for number, port in enumerate(others, start=1):
                server_env[f"NATS_ROUTE_{number}"] = f"nats-route://{credentials}{HOST}:{port}"
            route_list = ", ".join(f"$NATS_ROUTE_{number}" for number in range(1, len(others) + 1))
            cluster = (
                f"server_name: n{index + 1}\n"
                f"cluster {{\n  name: cryptoflow\n  listen: {HOST}:{routes[index]}\n{auth}  routes: [{route_list}]\n}}\n"
            )
            servers.append(start_nats(base / f"n{index + 1}", config=(config or "") + cluster, env=server_env, tls=tls))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


@contextmanager
def start_nats_cluster(
    base: Path, size: int = 3, *, config: str | None = None, env: Mapping[str, str] | None = None
) -> Iterator[list[ServerProcess]]:
    """start_nats_servers, stopped again on exit."""
    servers = start_nats_servers(base, size, config=config, env=env)
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def cluster_url(servers: list[ServerProcess]) -> str:
    """Every server's client URL, comma-separated (what NATS_URL takes for a cluster)."""
    return ",".join(server.url for server in servers)


async def wait_for_jetstream(url: str, timeout_s: float = 60.0) -> None:
    """Until the cluster has elected its JetStream meta leader (API requests answered)."""
    import asyncio
    import time

    import nats

    deadline = time.monotonic() + timeout_s
    nc = await nats.connect(server_urls(url), connect_timeout=5)
    try:
        js = nc.jetstream(timeout=2)
        while True:
            try:
                await js.account_info()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
    finally:
        await nc.close()
