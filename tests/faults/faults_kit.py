"""Helpers for the fault tests: fleets from YAML text, TCU sessions that never touch a network, a replay of a
fleet's faults on a virtual clock, a cloud-side observer, and a tiny TCP echo server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcu_sim.clock import VirtualClock
from tcu_sim.faults import FleetFaults, Injection
from tcu_sim.fleet import (
    BrokerUrl,
    CarSpec,
    FleetConfig,
    FleetRunner,
    StateDir,
    expand_fleet,
    load_fleet,
    parse_fleet,
    provision,
)
from tcu_sim.protocol import KeySet, SigningKey
from tcu_sim.scenario import CloudObserver, Handled
from tcu_sim.testing import Inbox, MosquittoBroker
from tcu_sim.transport import Backoff, SeqStore, TcuConfig, TcuSession
from tcu_sim.vehicle import Vehicle

WAIT = 10.0  # seconds any single wait in these tests may take before it fails

CLOUD_KEY = SigningKey.generate("cloud-1")


def fleet(text: str) -> FleetConfig:
    """A fleet file from YAML text."""
    return parse_fleet(text, source="<test>")


def offline_sessions(config: FleetConfig, clock: VirtualClock) -> tuple[dict[str, TcuSession], list[CarSpec]]:
    """The fleet's TCU sessions, never run: the fault layer can act on them without any network."""
    cars = expand_fleet(config)
    sessions = {}
    for car in cars:
        rng = car.rng()
        vehicle = Vehicle.new(car.vin, car.model, car.equipment, car.home, rng, now=clock.now())
        sessions[car.vin] = TcuSession(
            vehicle,
            signing_key=SigningKey.generate(car.vin),
            cloud_keys=KeySet([CLOUD_KEY.public_key()]),
            clock=clock,
            rng=rng,
            seq_store=SeqStore(None),
            config=TcuConfig(status_interval_s=car.status_interval_s),
        )
    return sessions, cars


async def replay_faults(source: Path | FleetConfig, until_s: float, *, tick_s: float = 0.25) -> list[Injection]:
    """What the fault layer injects into a fleet over `until_s` clock seconds, with no broker and no network
    (profiles and random drops only: the timeline is not run)."""
    config = load_fleet(source) if isinstance(source, Path) else source
    clock = VirtualClock()
    sessions, cars = offline_sessions(config, clock)
    faults = FleetFaults.from_config(config, reconnect_jitter_s=3.0)
    await faults.bind(sessions, cars, clock, ("127.0.0.1", 1))
    try:
        await asyncio.sleep(0)  # let the fault tasks start (and take their first draw) before time moves
        moved = 0.0
        while moved < until_s:
            step = min(tick_s, until_s - moved)
            await clock.advance(step)
            moved += step
    finally:
        await faults.detach()
    return list(faults.log.entries)


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A TCP server on loopback that sends back whatever it receives; yields its port."""
    async with tcp_server(echo=True) as (port, _):
        yield port


@contextlib.asynccontextmanager
async def tcp_server(*, echo: bool = False) -> AsyncIterator[tuple[int, Received]]:
    """A TCP server on loopback recording what it receives (and echoing it when `echo`); yields its port and
    the record."""
    received = Received()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            while data := await reader.read(65536):
                received.add(data)
                if echo:
                    writer.write(data)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            received.closed.set()
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), received
    finally:
        server.close()
        await server.wait_closed()
        for task in list(tasks):  # connections still open: end their handlers here, not at loop shutdown
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Received:
    """The chunks a `tcp_server` read, in order, and an event set when a connection ended."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()

    def add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.changed.set()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    async def wait_for(self, size: int, timeout: float = WAIT) -> bytes:
        """All bytes received once at least `size` have come."""
        async with asyncio.timeout(timeout):
            while len(self.data) < size:
                self.changed.clear()
                await self.changed.wait()
        return self.data


# --- a fleet (and a cloud) on a real broker ---------------------------------------------------------------
@dataclass
class Rig:
    """A fleet on a broker, its fault layer, and a cloud-side observer of what the cars publish."""

    broker: MosquittoBroker
    config: FleetConfig
    clock: VirtualClock
    state: StateDir
    runner: FleetRunner
    faults: FleetFaults
    inbox: Inbox

    @property
    def cars(self) -> list[CarSpec]:
        return self.runner.cars

    def session(self, index: int = 0) -> TcuSession:
        return self.runner.sessions[self.cars[index].vin]

    def received(self, vin: str, kind: str) -> list[bytes]:
        return [m.payload for m in self.inbox.received(f"tcu/{vin}/{kind}") if isinstance(m.payload, bytes)]

    def seqs(self, vin: str) -> list[int]:
        """The seq of every signed message of `vin` the observer received, in arrival order."""
        out = []
        for kind in ("status", "events", "results"):
            out += [claims(token)["seq"] for token in self.received(vin, kind)]
        return out

    async def advance(self, seconds: float, *, step: float = 0.5) -> None:
        """Move the virtual clock in steps, letting the network breathe between them (a paced clock)."""
        moved = 0.0
        while moved < seconds:
            await self.clock.advance(min(step, seconds - moved))
            moved += step
            await asyncio.sleep(0.005)

    async def advance_until(self, done: Callable[[], bool], *, limit: float, step: float = 0.5) -> None:
        """Advance the clock until `done()` (at most `limit` clock seconds); fail otherwise."""
        moved = 0.0
        while not done():
            if moved >= limit:
                raise AssertionError(f"not done after {moved:g} clock seconds")
            await self.advance(step, step=step)
            moved += step


def claims(token: bytes) -> dict[str, Any]:
    """The claims of a token, unverified."""
    part = token.split(b".")[1]
    data = json.loads(base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4)))
    assert isinstance(data, dict)
    return data


@contextlib.asynccontextmanager
async def fleet_rig(
    broker: MosquittoBroker, config: FleetConfig, workdir: Path, faults: FleetFaults | None = None
) -> AsyncIterator[Rig]:
    """The fleet of `config` on `broker` (provisioned in `workdir`, on a virtual clock), with `faults`."""
    clock = VirtualClock()
    state = StateDir(workdir / "state")
    provision(config, state, clock=clock, pki=False)
    faults = faults or FleetFaults.from_config(config, reconnect_jitter_s=2.0)
    runner = FleetRunner(
        expand_fleet(config),
        state=state,
        broker=BrokerUrl(broker.host, broker.port, True),
        clock=clock,
        tls_for=broker.ssl_context,
        backoff=Backoff(base_s=0.05, cap_s=0.5),
        faults=faults,
    )
    async with broker.client("cloud", identifier="faults-observer") as cloud:
        for kind in ("status", "events", "results", "connection"):
            await cloud.subscribe(f"tcu/+/{kind}", qos=1)
        async with Inbox(cloud, name="cloud") as inbox, runner:
            yield Rig(broker, config, clock, state, runner, faults, inbox)


# --- the cloud, for attacks and broker faults -------------------------------------------------------------
@dataclass
class CloudWorld:
    """A fleet, the cloud handler over a fresh SQLite registry, its users enrolled, and a record of every car
    message the cloud handled."""

    rig: Rig
    services: Any
    handler: Any
    observer: CloudObserver
    rejections: asyncio.Queue[dict[str, Any]]

    @property
    def handled(self) -> list[Handled]:
        """Every car message the cloud handled so far, in order."""
        return self.observer.handled

    @property
    def registry(self) -> Any:
        return self.services.registry

    def app(self, username: str = "app-1") -> Any:
        from tcu_sim.app import AppClient

        broker = self.rig.broker
        return AppClient(broker.host, broker.app_port or 0, username, broker.app_password(username),
                         tls_context=broker.ssl_context(None), timeout=WAIT)


@contextlib.asynccontextmanager
async def cloud_world(broker: MosquittoBroker, config: FleetConfig, workdir: Path, *,
                      clock: Any = None) -> AsyncIterator[CloudWorld]:
    """`config`'s fleet and its users on `broker`, with the cloud handler (built by `broker.runtime`) and an
    observer of its event stream."""
    from datetime import UTC, datetime

    from broker.cloud import PasswordHasher, ServerSecret, load_manifest
    from broker.handler import HandlerConfig
    from broker.runtime import BrokerLogin, CloudKeys, cloud_handler, open_services
    from tcu_sim.fleet import select_cars

    clock = clock or VirtualClock()
    state = StateDir(workdir / "state")
    provision(config, state, clock=clock, pki=False)
    cars = expand_fleet(config, today=datetime.fromtimestamp(clock.now(), UTC).date())
    secret = ServerSecret(b"faults test secret, 32 bytes....")
    async with open_services(f"sqlite://{workdir}/cloud.db", clock=clock, secret=secret,
                             vehicles=load_manifest(state.manifest_path), passwords=PasswordHasher.for_tests(),
                             pool_size=4) as services:
        for user in config.users:
            password = user.password.get_secret_value()
            await services.accounts.register(user.email, password, user.spin.get_secret_value())
            mail = (await services.accounts.mailbox_for(user.email))[-1]
            await services.accounts.verify_email(mail.body.split("code=")[1].split()[0].rstrip(")."))
            token = (await services.accounts.login(user.email, password)).token
            for car in select_cars(cars, user.vehicles):
                await services.garage.add_vehicle(token, car.vin, True)
                await services.garage.complete_by_tkov(car.vin, user.email)
        handler = cloud_handler(
            services, HandlerConfig(app_workers=1, reconnect_base_s=0.05, reconnect_cap_s=0.25),
            BrokerLogin(broker.host, broker.port, tls_context=broker.ssl_context("cloud")),
            keys=CloudKeys(state.load_cloud_signing_key(), state.load_fleet_keys(), secret),
        )
        rejections: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def on_event(kind: str, data: dict[str, Any]) -> None:
            if kind == "rejected":
                rejections.put_nowait(data)

        with CloudObserver(handler.events) as observer:
            async with handler:
                await handler.wait_ready(WAIT)
                faults = FleetFaults.from_config(config, reconnect_jitter_s=1.0)
                runner = FleetRunner(cars, state=state, broker=BrokerUrl(broker.host, broker.port, True),
                                     clock=clock, tls_for=broker.ssl_context, backoff=Backoff(base_s=0.05, cap_s=0.5),
                                     faults=faults, on_event=on_event)
                # The handler is `cloud`; the observer needs a cloud identity of its own (client id = CN).
                async with broker.client("cloud-2") as cloud:
                    await cloud.subscribe("tcu/+/status", qos=1)
                    async with Inbox(cloud, name="cloud") as inbox, runner:
                        await runner.wait_all_online(WAIT)
                        rig = Rig(broker, config, clock, state, runner, faults, inbox)
                        yield CloudWorld(rig, services, handler, observer, rejections)
