"""NATS identities and what each may do, derived from the stage registry (decision 0036).

One identity per stage (its NATS user is the stage's name), an `admin` that alone creates,
updates, purges and deletes streams, and a read-only `consumer` for outside consumers. A stage
may publish exactly its output events' subjects (`Event.SUBJECT` with every `{placeholder}` a
`*`, except `{stage}`/`{service}`: its own name), use its own durable consumers (`consumes`) and
KV buckets (`kv_buckets`), read stream info, and receive replies on its own inbox
(`_INBOX.<user>.>`). Nothing here is hand-listed per service: a new stage gets its identity from
its `StageSpec`.

`python -m cryptoflow_cli.access [--check]` writes the nats-server authorization block for the
registry's defaults into deploy/ (compose mounts it; the Helm chart renders it as a ConfigMap);
`cryptoflow up` renders its own from the same functions with its settings.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptoflow_contracts import Stream
from cryptoflow_runtime import ServiceSettings, StageSpec
from cryptoflow_runtime.nats_auth import inbox_prefix

from .stages import stages

ADMIN = "admin"
CONSUMER = "consumer"
JS_API = "$JS.API"
# Placeholders of a subject template that name the publishing stage itself.
OWN_NAME_PLACEHOLDERS = ("stage", "service")
# Where the generated authorization block is committed: compose mounts the first, the chart
# renders the second (Helm reads files inside the chart only).
REPO = Path(__file__).resolve().parents[4]
GENERATED_FILES = (
    REPO / "deploy" / "nats" / "cryptoflow-authorization.conf",
    REPO / "deploy" / "helm" / "cryptoflow" / "files" / "nats-authorization.conf",
)
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Permissions:
    """A NATS user's permissions; deny wins over allow. None = no restriction (the admin)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()

    def as_config(self) -> dict[str, dict[str, list[str]]]:
        publish: dict[str, list[str]] = {"allow": list(self.publish)}
        if self.publish_deny:
            publish["deny"] = list(self.publish_deny)
        subscribe: dict[str, list[str]] = {"allow": list(self.subscribe)}
        if self.subscribe_deny:
            subscribe["deny"] = list(self.subscribe_deny)
        return {"publish": publish, "subscribe": subscribe}


@dataclass(frozen=True)
class Identity:
    user: str
    role: str  # "admin", "stage" or "consumer"
    permissions: Permissions | None = None
    description: str = ""

    @property
    def password_variable(self) -> str:
        """The environment variable nats-server reads this identity's password from."""
        return password_variable(self.user)


def password_variable(user: str) -> str:
    return f"CRYPTOFLOW_NATS_{re.sub(r'[^A-Za-z0-9]', '_', user).upper()}_PASSWORD"


def subject_pattern(template: str, own_name: str) -> str:
    """`cryptoflow.dlq.{stage}.{dataset}` → `cryptoflow.dlq.<own_name>.*`; other placeholders → `*`."""
    return _PLACEHOLDER.sub(lambda m: own_name if m.group(1) in OWN_NAME_PLACEHOLDERS else "*", template)


def durables(spec: StageSpec, settings: ServiceSettings | None = None) -> list[tuple[Stream, str]]:
    """The stage's (stream, durable) pairs; a `durable` setting renames the primary durable and the
    ones derived from it (`warehouse-loader-gaps` follows `WAREHOUSE_LOADER_DURABLE`)."""
    pairs = list(spec.consumes)
    configured = getattr(settings, "durable", None) if settings is not None else None
    if not pairs or not isinstance(configured, str) or configured == pairs[0][1]:
        return pairs
    primary = pairs[0][1]
    return [
        (stream, configured + durable[len(primary) :] if durable.startswith(primary) else durable)
        for stream, durable in pairs
    ]


def durable_api(stream: str, durable: str) -> list[str]:
    """What a client needs to run one durable pull consumer: look it up, create it, pull, ack."""
    return [
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def kv_api(bucket: str) -> list[str]:
    """What a client needs to open (or create) a KV bucket, and read and write its keys."""
    stream = f"KV_{bucket}"
    return [
        f"$KV.{bucket}.>",
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.STREAM.CREATE.{stream}",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
    ]


def stage_permissions(spec: StageSpec, settings: ServiceSettings | None = None) -> Permissions:
    publish: list[str] = []
    for event in spec.outputs:
        publish.append(subject_pattern(event.SUBJECT, spec.name))
    # Every service checks the platform streams at start (ensure_streams: info only, decision 0036).
    publish += [f"{JS_API}.INFO", *(f"{JS_API}.STREAM.INFO.{stream.value}" for stream in Stream)]
    for stream, durable in durables(spec, settings):
        publish += durable_api(stream.value, durable)
    for bucket in spec.kv_bucket_names(settings):
        publish += kv_api(bucket)
    return Permissions(publish=_unique(publish), subscribe=(f"{inbox_prefix(spec.name)}.>",))


def consumer_permissions(specs: Sequence[StageSpec]) -> Permissions:
    """Read-only: subscribe to every platform subject, read streams with consumers of its own
    (ephemeral, ordered or durable); never publish an event, never touch a stage's durable
    consumer (create it, pull from it, ack its messages), delete or purge anything."""
    publish = [f"{JS_API}.INFO", f"{JS_API}.STREAM.NAMES", f"{JS_API}.STREAM.LIST"]
    for stream in Stream:
        name = stream.value
        publish += [
            f"{JS_API}.STREAM.INFO.{name}",
            f"{JS_API}.STREAM.MSG.GET.{name}",
            f"{JS_API}.DIRECT.GET.{name}",
            f"{JS_API}.DIRECT.GET.{name}.>",
            f"{JS_API}.CONSUMER.NAMES.{name}",
            f"{JS_API}.CONSUMER.LIST.{name}",
            f"{JS_API}.CONSUMER.INFO.{name}.*",
            # Consumers of its own: ephemeral, unnamed (older clients) or named (newer ones, ordered
            # consumers), or durable (resuming across restarts) under a name of its own.
            f"{JS_API}.CONSUMER.CREATE.{name}",
            f"{JS_API}.CONSUMER.CREATE.{name}.>",
            f"{JS_API}.CONSUMER.DURABLE.CREATE.{name}.*",
            f"{JS_API}.CONSUMER.MSG.NEXT.{name}.*",
            f"$JS.ACK.{name}.>",
            f"$JS.FC.{name}.>",
        ]
    # The stages' KV buckets, read only: `status` shows which extractor replica holds which job.
    for spec in specs:
        for bucket in spec.kv_bucket_names(None):
            kv_stream = f"KV_{bucket}"
            publish += [
                f"{JS_API}.STREAM.INFO.{kv_stream}",
                f"{JS_API}.STREAM.MSG.GET.{kv_stream}",
                f"{JS_API}.DIRECT.GET.{kv_stream}",
                f"{JS_API}.DIRECT.GET.{kv_stream}.>",
            ]
    # A stage's durable is the stage's: no creating over it, pulling from it or acking its messages.
    deny: list[str] = []
    for spec in specs:
        for stream, durable in durables(spec):
            deny += [
                f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream.value}.{durable}",
                f"{JS_API}.CONSUMER.CREATE.{stream.value}.{durable}",
                f"{JS_API}.CONSUMER.CREATE.{stream.value}.{durable}.>",
                f"{JS_API}.CONSUMER.MSG.NEXT.{stream.value}.{durable}",
                f"$JS.ACK.{stream.value}.{durable}.>",
            ]
    prefix = "cryptoflow"
    return Permissions(
        publish=_unique(publish),
        subscribe=(f"{prefix}.>", f"{inbox_prefix(CONSUMER)}.>"),
        publish_deny=_unique(deny),
    )


def identities(
    specs: Sequence[StageSpec] | None = None, settings: Mapping[str, ServiceSettings] | None = None
) -> list[Identity]:
    """admin, one identity per stage (pipeline order), consumer."""
    specs = list(stages() if specs is None else specs)
    settings = settings or {}
    found = [Identity(ADMIN, "admin", None, "creates, updates, purges and deletes streams; operators and the CLI")]
    for spec in specs:
        found.append(
            Identity(spec.name, "stage", stage_permissions(spec, settings.get(spec.name)), f"the {spec.name} service")
        )
    found.append(Identity(CONSUMER, "consumer", consumer_permissions(specs), "outside consumers: read-only"))
    return found


def authorization_block(users: Iterable[Identity], passwords: Mapping[str, str] | None = None) -> str:
    """nats-server's `authorization { users = [...] }`, one user per identity.

    A password is a reference to the environment variable `CRYPTOFLOW_NATS_<USER>_PASSWORD`
    (nats-server resolves unquoted `$NAME`s from its environment) unless `passwords` gives it:
    the file itself then holds no secret. No `no_auth_user`: a client without credentials is
    refused.
    """
    lines = ["authorization {", "  users = ["]
    for identity in users:
        secret = (passwords or {}).get(identity.user)
        password = json.dumps(secret) if secret is not None else f"${identity.password_variable}"
        lines.append("    {")
        if identity.description:
            lines.append(f"      # {identity.description}")
        lines.append(f"      user: {json.dumps(identity.user)}")
        lines.append(f"      password: {password}")
        if identity.permissions is not None:
            lines.append("      permissions: " + _render(identity.permissions.as_config(), 6))
        lines.append("    }")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def _render(value: dict[str, dict[str, list[str]]], indent: int) -> str:
    pad = " " * indent
    out = ["{"]
    for direction, rules in value.items():
        out.append(f"{pad}  {direction}: {{")
        for kind, subjects in rules.items():
            out.append(f"{pad}    {kind}: [")
            out += [f"{pad}      {json.dumps(subject)}" for subject in subjects]
            out.append(f"{pad}    ]")
        out.append(f"{pad}  }}")
    out.append(f"{pad}}}")
    return "\n".join(out)


def generated_authorization() -> str:
    """The committed file: the registry's defaults, passwords from the environment."""
    header = (
        "# Generated by `python -m cryptoflow_cli.access` from the stage registry; do not edit by hand.\n"
        "# nats-server authorization for cryptoflow (docs/decisions/0036): one user per service, `admin`\n"
        "# (streams), `consumer` (read-only). Passwords come from the server's environment:\n"
        + "".join(f"#   {identity.password_variable}\n" for identity in identities())
        + "# Durables and KV buckets are the registry's defaults; regenerate if you rename them.\n"
    )
    return header + authorization_block(identities())


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cryptoflow_cli.access", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed file is stale")
    args = parser.parse_args(argv)
    text = generated_authorization()
    stale = [path for path in GENERATED_FILES if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is stale: regenerate it with `python -m cryptoflow_cli.access`", file=sys.stderr)
        return 1 if stale else 0
    for path in GENERATED_FILES:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


__all__ = [
    "ADMIN",
    "CONSUMER",
    "Identity",
    "Permissions",
    "authorization_block",
    "consumer_permissions",
    "durables",
    "identities",
    "stage_permissions",
    "subject_pattern",
]

if __name__ == "__main__":
    sys.exit(main())
