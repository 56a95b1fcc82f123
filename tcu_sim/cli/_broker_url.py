"""Broker URLs of the command line, `mqtts://host:port` (TLS) and `mqtt://host:port` (plaintext), and the TLS
context for them from the state directory's fleet PKI or explicit files."""

from __future__ import annotations

import ssl
from pathlib import Path

import click

from tcu_sim.fleet import BrokerUrl
from tcu_sim.fleet import parse_broker_url as _parse

__all__ = ["BrokerUrl", "parse_broker_url", "tls_context"]


def parse_broker_url(url: str, *, default_port: int | None = None) -> BrokerUrl:
    """Parse `mqtts://host:port` / `mqtt://host:port`; a `click.BadParameter` naming the problem otherwise."""
    try:
        return _parse(url, default_port=default_port)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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
