"""`tcu-sim cloud ...`: run the cloud's MQTT handler; read its registry (audit log, simulated mailbox).

    tcu-sim cloud run --broker mqtts://localhost:8883 --state .tcu-sim/demo
    tcu-sim cloud audit --state .tcu-sim/demo --limit 20
    tcu-sim cloud mailbox alice@example.com --state .tcu-sim/demo

From the state directory (`tcu-sim fleet provision`) the cloud takes its signing key, the fleet JWKS, the vehicle
manifest (imported into the registry on every start: factory data and each car's free licence year) and, for
`mqtts://`, its certificate (`pki/identities/cloud.crt`) and the fleet CA. The registry defaults to
`sqlite://<state>/cloud/registry.db`; the server secret (the S-PIN and pairing-code HMAC key) is kept in
`<state>/cloud/server.secret` (created on first start, mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from broker.cloud import CloudConfig, ManifestError, ServerSecret, read_manifest
from broker.handler import HandlerConfig
from broker.http import HttpApi, serve_http
from broker.pki import FleetPKI, IdentityKind, InvalidIdentityName, PKIError, identity_kind
from broker.registry import AuditRecord, MailRecord, Registry, RegistryError, VehicleRecord, open_registry
from broker.runtime import BrokerLogin, CloudKeys, CloudSite, open_cloud
from tcu_sim.cli._broker_url import BrokerUrl, parse_broker_url, tls_context
from tcu_sim.cli._metrics import metrics_option, serve_metrics
from tcu_sim.cli._state import hold_state
from tcu_sim.clock import SystemClock
from tcu_sim.events import EventStream
from tcu_sim.fleet import StateDir, StateDirError

__all__ = ["cloud", "load_server_secret", "vehicle_records"]

T = TypeVar("T")

cloud = click.Group("cloud", help="The cloud: run its MQTT handler; read its registry (audit log, mailbox).")

_STATE = click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".tcu-sim/demo"),
    show_default=True,
    help="Provisioned state directory (tcu-sim fleet provision).",
)
_DB = click.option("--db", "db_url", default=None, help="Registry URL (default: sqlite://<state>/cloud/registry.db).")


def _db_url(db_url: str | None, state_dir: Path) -> str:
    return db_url or f"sqlite://{(state_dir / 'cloud' / 'registry.db').absolute()}"


def load_server_secret(path: Path) -> bytes:
    """The cloud's server secret, created (32 random bytes, mode 0600) when missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        return data
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read the server secret: {exc.strerror or exc}") from None
    if len(data) < 16:
        raise click.ClickException(f"{path}: the server secret must have at least 16 bytes")
    return data


def vehicle_records(state_dir: Path) -> tuple[list[VehicleRecord], str]:
    """The registry's vehicle records from the state's manifest (`broker.cloud.read_manifest`: the free licence
    year starts at midnight UTC of the registration day), and the fleet's topic prefix."""
    path = StateDir(state_dir).manifest_path
    if not path.is_file():
        raise click.ClickException(
            f"{path}: missing vehicle manifest;"
            f" provision first (tcu-sim fleet provision FLEET.yaml --state {state_dir})"
        )
    try:
        manifest = read_manifest(path)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    return manifest.vehicles, manifest.topic_prefix


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run until the coroutine ends, Ctrl-C or SIGTERM (then every context is left in order)."""

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None  # we are inside asyncio.run
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await coro

    asyncio.run(guarded())


def _with_registry(db_url: str, job: Callable[[Registry], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_registry(db_url) as registry:
            return await job(registry)

    try:
        return asyncio.run(main())
    except RegistryError as exc:
        raise click.ClickException(f"{db_url.split('@')[-1]}: {exc}") from None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@cloud.command("run")
@click.option("--broker", "broker_url", default="mqtts://localhost:8883", show_default=True,
              help="mqtts://HOST:PORT (mutual TLS as `cloud`) or mqtt://HOST:PORT.")
@_DB
@_STATE
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CA certificate (default: <state>/pki/ca.crt).")
@click.option("--cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Client certificate (default: <state>/pki/identities/cloud.crt).")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Client key (default: <state>/pki/identities/cloud.key).")
@click.option("--username", default=None, help="MQTT username (a broker with password login).")
@click.option("--mqtt-password", default=None, envvar="TCU_SIM_CLOUD_MQTT_PASSWORD",
              help="MQTT password (or TCU_SIM_CLOUD_MQTT_PASSWORD).")
@click.option("--client-id", default="cloud", show_default=True,
              help="MQTT client id, one per cloud process: cloud, cloud-2, ... With TLS it is also the certificate "
                   "used (the broker forces the client id to the certificate's CN).")
@click.option("--shared-subscriptions/--no-shared-subscriptions", default=False, show_default=True,
              help="MQTT 5 shared subscriptions ($share/cloud/...), to run several cloud processes.")
@click.option("--mqtt-apps/--no-mqtt-apps", default=True, show_default=True,
              help="Answer app requests over MQTT. On a broker without shared subscriptions (NATS) give exactly "
                   "one cloud process --mqtt-apps, or each request is answered by all (docs/scale-out.md).")
@click.option("--mqtt-version", type=click.Choice(["5", "3.1.1"]), default="5", show_default=True)
@click.option("--topic-prefix", default=None, help="Topic prefix (default: the fleet's, from the manifest).")
@click.option("--time-scale", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Simulated seconds per real second (licence reminders, TTLs, lockouts run faster).")
@click.option("--command-ttl", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds a command may wait for its car.")
@click.option("--verify-processes", type=click.IntRange(min=0, max=64), default=0, show_default=True,
              help="Worker processes verifying car statuses beside the event loop (0: on the loop).")
@click.option("--session-expiry", type=click.IntRange(min=0), default=3600, show_default=True,
              help="Seconds the broker keeps the cloud's session (and queues its messages) while it is away.")
@click.option("--http", "http_address", default=None, metavar="HOST:PORT",
              help="Also serve the app API over HTTP here (docs/http-api.md), e.g. 127.0.0.1:8080.")
@metrics_option
def run_command(
    broker_url: str,
    metrics_port: int | None,
    db_url: str | None,
    state_dir: Path,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    username: str | None,
    mqtt_password: str | None,
    client_id: str,
    shared_subscriptions: bool,
    mqtt_apps: bool,
    mqtt_version: str,
    topic_prefix: str | None,
    time_scale: float,
    command_ttl: float,
    session_expiry: int,
    verify_processes: int,
    http_address: str | None,
) -> None:
    """Run the cloud against --broker until Ctrl-C: verify and apply what cars send, answer apps, send commands."""
    broker = parse_broker_url(broker_url)
    http = _http_address(http_address) if http_address is not None else None
    state = StateDir(state_dir)
    # One cloud per client id on a state directory, beside its fleet; never beside a whole `up` (exit 2).
    role = "cloud-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in client_id)[:64]
    lock = hold_state(state_dir, "cloud run", role=role)
    try:
        cloud_key = state.load_cloud_signing_key()
        fleet_keys = state.load_fleet_keys()
    except StateDirError as exc:
        raise click.ClickException(str(exc)) from None
    vehicles, manifest_prefix = vehicle_records(state_dir)
    secret = ServerSecret(load_server_secret(state.cloud_dir / "server.secret"))
    tls = _cloud_tls(broker, state_dir, ca, cert, key, client_id)
    try:
        config = HandlerConfig(
            topic_prefix=manifest_prefix if topic_prefix is None else topic_prefix,
            client_id=client_id,
            shared_subscriptions=shared_subscriptions,
            mqtt_apps=mqtt_apps,
            protocol="5" if mqtt_version == "5" else "3.1.1",
            session_expiry_s=session_expiry,
            verify_processes=verify_processes,
        )
    except ValueError as exc:
        raise click.ClickException(f"--shared-subscriptions: {exc}") from None
    db = _db_url(db_url, state_dir)
    site = CloudSite(
        registry_url=db,
        broker=BrokerLogin(
            broker.host, broker.port, tls_context=tls, username=username or broker.username,
            password=mqtt_password or broker.password,
        ),
        handler=config,
        cloud=CloudConfig(command_ttl_s=command_ttl),
    )
    keys = CloudKeys(cloud_key, fleet_keys, secret)
    clock = SystemClock(scale=time_scale)

    async def main() -> None:
        events = EventStream("cloud")  # one stream, subscribed by the metrics before the cloud starts
        async with (
            serve_metrics(metrics_port, events, cloud=lambda: handler.stats),
            open_cloud(site, clock=clock, keys=keys, vehicles=vehicles, events=events) as handler,
        ):
            click.echo(f"cloud: {len(vehicles)} cars, registry {db.split('@')[-1]}, broker {broker}", err=True)
            try:
                await handler.wait_ready(config.connect_timeout_s * 3)
                click.echo("cloud: connected and subscribed; Ctrl-C stops", err=True)
            except TimeoutError:
                click.echo(f"cloud: broker not reachable yet ({handler.link.last_error}); retrying", err=True)
            if http is None:
                await asyncio.Event().wait()  # until Ctrl-C / SIGTERM cancels us
                return
            api = HttpApi(handler)
            try:
                async with serve_http(api.app, *http) as server:
                    click.echo(f"cloud: app API on {server.url}/api/v1/ (OpenAPI: {server.url}/openapi.json)", err=True)
                    await asyncio.Event().wait()
            except OSError as exc:
                raise click.ClickException(f"--http {http_address}: {exc.strerror or exc}") from None
            finally:
                api.close()

    try:
        _run(main())
    except RegistryError as exc:
        raise click.ClickException(f"{db.split('@')[-1]}: {exc}") from None
    finally:
        lock.release()


def _http_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{value[:80]!r}: expected HOST:PORT, e.g. 127.0.0.1:8080", param_hint="--http")
    return host.strip("[]"), int(port)


def _cloud_tls(
    broker: BrokerUrl, state_dir: Path, ca: Path | None, cert: Path | None, key: Path | None, client_id: str
) -> ssl.SSLContext | None:
    if not broker.tls:
        return None
    if cert is None or key is None:
        # The broker makes the client id the certificate's CN (SPEC §7): cloud process `cloud-2` needs the
        # `cloud-2` certificate, or it would replace the connection of the process holding `cloud`.
        try:
            is_cloud = identity_kind(client_id) is IdentityKind.CLOUD
        except InvalidIdentityName:
            is_cloud = False
        if not is_cloud:
            raise click.BadParameter(
                f"{client_id[:70]!r} is not a cloud identity: use cloud, cloud-2, cloud-3, ... (or --cert/--key)",
                param_hint="--client-id",
            )
        fleet_pki = FleetPKI(state_dir / "pki")
        if fleet_pki.has_ca():
            # This process's own certificate, issued when missing (where the CA key is not here, it must be given).
            with contextlib.suppress(PKIError):
                fleet_pki.ensure_cloud(client_id)
    pki = state_dir / "pki"
    ca = ca or pki / "ca.crt"
    cert = cert or pki / "identities" / f"{client_id}.crt"
    key = key or pki / "identities" / f"{client_id}.key"
    hint = f"tcu-sim pki issue {client_id} --state {state_dir}, or --ca/--cert/--key"
    for path, what in ((ca, "CA certificate"), (cert, "cloud certificate"), (key, "cloud key")):
        if not path.is_file():
            raise click.ClickException(f"{path}: missing {what} ({hint})")
    return tls_context(ca=ca, cert=cert, key=key)


@cloud.command("audit")
@_DB
@_STATE
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest entries to show.")
@click.option("--vin", default=None, help="Only this car.")
@click.option("--email", default=None, help="Only this user.")
def audit_command(db_url: str | None, state_dir: Path, limit: int, vin: str | None, email: str | None) -> None:
    """Print the newest entries of the cloud's audit log (oldest first)."""

    async def job(registry: Registry) -> list[AuditRecord]:
        user_id = None
        if email is not None:
            user = await registry.get_user_by_email(email)
            if user is None:
                raise click.ClickException(f"{email}: no such user")
            user_id = user.id
        return await registry.list_audit(limit=limit, user_id=user_id, vin=vin)

    entries = _with_registry(_db_url(db_url, state_dir), job)
    for e in entries:
        detail = " ".join(f"{k}={v}" for k, v in sorted(e.detail.items()))
        who = f" user={e.user_id}" if e.user_id else ""
        car = f" vin={e.vin}" if e.vin else ""
        click.echo(f"{_when(e.at)}  {e.action:<28} {e.outcome:<9}{who}{car} {detail}".rstrip())
    if not entries:
        click.echo("(no audit entries)", err=True)


@cloud.command("mailbox")
@click.argument("email")
@_DB
@_STATE
def mailbox_command(email: str, db_url: str | None, state_dir: Path) -> None:
    """Print the simulated e-mails sent to EMAIL (verification links, notices), oldest first."""

    async def job(registry: Registry) -> list[MailRecord]:
        return await registry.list_mail(email)

    mails = _with_registry(_db_url(db_url, state_dir), job)
    for m in mails:
        click.echo(f"--- {_when(m.at)}  to {m.to}\nSubject: {m.subject}\n\n{m.body}\n")
    if not mails:
        click.echo(f"(no mail for {email})", err=True)
