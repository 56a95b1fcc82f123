"""Broker URLs of the command line, `mqtts://host:port` (TLS) and `mqtt://host:port` (plaintext), and the TLS
context for them from the state directory's fleet PKI or explicit files."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import click

__all__ = ["BrokerUrl", "parse_broker_url", "tls_context"]

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where the broker is; `username`/`password` only when the URL carries them (`mqtt://user:pw@host`)."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str, *, default_port: int | None = None) -> BrokerUrl:
    """Parse `mqtts://host:port` / `mqtt://host:port`; a `click.BadParameter` naming the problem otherwise."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise click.BadParameter(f"{url!r}: use mqtts://HOST:PORT (TLS) or mqtt://HOST:PORT")
    if not parts.hostname:
        raise click.BadParameter(f"{url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise click.BadParameter(f"{url!r}: a broker URL has no path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise click.BadParameter(f"{url!r}: the port must be a number from 1 to 65535") from None
    return BrokerUrl(
        host=parts.hostname,
        port=port or default_port or _DEFAULT_PORTS[scheme],
        tls=scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def tls_context(
    *, ca: Path | None, cert: Path | None = None, key: Path | None = None, insecure: bool = False
) -> ssl.SSLContext:
    """A client TLS context trusting `ca` (the system's CAs when None), presenting `cert`/`key` if given."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            context.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        what = ", ".join(str(p) for p in (ca, cert, key) if p is not None) or "the system CAs"
        raise click.ClickException(f"{what}: cannot load TLS files: {exc}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
