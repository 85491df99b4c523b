"""What a stage is, declared once by its service package and read by everything that lists stages.

Each service package exposes `STAGE = StageSpec(...)` at its root. `cryptoflow up` runs
`module`, `status` reports its consumers, `replay` builds it and feeds its registered handler
(`Service.open_offline`), `asyncapi` documents what it consumes (its built broker) and
publishes (`outputs`), and the deploy generators read `env_prefix` and `http_port_env`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptoflow_contracts import Event, Stream

from .settings import ServiceSettings

if TYPE_CHECKING:
    from .service import OfflineHandler, Service


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str  # run as `python -m <module>`
    settings: type[ServiceSettings]
    build: Callable[[Any], Awaitable[Service]]
    # The stream it consumes and its durable consumer(s), primary first; empty for a source.
    consumes: tuple[tuple[Stream, str], ...] = ()
    outputs: tuple[type[Event], ...] = ()
    env_prefix: str = ""
    description: str = ""
    # Settings fields naming the JetStream KV buckets it keeps its state in (its NATS identity may
    # use those buckets, decision 0036), e.g. ("checkpoint_bucket",).
    kv_buckets: tuple[str, ...] = ()

    def kv_bucket_names(self, settings: ServiceSettings | None = None) -> tuple[str, ...]:
        """The KV buckets it uses: from `settings` when given, else the settings' defaults."""
        if settings is not None:
            return tuple(str(getattr(settings, field)) for field in self.kv_buckets)
        return tuple(str(self.settings.model_fields[field].default) for field in self.kv_buckets)

    @property
    def input(self) -> Stream | None:
        return self.consumes[0][0] if self.consumes else None

    @property
    def replayable(self) -> bool:
        return bool(self.consumes)

    async def service(self, settings: ServiceSettings | None = None) -> Service:
        """The stage's service, built as it runs (settings from the environment by default)."""
        from .settings import load_settings

        return await self.build(settings if settings is not None else load_settings(self.settings))

    async def offline(self) -> OfflineHandler:
        """The stage's primary handler, connected, for messages fetched elsewhere (replay)."""
        service = await self.service()
        return await service.open_offline(self.consumes[0][1] if self.consumes else None)
