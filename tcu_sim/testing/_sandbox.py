"""`Sandbox`: a broker, the cloud and fleets on one virtual clock — the whole system for one test or script.

    async with Sandbox(tmp_dir, broker="auto", seed=7) as sandbox:
        fleet = await sandbox.start_fleet("fleet_configs/demo.yaml")
        car = fleet.car("leon")
        user = await sandbox.new_user()
        await user.enrol(car)
        assert await user.command(car, "lock") == "succeeded"
        await sandbox.faults.offline(car)
        command_id = await user.send(car, "unlock")
        await sandbox.clock.advance(120)                 # past the command's TTL: the cloud expires it
        await sandbox.cloud.wait_for_command(command_id, "timed_out")

`sandbox.events` is the one `EventStream` its cloud and every fleet it starts publish into (command steps, car
messages applied or refused, connections, ...): `async with sandbox.events.subscribe(CommandChanged) as steps`.

The pytest plugin builds its fixtures (`cloud`, `fleet`, `car`, `app_user`, `faults`, `clock`) from one
`Sandbox` per test. Everything a sandbox writes stays in its directory; ports are picked free; a broker shared
with other sandboxes (a session-wide one, or an external one) gets this sandbox's own cars (VINs derived from
`name`), cloud client id and, on an external broker, topic prefix — so parallel runs never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import secrets
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import yaml

from broker.launch import select_broker
from broker.mosquitto import MosquittoNotFound
from broker.pki import FleetPKI
from tcu_sim.events import EventStream
from tcu_sim.fleet import FleetConfig, FleetConfigError, StateBusy, StateLock, load_fleet, parse_fleet

from ._brokers import BrokerKind, SimBroker
from ._clock import SimClock
from ._cloud import SimCloud
from ._errors import HarnessSetupError
from ._faults import SimFaults
from ._fleet import SimFleet
from ._user import DEFAULT_PASSWORD, DEFAULT_SPIN, SimUser

if TYPE_CHECKING:
    from broker.cloud import CloudConfig
    from broker.handler import HandlerConfig

__all__ = ["DEFAULT_FLEET", "Sandbox", "derive_seed", "resolve_fleet"]

DEFAULT_FLEET = """\
# The fleet a sandbox runs when given none: one car per enrolment method (R5).
name: sandbox
seed: {seed}
defaults:
  status_interval_s: 60s
  home_area:
    center: {{lat: 41.3874, lon: 2.1686}}
    radius_km: 2
groups:
  - name: leon
    count: 1
    model: leon
    equipment: media_system     # two-key owner verification
  - name: ateca
    count: 1
    model: ateca
    equipment: radio            # pairing code
"""


def derive_seed(seed: int, *parts: str) -> int:
    """A seed for one part of a run (a test, a fleet), the same in every run with the same `seed`."""
    digest = hashlib.sha256("\x00".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def resolve_fleet(source: Any, *, seed: int = 0, base: Path | None = None) -> FleetConfig:
    """A `FleetConfig` from a fleet file path, YAML text, a dict, or a `FleetConfig`; None gives `DEFAULT_FLEET`.

    Relative paths are looked up under `base` first. A bad file raises `HarnessSetupError` with the file, the
    line and the path inside it.
    """
    try:
        if source is None:
            return parse_fleet(DEFAULT_FLEET.format(seed=seed), source="<default fleet>")
        if isinstance(source, FleetConfig):
            return source
        if isinstance(source, Mapping):
            return parse_fleet(yaml.safe_dump(dict(source), sort_keys=False), source="<fleet dict>")
        text = os.fspath(source)
        if "\n" in text:
            return parse_fleet(text, source="<fleet text>")
        path = Path(text)
        if not path.is_absolute() and base is not None and (base / path).exists():
            path = base / path
        if not path.exists():
            raise HarnessSetupError(f"{text}: no such fleet file (looked in {base or Path.cwd()})")
        return load_fleet(path)
    except FleetConfigError as exc:
        raise HarnessSetupError(str(exc)) from None


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


class Sandbox:
    """The whole system for one test or script (an async context manager); see the module docstring.

    `broker`: a running `SimBroker` to use (the sandbox does not close it), or which one to start:
    `mosquitto`, `embedded`, `auto` (Mosquitto when installed, else embedded) or an `mqtt://` URL.
    `seed` makes the run repeatable; `name` (a test id) keeps cars and topics of sandboxes that share a broker
    apart while staying the same from run to run. `cloud_config` (`broker.cloud.CloudConfig`) changes the
    cloud's rules (command TTL, S-PIN lock time, ...), `handler_config` its MQTT handler's settings, and
    `registry_url` its registry (default: a SQLite file in `directory`). `events` is the `EventStream` that the
    cloud and every fleet of the sandbox publish into (one per sandbox).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        broker: SimBroker | BrokerKind | str = "auto",
        seed: int = 0,
        name: str | None = None,
        clock: SimClock | None = None,
        topic_prefix: str = "",
        cloud_config: CloudConfig | None = None,
        handler_config: HandlerConfig | None = None,
        registry_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.directory = Path(directory)
        self._broker_choice = broker
        self.seed = seed
        self.name = name if name is not None else secrets.token_hex(6)
        self.clock = clock or SimClock()
        #: What the cloud and the fleets do, as typed events (SPEC §8): subscribe here.
        self.events = EventStream(f"sandbox-{self.name}")
        self.rng = random.Random(derive_seed(seed, self.name, "sandbox"))
        self._topic_prefix = topic_prefix
        self._cloud_config = cloud_config
        self._handler_config = handler_config
        self._registry_url = registry_url
        self.timeout = timeout
        self._broker: SimBroker | None = broker if isinstance(broker, SimBroker) else None
        self._owns_broker = False
        self._cloud: SimCloud | None = None
        self.fleets: list[SimFleet] = []
        self.users: list[SimUser] = []
        self._stack = contextlib.AsyncExitStack()
        self.topic_prefix = topic_prefix

    def __repr__(self) -> str:
        return (
            f"Sandbox({self.name!r}, seed={self.seed}, broker={self._broker!r}, fleets={len(self.fleets)},"
            f" users={len(self.users)}, clock={self.clock!r})"
        )

    # --- parts
    @property
    def broker(self) -> SimBroker:
        """The broker in use."""
        if self._broker is None:
            raise HarnessSetupError("the sandbox is not started")
        return self._broker

    @property
    def cloud(self) -> SimCloud:
        """The cloud (running)."""
        if self._cloud is None:
            raise HarnessSetupError("the sandbox is not started")
        return self._cloud

    @property
    def fleet(self) -> SimFleet:
        """The first fleet started (see `start_fleet`)."""
        if not self.fleets:
            raise HarnessSetupError("no fleet started yet: await sandbox.start_fleet(...)")
        return self.fleets[0]

    @property
    def faults(self) -> SimFaults:
        """Fault injection for the broker and the first fleet's cars."""
        return self.faults_for(self.fleets[0] if self.fleets else None)

    def faults_for(self, fleet: SimFleet | None) -> SimFaults:
        """Fault injection for the broker and `fleet`'s cars (broker restarts reconnect this sandbox's users)."""
        return SimFaults(self.broker, fleet, cloud=self._cloud, users=self.users)

    # --- lifecycle
    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise
        return self

    async def _start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            # One running system per directory, as for `tcu-sim up` (SPEC §7): two sandboxes never share one.
            self._stack.enter_context(StateLock(self.directory, holder="sandbox"))
        except StateBusy as exc:
            raise HarnessSetupError(str(exc)) from None
        if self._broker is None:
            self._broker = await asyncio.to_thread(self._open_broker)
            self._owns_broker = True
        broker = self._broker
        if self._topic_prefix and broker.kind is not BrokerKind.EXTERNAL and self._topic_prefix != broker.topic_prefix:
            raise HarnessSetupError(
                f"topic prefix {self._topic_prefix!r} differs from the broker's ACL prefix {broker.topic_prefix!r}"
            )
        self.topic_prefix = self._topic_prefix or broker.topic_prefix
        if broker.kind is BrokerKind.EXTERNAL:
            # Nobody else's cloud, cars or apps on that broker may see ours: a topic prefix of our own.
            own = f"tcu-sim-{_worker()}-{derive_seed(self.seed, self.name, secrets.token_hex(4)) % 16**8:08x}"
            self.topic_prefix = "/".join(p for p in (own, self.topic_prefix) if p)
        self._cloud = await self._stack.enter_async_context(
            SimCloud(
                broker,
                self.clock,
                self.directory / "cloud",
                rng=random.Random(self.rng.getrandbits(64)),
                topic_prefix=self.topic_prefix,
                config=self._cloud_config,
                handler_config=self._handler_config,
                registry_url=self._registry_url,
                ready_timeout=self.timeout,
                events=self.events,
            )
        )

    def _open_broker(self) -> SimBroker:
        try:
            selected = select_broker(str(self._broker_choice))
        except MosquittoNotFound as exc:
            raise HarnessSetupError(f"Mosquitto did not start: {exc}") from None
        if selected.kind is BrokerKind.EXTERNAL:
            return SimBroker.open(BrokerKind.EXTERNAL, url=selected.url, topic_prefix=self._topic_prefix)
        pki = FleetPKI(self.directory / "pki")
        pki.ensure_ca()
        return SimBroker.open(
            selected.kind,
            directory=self.directory / "broker",
            pki=pki,
            topic_prefix=self._topic_prefix,
            binary=selected.binary,
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        try:
            await self._stack.aclose()
        finally:
            self._cloud = None
            if self._owns_broker and self._broker is not None:
                await asyncio.to_thread(self._broker.close)

    # --- fleets and users
    async def start_fleet(
        self,
        source: Any = None,
        *,
        base: Path | None = None,
        proxy: str = "none",
        online_timeout: float | None = None,
    ) -> SimFleet:
        """Provision and start a fleet (a fleet file path, YAML text, a dict, a `FleetConfig`; None: the default
        fleet of `DEFAULT_FLEET`) and return once its cars are online. `proxy` (`none`, `car`, `group`) routes
        cars through a fault proxy for transport faults."""
        config = resolve_fleet(source, seed=self.seed, base=base)
        if self.broker.shared:
            # Sandboxes on one broker must not share VINs (a VIN is a car's client id and certificate name).
            config = config.model_copy(update={"seed": derive_seed(config.seed, self.name, str(len(self.fleets)))})
        directory = self.directory / f"fleet-{config.name}-{len(self.fleets) + 1}"
        fleet = await self._stack.enter_async_context(
            SimFleet(
                config,
                broker=self.broker,
                clock=self.clock,
                directory=directory,
                cloud=self.cloud,
                topic_prefix=self.topic_prefix,
                online_timeout=online_timeout if online_timeout is not None else max(self.timeout, 15.0),
                proxy=proxy,
                events=self.events,
            )
        )
        self.fleets.append(fleet)
        self.cloud.describe_car = self._describe_car
        return fleet

    def _describe_car(self, vin: str) -> str:
        for fleet in self.fleets:
            if vin in fleet.vins:
                return fleet.describe_car(vin)
        return "not in any fleet of this sandbox"

    async def new_user(
        self,
        email: str | None = None,
        *,
        password: str = DEFAULT_PASSWORD,
        spin: str = DEFAULT_SPIN,
        verified: bool = True,
        logged_in: bool = True,
    ) -> SimUser:
        """A new app user of the cloud: registered with `spin`, e-mail verified and logged in (by default),
        with a connected app. The e-mail defaults to `user<n>@example.com`."""
        email = email or f"user{len(self.users) + 1}@example.com"
        user = await self._stack.enter_async_context(
            SimUser(self.cloud, self.broker, email=email, password=password, spin=spin, timeout=self.timeout)
        )
        await user.sign_up(verify=verified, login=logged_in)
        self.users.append(user)
        return user
