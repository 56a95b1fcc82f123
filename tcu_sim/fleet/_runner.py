"""Bring a whole fleet up: one `TcuSession` per car, all driven by one `LinkPool` on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import structlog

from broker.pki import FleetPKI
from tcu_sim._aio import cancel_and_wait
from tcu_sim.clock import Clock
from tcu_sim.events import EventStream
from tcu_sim.fleet._expand import CarSpec
from tcu_sim.fleet._state import StateDir
from tcu_sim.protocol import KeySet, Topics
from tcu_sim.transport import (
    Backoff,
    BrokerAddress,
    ClientCertificate,
    FaultHandler,
    LinkPool,
    SeqStore,
    TcuConfig,
    TcuSession,
)
from tcu_sim.vehicle import Vehicle

__all__ = [
    "BrokerUrl",
    "FleetHook",
    "FleetRunner",
    "NoHook",
    "car_tls_context",
    "parse_broker_url",
    "parse_broker_urls",
]

log = structlog.get_logger("tcu_sim.fleet")


_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed `mqtt://host:port` or `mqtts://host:port` broker address; `username`/`password` only when the URL
    carries them (`mqtts://user:pw@host:port`)."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str, *, default_port: int | None = None) -> BrokerUrl:
    """Parse a broker URL; raises ValueError naming what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{url!r}: use mqtts://HOST:PORT (TLS) or mqtt://HOST:PORT")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a broker URL has no path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number from 1 to 65535") from None
    return BrokerUrl(
        host=parts.hostname,
        port=port or default_port or _DEFAULT_PORTS[scheme],
        tls=scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def parse_broker_urls(urls: str, *, default_port: int | None = None) -> list[BrokerUrl]:
    """Parse `URL1,URL2,...` (the nodes of a broker cluster, tried in that order); ValueError naming the problem.
    All must use the same scheme: a car has one identity, with TLS or without."""
    parsed = [parse_broker_url(url.strip(), default_port=default_port) for url in urls.split(",") if url.strip()]
    if not parsed:
        raise ValueError(f"{urls!r}: no broker URL")
    if len({url.tls for url in parsed}) > 1:
        raise ValueError(f"{urls!r}: mix of mqtts:// and mqtt:// (use one scheme for every node)")
    return parsed


def car_tls_context(ca_cert: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """A client TLS context presenting a car's certificate and trusting only the fleet CA."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
    context.load_cert_chain(str(cert), str(key))
    return context


@dataclass(slots=True)
class FleetStats:
    """Fleet-wide figures for the live view and the benchmark."""

    started_at: float = 0.0
    all_online_after_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- the fleet hook ------------------------------------------------------------------------------------------
# What a fleet run lets take part beside its cars: a `FleetHook`. The fault layer (`tcu_sim.faults.FleetFaults`)
# is one; the fleet knows it only through this interface, so `tcu_sim.fleet` never imports `tcu_sim.faults`.
#
# `FleetRunner` drives the hook through the run:
#
# 1. it makes every car's `TcuSession` with the hook's `fault_handler` (who takes `fault` controls on
#    `sim/{vin}/control`; None: the car refuses them like any control it cannot do);
# 2. `await hook.attach(runner)` before any car connects (the runner's sessions, cars, clock, broker and
#    `events` stream are there to use); an `attach` that fails cleans up after itself;
# 3. `hook.address_for(vin, address)` for where each car connects (a fault proxy's route, or the broker);
# 4. `await hook.detach()` after the cars stopped.
#
# `NoHook` is the default: cars connect straight to the broker and refuse `fault` controls.


class FleetHook(Protocol):
    """Takes part in a fleet run (see the module docstring)."""

    @property
    def fault_handler(self) -> FaultHandler | None:
        """Who takes the cars' `fault` controls (None: they are refused)."""
        ...

    async def attach(self, runner: FleetRunner) -> None:
        """Take part in `runner`'s run, before any car connects."""
        ...

    def address_for(self, vin: str, address: BrokerAddress) -> BrokerAddress:
        """Where car `vin` connects (`address`: the broker's)."""
        ...

    async def detach(self) -> None:
        """Let go of the run, after its cars stopped."""
        ...


class NoHook:
    """Nothing takes part: cars connect straight to the broker and refuse `fault` controls."""

    def __repr__(self) -> str:
        return "NoHook()"

    @property
    def fault_handler(self) -> FaultHandler | None:
        return None

    async def attach(self, runner: FleetRunner) -> None:
        return None

    def address_for(self, vin: str, address: BrokerAddress) -> BrokerAddress:
        return address

    async def detach(self) -> None:
        return None


class FleetRunner:
    """Runs every car of `cars` against one broker until the context exits.

    runner = FleetRunner(cars, state=StateDir(".tcu-sim/demo"), broker=parse_broker_url(url), clock=clock)
    async with runner as fleet:
        await fleet.wait_all_online(timeout=30)

    `faults` is what takes part in the run beside the cars (a `FleetHook`, see above): the fault
    layer `tcu_sim.faults.FleetFaults` applies the cars' connectivity profiles, takes live `fault` controls, and
    may route cars through a fault proxy. None: nothing does (`NoHook`; cars refuse `fault` controls).
    """

    def __init__(
        self,
        cars: Sequence[CarSpec],
        *,
        state: StateDir,
        broker: BrokerUrl | Sequence[BrokerUrl],
        clock: Clock,
        topic_prefix: str = "",
        tls_for: Callable[[str], ssl.SSLContext | ClientCertificate | None] | None = None,
        backoff: Backoff | None = None,
        max_concurrent_handshakes: int = 32,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        keepalive_s: int = 60,
        faults: FleetHook | None = None,
        events: EventStream | None = None,
    ) -> None:
        self.cars = list(cars)
        #: What the fleet's cars report (connects, disconnects, commands, controls): subscribe here.
        self.events = events if events is not None else EventStream("fleet")
        self.state = state
        #: Every node a car may connect to, in order (failover: the next when one is lost); `broker` the first.
        self.brokers = (broker,) if isinstance(broker, BrokerUrl) else tuple(broker)
        if not self.brokers:
            raise ValueError("a fleet needs at least one broker URL")
        self.broker = self.brokers[0]
        self.clock = clock
        self.topics = Topics(topic_prefix)
        self._tls_for = tls_for or (self._pki_tls if self.broker.tls else (lambda _vin: None))
        self._backoff = backoff or Backoff()
        self._pool = LinkPool(max_concurrent_handshakes=max_concurrent_handshakes)
        self._on_event = on_event
        self._keepalive_s = keepalive_s
        self.sessions: dict[str, TcuSession] = {}
        self.stats = FleetStats()
        self._tasks: list[asyncio.Task[None]] = []
        self.faults: FleetHook = faults if faults is not None else NoHook()
        self._exit: contextlib.AsyncExitStack | None = None
        self._pki: FleetPKI | None = None
        self._ca_cert = ""

    def __repr__(self) -> str:
        online = sum(1 for s in self.sessions.values() if s.online)
        return f"FleetRunner(cars={len(self.cars)}, online={online}, broker={self.broker})"

    def _pki_tls(self, vin: str) -> ClientCertificate:
        if self._pki is None:
            self._pki = FleetPKI(self.state.pki_dir)
            self._ca_cert = str(self._pki.ca_cert_path)
        paths = self._pki.paths(vin)
        # Files, not a context per car: the link pool shares contexts between handshakes (~26 KiB a car saved);
        # plain strings and one shared CA path (a Path object per car and file would cost another 1 KiB).
        return ClientCertificate(self._ca_cert, str(paths.cert), str(paths.key))

    async def __aenter__(self) -> FleetRunner:
        # What is started is stopped in reverse, also when a later step fails (a car key missing, the hook's
        # attach failing): the cars, then the hook, then the link pool.
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._pool)
            cloud_keys = KeySet.load(self.state.cloud_jwks_path)
            now = self.clock.now()
            fault_handler = self.faults.fault_handler
            config_cache: dict[float, TcuConfig] = {}
            for car in self.cars:
                interval = car.status_interval_s
                config = config_cache.get(interval)
                if config is None:
                    config = TcuConfig(status_interval_s=interval, backoff=self._backoff, topics=self.topics)
                    config_cache[interval] = config
                rng = car.rng()
                vehicle = Vehicle.new(car.vin, car.model, car.equipment, car.home, rng, now=now)
                session = TcuSession(
                    vehicle,
                    signing_key=self.state.load_car_key(car.vin),
                    cloud_keys=cloud_keys,
                    clock=self.clock,
                    rng=rng,
                    seq_store=SeqStore(self.state.seq_path(car.vin)),
                    config=config,
                    tls=self._tls_for(car.vin),
                    on_event=self._on_event,
                    events=self.events,
                    fault_handler=fault_handler,
                )
                self.sessions[car.vin] = session
            addresses = [BrokerAddress(b.host, b.port, keepalive_s=self._keepalive_s) for b in self.brokers]
            await self.faults.attach(self)  # before any car connects: profiles, fault controls, proxy routes
            stack.push_async_callback(self.faults.detach)  # after the cars: a proxy closed first drops them all
            stack.push_async_callback(self._stop_cars)
            self.stats.started_at = time.monotonic()
            for vin, session in self.sessions.items():
                car_addresses = [self.faults.address_for(vin, address) for address in addresses]
                self._tasks.append(asyncio.create_task(session.run(self._pool, car_addresses), name=f"tcu[{vin}]"))
            self._exit = stack.pop_all()
        log.info("fleet started", cars=len(self.sessions), broker=",".join(map(str, self.brokers)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        exit_stack, self._exit = self._exit, None
        if exit_stack is not None:
            await exit_stack.aclose()
        log.info("fleet stopped", cars=len(self.sessions))

    async def _stop_cars(self) -> None:
        stuck = await cancel_and_wait(self._tasks, timeout=15.0)
        if stuck:
            log.error("fleet: cars not stopping", tasks=len(stuck))
        self._tasks.clear()

    @property
    def online_count(self) -> int:
        return sum(1 for s in self.sessions.values() if s.online)

    async def wait_all_online(self, timeout: float) -> float:
        """Wait until every car is connected; returns the seconds since start. Raises TimeoutError naming how many."""
        try:
            async with asyncio.timeout(timeout):
                for session in self.sessions.values():
                    await session.wait_online(timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{len(self.sessions) - self.online_count} of {len(self.sessions)} cars not online after {timeout}s"
            ) from None
        elapsed = time.monotonic() - self.stats.started_at
        self.stats.all_online_after_s = elapsed
        return elapsed
