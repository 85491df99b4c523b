"""How a service authenticates to NATS: its user, password, reply inbox and TLS (decision 0036).

A service's identity is `NATS_USER` + `NATS_PASSWORD` (or `user:password@` in `NATS_URL`). Its
replies (publish acks, JetStream API answers, pulled messages) come on `_INBOX.<user>.…`, so the
server lets each identity subscribe to its own inbox only: nobody reads another's replies.
`NATS_TLS_CA` turns TLS on and verifies the server's certificate with that CA.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from faststream.nats import NatsSecurity
from faststream.nats.security import NatsUserPassword

from .settings import ServiceSettings

INBOX = "_INBOX"


def server_urls(url: str) -> list[str]:
    """NATS_URL's servers: a cluster's are comma-separated (the client fails over among them)."""
    return [part.strip() for part in url.split(",") if part.strip()]


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix of a NATS user: `_INBOX.<user>` (its permission: `_INBOX.<user>.>`)."""
    return f"{INBOX}.{user}"


def nats_user(settings: ServiceSettings) -> str | None:
    """NATS_USER, else the user of NATS_URL's first server (`nats://user:password@host`)."""
    if settings.nats_user:
        return settings.nats_user
    first = server_urls(settings.nats_url)[0]
    user = urlsplit(first).username
    return unquote(user) if user else None


def tls_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """A client context verifying the server with `ca_file` (host name included); None without one."""
    if ca_file is None:
        return None
    return ssl.create_default_context(cafile=str(ca_file))


def broker_options(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments of FastStream's `NatsBroker` for the settings' identity and TLS."""
    options: dict[str, Any] = {}
    context = tls_context(settings.nats_tls_ca)
    if settings.nats_user and settings.nats_password is not None:
        options["security"] = NatsUserPassword(
            settings.nats_user, settings.nats_password.get_secret_value(), ssl_context=context
        )
    elif context is not None:
        options["security"] = NatsSecurity(ssl_context=context, use_ssl=True)
    if user := nats_user(settings):
        options["inbox_prefix"] = inbox_prefix(user)
    return options


def subscriber_options(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments of `NatsBroker.subscriber`: a pull subscription's delivery inbox under
    the identity's own prefix (FastStream passes `_INBOX.` otherwise, whatever the connection's)."""
    if user := nats_user(settings):
        return {"inbox_prefix": f"{inbox_prefix(user)}.".encode()}
    return {}


def connect_options(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments of `nats.connect` for the settings' identity and TLS."""
    options: dict[str, Any] = {}
    if settings.nats_user and settings.nats_password is not None:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password.get_secret_value()
    if (context := tls_context(settings.nats_tls_ca)) is not None:
        options["tls"] = context
    if user := nats_user(settings):
        options["inbox_prefix"] = inbox_prefix(user)
    return options
