"""Credentials out of URLs before they reach a log line or an error message."""

from __future__ import annotations

import re

__all__ = ["redact", "redact_text"]

_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|sslpassword)=)[^&,]*")
# user:password@ of any URL inside free text (a log message, an exception's text).
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@,]*):[^\s@]*@")
# A server list (`nats://a:pw@h1,nats://a:pw@h2`) is redacted URL by URL.
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")


def redact(url: str) -> str:
    """The URL (or comma-separated URLs) without passwords (user:password@ or ?password=).

    For PostgreSQL DSNs and NATS server URLs alike; the user name is kept, so a log still says
    who connected.
    """
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    return ",".join(_redact_one(part) for part in _NEXT_URL.split(url))


def _redact_one(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


def redact_text(text: str) -> str:
    """Free text with the password of every URL in it masked (for log lines and error messages)."""
    return _USERINFO.sub(r"\g<head>:***@", _QUERY_PASSWORD.sub(r"\1***", text))
