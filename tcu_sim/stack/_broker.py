"""The stack's broker: a Mosquitto it starts (the reference set-up), the embedded amqtt broker, or one given.

Both brokers the stack starts get the fleet's generated set-up: a device listener with mutual TLS (cars, cloud,
operator; certificate CN = username), an app listener with username + password, and the ACLs of
`broker.mosquitto.AclPolicy`. Mosquitto keeps its configuration and persistence in `<state>/broker/`, so
sessions, queued commands and retained status survive a restart of `tcu-sim up`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from broker.launch import BrokerKind, select_broker
from broker.mosquitto import MosquittoBroker, MosquittoError, MosquittoNotFound, free_ports
from broker.pki import FleetPKI
from tcu_sim.fleet import BrokerUrl, parse_broker_url
from tcu_sim.stack._config import StackConfig
from tcu_sim.stack._errors import BrokerStartError

__all__ = ["EMBEDDED_LIMITS", "AppEndpoint", "BrokerInfo", "BrokerKind", "open_broker"]

#: What the embedded broker cannot enforce or keep compared to the Mosquitto set-up (see broker.embedded).
EMBEDDED_LIMITS = (
    "MQTT 3.1.1 only: no MQTT 5, no shared subscriptions (one cloud process)",
    "no persistence: sessions, queued commands and retained status are gone when `up` stops",
    "a CONNECT with another app's client id can drop that app's session before the login is checked",
)


@dataclass(frozen=True, slots=True)
class AppEndpoint:
    """Where and as whom apps connect: the app listener and one login (username = MQTT client id)."""

    host: str
    port: int
    tls: bool
    username: str
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """`mqtts://host:port` (no login in it)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{_host(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """The broker in use: what it is, where cars and the cloud connect, where apps connect."""

    kind: BrokerKind
    device: BrokerUrl
    description: str
    ready_at: float
    """`time.monotonic()` when the broker accepted connections (P5 counts from here)."""
    apps: Mapping[str, AppEndpoint] = field(default_factory=dict)
    """App logins by username ({} when the stack cannot give apps a login on this broker)."""
    limits: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: The Mosquitto the stack started (it may stop, kill and restart it: `tcu-sim fault broker ...`); None for
    #: the embedded broker (it lives in this process) and an external one.
    process: MosquittoBroker | None = field(default=None, repr=False, compare=False)

    def app(self, username: str) -> AppEndpoint | None:
        """The app login `username`, else any login there is (a given app broker URL has just one)."""
        return self.apps.get(username) or next(iter(self.apps.values()), None)

    @property
    def mqtt5(self) -> bool:
        """Whether the broker speaks MQTT 5 (the embedded one does not)."""
        return self.kind is not BrokerKind.EMBEDDED


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As a server binds: a port left in TIME_WAIT by the previous run is free for it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ports(config: StackConfig) -> tuple[int, int, tuple[str, ...]]:
    """The device and app ports to ask for (0: a free one), and a note when the configured ones were busy."""
    port = config.port
    app_port = config.app_port if config.app_port is not None else (port + 1 if port else 0)
    if port and config.port_fallback:
        busy = [p for p in (port, app_port) if p and not _port_free(config.host, p)]
        if busy:
            note = f"port {', '.join(map(str, busy))} busy on {config.host}: using free ports instead"
            return 0, 0, (note,)
    return port, app_port, ()


def _parse_app_url(url: str, default_username: str, logins: Mapping[str, str]) -> AppEndpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise BrokerStartError(f"app broker URL {url!r}: use mqtts://USER:PASSWORD@HOST:PORT or mqtt://HOST:PORT")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise BrokerStartError(f"app broker URL {url!r}: bad port") from None
    username = unquote(parts.username) if parts.username else default_username
    password = unquote(parts.password) if parts.password else logins.get(username)
    return AppEndpoint(parts.hostname, port, parts.scheme == "mqtts", username, password)


def _own_session_launcher(directory: Path, binary: Path) -> Path:
    """A launcher that starts `binary` in a session of its own, so that Ctrl-C in the terminal reaches `up` only
    and `up` stops the broker last, after fleet and cloud (else Mosquitto quits first and cuts them off).

    `MosquittoBroker` runs `binary -c CONF` in our process group; the launcher (a Python script with this
    interpreter) calls `setsid()` and execs Mosquitto under the same pid, so signals from `MosquittoBroker` still
    reach it. Falls back to `binary` itself where a shebang cannot name this interpreter.
    """
    interpreter = sys.executable
    if not interpreter or any(c.isspace() for c in interpreter) or len(interpreter) > 120:
        return binary
    launcher = directory / "mosquitto-launcher"
    text = (
        f"#!{interpreter}\n"
        "# Written by tcu-sim up: run Mosquitto in its own session (see tcu_sim/stack/_broker.py).\n"
        "import os, sys\n"
        "os.setsid()\n"
        f"os.execv({str(binary)!r}, [{str(binary)!r}, *sys.argv[1:]])\n"
    )
    directory.mkdir(parents=True, exist_ok=True)
    if not launcher.is_file() or launcher.read_text(encoding="utf-8") != text:
        launcher.write_text(text, encoding="utf-8")
    launcher.chmod(0o700)
    return launcher


def _mosquitto_version(lines: list[str]) -> str:
    for line in lines:
        match = re.search(r"mosquitto version (\S+) running", line)
        if match:
            return match.group(1)
    return "?"


@contextlib.asynccontextmanager
async def open_broker(
    config: StackConfig, pki: FleetPKI, logins: Mapping[str, str], *, topic_prefix: str = ""
) -> AsyncIterator[BrokerInfo]:
    """Start (or look up) the broker `config` asks for, and stop what was started on exit.

    `logins` are the app listener's users (username → password) of a broker the stack starts.
    """
    try:
        selected = select_broker(config.broker, url=config.broker_url)
    except MosquittoNotFound as exc:
        raise BrokerStartError(str(exc)) from None
    if selected.kind is BrokerKind.EXTERNAL:
        assert config.broker_url is not None  # the config's validator makes sure
        yield _external(config, logins)
        return
    port, app_port, notes = _ports(config)
    if selected.kind is BrokerKind.EMBEDDED:
        if selected.fallback:
            notes = (*notes, "Mosquitto is not installed: running the embedded broker (install mosquitto for the "
                             "reference set-up)")
        async with _embedded(config, pki, logins, port, app_port, topic_prefix, notes) as info:
            yield info
        return
    binary = selected.binary
    assert binary is not None  # select_broker finds the binary of a Mosquitto it selects
    directory = config.state_dir / "broker"
    broker = MosquittoBroker(
        directory, pki, host=config.host, port=port, app_port=app_port, app_users=dict(logins),
        topic_prefix=topic_prefix, binary=_own_session_launcher(directory, binary),
        start_timeout=config.start_timeout_s,
    )
    try:
        await broker.start()
    except MosquittoError as exc:
        raise BrokerStartError(f"{broker.directory}: {exc}") from None
    try:
        assert broker.app_port is not None  # the stack always asks for an app listener
        yield BrokerInfo(
            kind=BrokerKind.MOSQUITTO,
            device=BrokerUrl(broker.host, broker.port, tls=True),
            description=f"Mosquitto {_mosquitto_version(broker.log_lines())} (pid {broker.pid}, "
                        f"config {broker.files.config})",
            ready_at=time.monotonic(),
            apps={u: AppEndpoint(broker.host, broker.app_port, True, u, p) for u, p in logins.items()},
            notes=notes,
            process=broker,
        )
    finally:
        await broker.stop()


@contextlib.asynccontextmanager
async def _embedded(
    config: StackConfig,
    pki: FleetPKI,
    logins: Mapping[str, str],
    port: int,
    app_port: int,
    topic_prefix: str,
    notes: tuple[str, ...],
) -> AsyncIterator[BrokerInfo]:
    from broker.embedded import EmbeddedBroker  # amqtt is slow to import: only when the embedded broker runs

    if not port or not app_port:
        port, app_port = free_ports(config.host, 2)  # amqtt cannot tell which port it got for 0
    broker = EmbeddedBroker(
        config.host, port, pki=pki, app_port=app_port, app_users=dict(logins), topic_prefix=topic_prefix
    )
    try:
        await broker.start()
    except OSError as exc:
        raise BrokerStartError(f"embedded broker on {config.host}:{port}/{app_port}: {exc}") from None
    try:
        yield BrokerInfo(
            kind=BrokerKind.EMBEDDED,
            device=BrokerUrl(config.host, port, tls=True),
            description="embedded amqtt broker (in this process; mutual TLS, app logins and ACLs by its plugins)",
            ready_at=time.monotonic(),
            apps={u: AppEndpoint(config.host, app_port, True, u, p) for u, p in logins.items()},
            limits=EMBEDDED_LIMITS,
            notes=notes,
        )
    finally:
        await broker.stop()


def _external(config: StackConfig, logins: Mapping[str, str]) -> BrokerInfo:
    assert config.broker_url is not None
    try:
        device = parse_broker_url(config.broker_url)
    except ValueError as exc:
        raise BrokerStartError(str(exc)) from None
    apps: dict[str, AppEndpoint] = {}
    notes: list[str] = []
    if config.app_broker_url is not None:
        for username in logins:
            endpoint = _parse_app_url(config.app_broker_url, username, logins)
            apps[endpoint.username] = endpoint
    elif not device.tls:
        # A plaintext broker without logins: apps connect where the cars do, as any client id.
        apps = {u: AppEndpoint(device.host, device.port, False, u, None) for u in logins}
    else:
        notes.append("no --app-broker given: the fleet's users are not set up (apps need the app listener's login)")
    return BrokerInfo(
        kind=BrokerKind.EXTERNAL,
        device=device,
        description=f"existing broker at {device}",
        ready_at=time.monotonic(),
        apps=apps,
        notes=tuple(notes),
    )

