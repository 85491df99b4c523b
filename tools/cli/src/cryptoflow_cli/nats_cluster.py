"""A NATS cluster on this machine: `size` nats-server processes routed to each other on loopback.

For `cryptoflow up --nats-cluster 3` and the distributed chaos cell: every server has its own
store, client port and route port; streams and KV buckets get 3 replicas from
`STREAM_<NAME>_REPLICAS` / `KV_REPLICAS`, so a node killed with -9 loses nothing and the clients
(given every server's URL, comma-separated) fail over.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cryptoflow_contracts import Stream

from .servers import HOST, ServerProcess, free_port, start_nats


def replication_env(replicas: int) -> dict[str, str]:
    """The settings that give every platform stream and KV bucket `replicas` copies."""
    env = {f"STREAM_{stream.name}_REPLICAS": str(replicas) for stream in Stream}
    env["KV_REPLICAS"] = str(replicas)
    return env


@contextmanager
def start_nats_cluster(
    base: Path, size: int = 3, *, config: str | None = None, env: Mapping[str, str] | None = None
) -> Iterator[list[ServerProcess]]:
    """Start the servers (stopped again on exit); `config` is added to each one's configuration."""
    if size < 1:
        raise ValueError("a cluster has at least one server")
    routes = [free_port() for _ in range(size)]
    with ExitStack() as stack:
        servers = []
        for index in range(size):
            others = ", ".join(f"nats-route://{HOST}:{port}" for other, port in enumerate(routes) if other != index)
            cluster = (
                f"server_name: n{index + 1}\n"
                f"cluster {{\n  name: cryptoflow\n  listen: {HOST}:{routes[index]}\n  routes: [{others}]\n}}\n"
            )
            server = start_nats(base / f"n{index + 1}", config=(config or "") + cluster, env=env)
            servers.append(stack.enter_context(server))
        yield servers


def cluster_url(servers: list[ServerProcess]) -> str:
    """Every server's client URL, comma-separated (what NATS_URL takes for a cluster)."""
    return ",".join(server.url for server in servers)


async def wait_for_jetstream(url: str, timeout_s: float = 60.0) -> None:
    """Until the cluster has elected its JetStream meta leader (API requests answered)."""
    import asyncio
    import time

    import nats

    deadline = time.monotonic() + timeout_s
    nc = await nats.connect([u.strip() for u in url.split(",")], connect_timeout=5)
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
