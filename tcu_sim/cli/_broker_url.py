"""Broker URLs of the command line, `mqtts://host:port` (TLS) and `mqtt://host:port` (plaintext), the TLS
context for them from the state directory's fleet PKI or explicit files, and the broker of the stack running on
a state directory (`<state>/endpoints.json`, written by `tcu-sim up`)."""

from __future__ import annotations

import ssl
from pathlib import Path

import click

from tcu_sim.fleet import BrokerUrl, read_endpoints
from tcu_sim.fleet import parse_broker_url as _parse

__all__ = ["DEFAULT_DEVICE_URL", "BrokerUrl", "device_broker_url", "parse_broker_url", "stack_app_url", "tls_context"]

DEFAULT_DEVICE_URL = "mqtts://127.0.0.1:8883"


def device_broker_url(given: str | None, state_dir: Path) -> str:
    """The device listener to use: `--broker` when given, else the one the stack running on `state_dir` recorded,
    else the default port. A recorded stack that is gone is an error that says so (not "connection refused")."""
    if given is not None:
        return given
    endpoints = read_endpoints(state_dir)
    if endpoints is None:
        return DEFAULT_DEVICE_URL
    if not endpoints.alive:
        raise click.ClickException(
            f"{state_dir}: the stack that ran here (pid {endpoints.pid}, tcu-sim {endpoints.holder}) is gone; "
            f"start it again, or give --broker"
        )
    return endpoints.device


def stack_app_url(state_dir: Path) -> str | None:
    """The app listener of the stack running on `state_dir`, if one recorded it and still runs."""
    endpoints = read_endpoints(state_dir)
    return endpoints.app if endpoints is not None and endpoints.alive else None


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
