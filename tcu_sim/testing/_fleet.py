"""`SimFleet` and `SimCar`: a fleet file's cars running against a sandbox's broker, with await-style helpers.

A fleet is provisioned into a state directory of its own (keys, manifest; the certificates come from the
broker's PKI), its cars are imported into the sandbox's cloud (the manifest read by `broker.cloud.load_manifest`,
as `tcu-sim cloud run` reads it), and a `FleetRunner` runs one real `TcuSession` per car on the sandbox's clock,
publishing into the sandbox's `EventStream`. `SimCar` wraps one session:

    await car.wait_for(locked=True, timeout=5)         # the car's own state, as its next status would say
    car.control("open_door", door="front_left")        # what a person at the car does
    await car.go_offline(); await car.go_online()      # the mobile network (through the fault layer)
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiomqtt

from broker.cloud import load_manifest
from tcu_sim.events import EventStream
from tcu_sim.faults import CarFaults, FleetFaults, ProxyMode
from tcu_sim.fleet import (
    BrokerUrl,
    CarSpec,
    ConnectivityProfile,
    FleetConfig,
    FleetError,
    FleetRunner,
    StateDir,
    expand_fleet,
    provision,
    select_cars,
)
from tcu_sim.protocol import ControlAction, ControlMessage, ProtocolError, StatusSnapshot, encode_json, parse_body
from tcu_sim.transport import Backoff, TcuSession
from tcu_sim.vehicle import Vehicle

from ._describe import at, describe_conditions, describe_status, status_value
from ._errors import CarControlRefused, HarnessSetupError, WaitTimeout

if TYPE_CHECKING:
    from ._brokers import SimBroker
    from ._clock import SimClock
    from ._cloud import SimCloud

__all__ = ["SimCar", "SimFleet"]

Predicate = Callable[[StatusSnapshot], bool]
_FOREVER = 86_400.0  # "no timeout of its own": the caller's timeout ends the wait


class SimCar:
    """One running car of a `SimFleet`: its spec, its TCU session, and helpers that wait and act."""

    def __init__(self, fleet: SimFleet, spec: CarSpec, session: TcuSession) -> None:
        self.fleet = fleet
        self.spec = spec
        self.session = session
        self.vin = spec.vin

    def __repr__(self) -> str:
        spec = self.spec
        where = f"{spec.group}[{spec.group_index}]"
        state = "online" if self.online else "offline"
        return f"SimCar({self.vin}, {spec.model.value}/{spec.equipment.value}, {where}, {state})"

    # --- what the car is
    @property
    def model(self) -> str:
        """The model (`leon`, `ateca`, ...)."""
        return self.spec.model.value

    @property
    def group(self) -> str:
        """The fleet file group the car belongs to."""
        return self.spec.group

    @property
    def vehicle(self) -> Vehicle:
        """The pure vehicle model inside the TCU."""
        return self.session.vehicle

    @property
    def online(self) -> bool:
        """True while the TCU is connected and subscribed."""
        return self.session.online

    def status(self) -> StatusSnapshot:
        """The car's status now (what its next status message would carry)."""
        session = self.session
        return session.vehicle.snapshot(self.fleet.clock.now(), online=session.online, signal_pct=session.signal_pct)

    def describe(self) -> str:
        """One line: online or not, and the status (`locked=False (doors open: front_left), ...`)."""
        stats = self.session.stats
        return (
            f"{describe_status(self.status().model_dump(mode='json'))}; "
            f"commands accepted {stats.commands_accepted}, rejected {stats.commands_rejected}"
            + (f" {stats.rejected_by_reason}" if stats.rejected_by_reason else "")
            + f", controls refused {stats.controls_refused}, outbox {len(self.session.outbox)}"
        )

    # --- waiting
    async def wait_for(
        self, predicate: Predicate | None = None, *, timeout: float = 5.0, **conditions: Any
    ) -> StatusSnapshot:
        """Wait until the car's status satisfies `predicate` and every condition; return that status.

        Conditions are status fields (`locked=True`, `ignition="off"`, `privacy_mode="max"`), nested ones with
        `__` (`doors__front_left__open=False`, `aux_heating__state="heating"`), and `online=True/False` (the
        TCU's connection). `WaitTimeout` after `timeout` real seconds shows what differed and the last status.
        """
        wanted = [(name.replace("__", "."), value) for name, value in conditions.items()]
        session = self.session

        def mismatches(snapshot: StatusSnapshot) -> list[str]:
            data = snapshot.model_dump(mode="json")
            wrong = []
            for path, value in wanted:
                if path == "online":
                    actual: Any = session.online
                else:
                    try:
                        actual = status_value(data, path)
                    except KeyError:
                        raise ValueError(f"wait_for: the status has no field {path!r}") from None
                expected = value.value if hasattr(value, "value") else value
                if actual != expected:
                    wrong.append(f"{path} is {actual!r}")
            if predicate is not None and not predicate(snapshot):
                wrong.append(f"{getattr(predicate, '__name__', 'predicate')} is false")
            return wrong

        try:
            async with asyncio.timeout(timeout):
                while True:
                    snapshot = self.status()
                    if not mismatches(snapshot):
                        return snapshot
                    await _first(session.wait_for_change(), _connection_change(session))
        except TimeoutError:
            snapshot = self.status()
            goal = describe_conditions(wanted) + (" and the predicate" if predicate is not None else "")
            raise WaitTimeout(
                f"car {self.vin} ({self.model}): not {goal} within {timeout:g} s: {'; '.join(mismatches(snapshot))}\n"
                f"  last status ({'online' if session.online else 'offline'}, clock {at(self.fleet.clock.now())}): "
                f"{self.describe()}"
            ) from None

    async def wait_online(self, timeout: float = 10.0) -> None:
        """Wait until the TCU is connected and subscribed; `WaitTimeout` says why it may not be."""
        try:
            await self.session.wait_online(timeout)
        except TimeoutError:
            raise WaitTimeout(
                f"car {self.vin}: not online within {timeout:g} s (last disconnect: "
                f"{self.session.stats.last_disconnect_reason or 'none'}; broker {self.fleet.broker!r})\n"
                f"{self.fleet.broker.log_tail(10)}"
            ) from None

    async def wait_offline(self, timeout: float = 10.0) -> None:
        """Wait until the TCU has lost its connection."""
        try:
            await self.session.wait_offline(timeout)
        except TimeoutError:
            raise WaitTimeout(f"car {self.vin}: still online after {timeout:g} s") from None

    # --- acting at the car
    def control(self, action: ControlAction | str, **params: Any) -> None:
        """Do what a person at the car does (`open_door`, `tkov`, `enter_pairing_code`, ...; see
        `ControlAction`), through the same path as `sim/{vin}/control`. `CarControlRefused` says why the car
        would not (a door open, the wrong enrolment method, ...)."""
        try:
            message = parse_body(ControlMessage, {"action": str(action), "params": params})
        except ProtocolError as exc:
            raise CarControlRefused(f"car {self.vin}: bad control {action!r}: {exc.detail}") from None
        session = self.session
        before = session.stats.controls_refused
        probe = copy.deepcopy(session.vehicle)  # to learn why, should the car refuse it (it only logs why)
        session.handle_control(encode_json(message.model_dump(mode="json")))
        if session.stats.controls_refused > before:
            reason = "refused"
            try:
                probe.control(message.action, dict(message.params), self.fleet.clock.now())
            except Exception as exc:  # the vehicle's own refusal, whatever its type
                reason = str(exc)
            raise CarControlRefused(f"car {self.vin} ({self.model}): {message.action.value}: {reason}")

    def open_door(self, door: str = "front_left") -> None:
        """Open a door (`front_left`, ..., `trunk`, `hood`)."""
        self.control(ControlAction.OPEN_DOOR, door=door)

    def close_door(self, door: str = "front_left") -> None:
        """Close a door."""
        self.control(ControlAction.CLOSE_DOOR, door=door)

    async def go_offline(self, seconds: float | None = None, *, hard: bool = True, timeout: float = 10.0) -> None:
        """Lose the mobile network (for `seconds` of clock time; None: until `go_online`) and wait until the
        car is offline. A hard drop makes the broker publish the car's last will."""
        faults = self.faults
        if faults is not None:
            faults.hold("operator", seconds, hard=hard)
        else:
            self.session.go_offline(seconds, hard=hard)
        await self.wait_offline(timeout)

    async def go_online(self, *, wait: bool = True, timeout: float = 10.0) -> None:
        """The network is back: the car reconnects at once (and, with `wait`, this returns once it is online)."""
        faults = self.faults
        if faults is not None:
            faults.release("operator")
        else:
            self.session.go_online()
        if wait:
            await self.wait_online(timeout)

    @property
    def faults(self) -> CarFaults | None:
        """The car's fault state in the fleet's fault layer (`tcu_sim.faults`), when it has one."""
        layer = self.fleet.fault_layer
        return layer.car(self.vin) if layer is not None else None


class SimFleet:
    """A fleet file's cars running on a sandbox's broker and clock (an async context manager).

    `cars` in fleet order; `car(0)`, `car("leon")`, `car("leon[1]")` or `car(vin)` picks one; `select(...)`
    takes fleet-file selectors. `runner` is the `FleetRunner`, `state` the provisioned `StateDir`, `events` the
    `EventStream` its cars publish into (the sandbox's; a stream of its own when none is given).
    """

    def __init__(
        self,
        config: FleetConfig,
        *,
        broker: SimBroker,
        clock: SimClock,
        directory: Path,
        cloud: SimCloud | None = None,
        topic_prefix: str = "",
        online_timeout: float = 15.0,
        reconnect_jitter_s: float = 0.0,
        proxy: str = "none",
        events: EventStream | None = None,
    ) -> None:
        self.config = config
        #: What the cars do (connects, commands, controls), as typed events: subscribe here.
        self.events = events if events is not None else EventStream(f"sim-fleet-{config.name}")
        self.broker = broker
        self.clock = clock
        self.directory = Path(directory)
        self.cloud = cloud
        self.topic_prefix = topic_prefix
        self.online_timeout = online_timeout
        self.reconnect_jitter_s = reconnect_jitter_s
        self.proxy = proxy
        self.cars: list[SimCar] = []
        self._runner: FleetRunner | None = None
        self._state: StateDir | None = None

    def __repr__(self) -> str:
        online = sum(1 for car in self.cars if car.online)
        return f"SimFleet({self.config.name!r}, cars={len(self.cars)}, online={online}, broker={self.broker.url})"

    @property
    def runner(self) -> FleetRunner:
        """The running `FleetRunner`."""
        if self._runner is None:
            raise HarnessSetupError("the fleet is not running")
        return self._runner

    @property
    def state(self) -> StateDir:
        """The provisioned state directory (keys, manifest)."""
        if self._state is None:
            raise HarnessSetupError("the fleet is not provisioned yet")
        return self._state

    @property
    def fault_layer(self) -> FleetFaults | None:
        """The runner's fault layer (`tcu_sim.faults.FleetFaults`), when the runner has one."""
        layer = self._runner.faults if self._runner is not None else None
        return layer if isinstance(layer, FleetFaults) else None

    @property
    def vins(self) -> list[str]:
        """Every VIN, in fleet order."""
        return [car.vin for car in self.cars]

    async def __aenter__(self) -> Self:
        if self.config.topic_prefix and self.config.topic_prefix != self.broker.topic_prefix:
            raise HarnessSetupError(
                f"fleet {self.config.name!r} uses topic_prefix {self.config.topic_prefix!r} but the test broker "
                f"is configured for {self.broker.topic_prefix!r}: set `tcu_topic_prefix = "
                f"{self.config.topic_prefix}` in the pytest ini options (or pass topic_prefix to the Sandbox)"
            )
        state = StateDir(self.directory)
        if self.cloud is not None:
            self.cloud.install_key(state)
        await asyncio.to_thread(provision, self.config, state, clock=self.clock, pki=False)
        self._state = state
        today = dt.datetime.fromtimestamp(self.clock.now(), dt.UTC).date()
        specs = expand_fleet(self.config, today=today)
        if self.cloud is not None:
            await self.cloud.add_cars(load_manifest(state.manifest_path), state.load_fleet_keys())
        runner = FleetRunner(
            specs,
            state=state,
            broker=BrokerUrl(self.broker.host, self.broker.port, self.broker.tls),
            clock=self.clock,
            topic_prefix=self.topic_prefix,
            tls_for=self.broker.device_tls,
            backoff=Backoff(base_s=0.05, cap_s=1.0),
            faults=self._fault_layer(),
            events=self.events,
        )
        await runner.__aenter__()
        self._runner = runner
        self.cars = [SimCar(self, spec, runner.sessions[spec.vin]) for spec in specs]
        try:
            await self.wait_online(self.online_timeout)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    def _fault_layer(self) -> FleetFaults:
        return FleetFaults.from_config(
            self.config,
            broker=self.broker if self.broker.controllable else None,
            proxy=ProxyMode(self.proxy),
            reconnect_jitter_s=self.reconnect_jitter_s,
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.__aexit__(exc_type, exc, tb)
        if self.broker.shared and self.broker.running:
            await self._forget_cars()

    async def _forget_cars(self) -> None:
        """On a broker other tests use too: clear this fleet's retained messages and persistent sessions, so
        a later cloud on the broker does not receive cars it does not know."""
        fresh: dict[str, Any] = {"clean_start": True} if self.broker.mqtt_version == "5" else {"clean_session": True}
        for car in self.cars:
            topics = car.session.config.topics
            try:
                async with asyncio.timeout(5), self.broker.client(car.vin, **fresh) as client:
                    for topic in (topics.status(car.vin), topics.connection(car.vin)):
                        await client.publish(topic, b"", qos=1, retain=True)
            except (aiomqtt.MqttError, TimeoutError, OSError):
                continue  # best effort: a leftover is refused (unknown_key) by the next cloud, nothing worse

    async def wait_online(self, timeout: float = 15.0) -> None:
        """Wait until every car that should have a signal is online (not those of the `offline` profile, nor
        those a fault holds offline); `WaitTimeout` names the ones that are not."""
        layer = self.fault_layer
        held = {vin for vin, car in layer.cars.items() if car.offline} if layer is not None else set()
        expected = [
            c
            for c in self.cars
            if c.spec.connectivity.profile is not ConnectivityProfile.OFFLINE and c.vin not in held
        ]
        try:
            async with asyncio.timeout(timeout):
                for car in expected:
                    await car.session.wait_online(timeout)
        except TimeoutError:
            missing = [c.vin for c in expected if not c.online]
            raise WaitTimeout(
                f"fleet {self.config.name!r}: {len(missing)} of {len(expected)} cars not online within "
                f"{timeout:g} s: {', '.join(missing[:10])}; broker {self.broker!r}\n{self.broker.log_tail(10)}"
            ) from None

    # --- picking cars
    def car(self, which: int | str = 0) -> SimCar:
        """A car by position (`0`), VIN, group (its first car) or selector (`leon[1]`)."""
        if isinstance(which, int):
            return self.cars[which]
        for car in self.cars:
            if car.vin == which:
                return car
        if any(car.group == which for car in self.cars):
            return next(car for car in self.cars if car.group == which)
        picked = self.select(which)
        return picked[0]

    def select(self, *selectors: str) -> list[SimCar]:
        """The cars matching fleet-file selectors (`all`, `leon`, `leon[0:2]`, a VIN), in fleet order."""
        try:
            specs = select_cars([car.spec for car in self.cars], list(selectors))
        except FleetError as exc:
            raise HarnessSetupError(f"fleet {self.config.name!r}: {exc}") from None
        chosen = {spec.vin for spec in specs}
        return [car for car in self.cars if car.vin in chosen]

    def describe_car(self, vin: str) -> str:
        """The car's own one-line description (see `SimCar.describe`)."""
        for car in self.cars:
            if car.vin == vin:
                return car.describe()
        return "not in this fleet"


async def _connection_change(session: TcuSession) -> None:
    """Return when the session's connection flips (online → offline or back)."""
    if session.online:
        await session.wait_offline(_FOREVER)
    else:
        await session.wait_online(_FOREVER)


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
