"""`SimFaults`: break things on purpose in a sandbox — a car's network, the broker, any `tcu_sim.faults` fault.

    await faults.offline(car)                       # the car loses its network (the broker fires its will)
    await faults.online(car)                        # and gets it back (returns once it is online again)
    await faults.inject(car, {"kind": "flaky", "drop_rate": 0.5, "outage_s": 20})
    await faults.broker_kill(); await faults.broker_start()

Car faults go through the fleet's fault layer (`tcu_sim.faults.FleetFaults`, the same one `tcu-sim fault` and
scenario files use); broker faults act on the broker the harness runs (an external broker cannot be broken).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tcu_sim.events import CarConnection, Source, Subscription
from tcu_sim.faults import CarFault, FleetFaults, Injection, parse_fault

from ._errors import HarnessSetupError, NotSupported, WaitTimeout

if TYPE_CHECKING:
    from ._brokers import SimBroker
    from ._cloud import SimCloud
    from ._fleet import SimCar, SimFleet
    from ._user import SimUser

__all__ = ["SimFaults"]


class SimFaults:
    """Fault injection for one sandbox (see the module docstring)."""

    def __init__(
        self,
        broker: SimBroker,
        fleet: SimFleet | None = None,
        *,
        cloud: SimCloud | None = None,
        users: Sequence[SimUser] = (),
    ) -> None:
        self.broker = broker
        self.fleet = fleet
        self.cloud = cloud
        self.users = users
        #: The cloud's connections and the cars' reconnects seen by the time the broker went down, so that
        #: `broker_start` waits for NEW connections (a client that has not noticed the outage yet still looks
        #: connected, and a request sent then is lost).
        self._cloud_connects: int | None = None
        self._outage: Subscription[CarConnection] | None = None

    def __repr__(self) -> str:
        return f"SimFaults(broker={self.broker!r}, fleet={self.fleet!r})"

    @property
    def layer(self) -> FleetFaults | None:
        """The fleet's fault layer, when the fleet runs with one."""
        return self.fleet.fault_layer if self.fleet is not None else None

    @property
    def log(self) -> list[Injection]:
        """Every fault injected so far (by this helper, the fleet file's profiles or zones), oldest first."""
        layer = self.layer
        return list(layer.log.entries) if layer is not None else []

    # --- cars
    def _car(self, car: SimCar | str) -> SimCar:
        if not isinstance(car, str):
            return car
        if self.fleet is None:
            raise HarnessSetupError("no fleet in this sandbox: start one before injecting car faults")
        return self.fleet.car(car)

    async def offline(self, car: SimCar | str, seconds: float | None = None, *, hard: bool = True) -> None:
        """Take the car's network away (for `seconds` of clock time; None: until `online`) and wait until it is
        offline. `hard` (default): the connection just dies and the broker publishes the car's last will."""
        await self._car(car).go_offline(seconds, hard=hard)

    async def online(self, car: SimCar | str, *, wait: bool = True, timeout: float = 10.0) -> None:
        """Give the car its network back; with `wait`, return once it is online again."""
        await self._car(car).go_online(wait=wait, timeout=timeout)

    async def inject(self, car: SimCar | str, fault: Mapping[str, Any] | CarFault) -> bool:
        """Apply any car fault of `tcu_sim.faults` (`{"kind": "flaky", ...}`, `{"kind": "clock_skew", ...}`,
        or a fault model); False when the layer refused it or it repeated an id. Transport faults (latency,
        black_hole, ...) need the fleet started with a fault proxy (`proxy="car"` or `"group"`)."""
        layer = self.layer
        if layer is None:
            raise NotSupported("this fleet runs without a fault layer (tcu_sim.faults); only offline/online work")
        parsed = parse_fault(fault) if isinstance(fault, Mapping) else fault
        return await layer.car(self._car(car).vin).apply(parsed, source="test")

    # --- the broker
    async def broker_stop(self) -> None:
        """Stop the broker cleanly (Mosquitto saves its persistence file; clients lose their connections)."""
        self._mark_outage()
        await self.broker.stop()

    async def broker_kill(self) -> None:
        """Kill the broker (a crash: what Mosquitto has not saved yet is lost)."""
        self._mark_outage()
        await self.broker.kill()

    def _mark_outage(self) -> None:
        if self.cloud is not None:
            self._cloud_connects = self.cloud.handler.stats.connects
        if self.fleet is not None and self._outage is None:
            self._outage = self.fleet.events.subscribe(CarConnection, name="sim-faults.outage")

    async def _wait_back(self, timeout: float) -> None:
        """Every car of the fleet connected again since the outage began (a `CarConnection` online of its own)."""
        outage, self._outage = self._outage, None
        if outage is None or self.fleet is None:
            return
        with outage:
            waiting = {car.vin for car in self.fleet.cars}

            def back(event: CarConnection) -> bool:
                if event.source is Source.FLEET and event.online:
                    waiting.discard(event.vin)
                return not waiting

            try:
                if waiting:
                    await outage.wait_for(back, timeout)
            except TimeoutError:
                raise WaitTimeout(
                    f"{len(waiting)} car(s) did not reconnect to {self.broker.url} within {timeout:g} s: "
                    f"{', '.join(sorted(waiting)[:5])}"
                ) from None

    async def broker_start(self, *, wait: bool = True, timeout: float = 15.0) -> None:
        """Start the broker again on the same ports. With `wait`, return once the cloud and the fleet's cars
        have reconnected (they retry on their own, with backoff) and the app users' apps are connected again."""
        await self.broker.start()
        if not wait:
            return
        if self.cloud is not None:
            try:
                if self._cloud_connects is None:
                    await self.cloud.handler.wait_ready(timeout)
                else:
                    await self.cloud.handler.link.wait_connects(self._cloud_connects + 1, timeout)
            except TimeoutError:
                raise WaitTimeout(
                    f"the cloud did not reconnect to {self.broker.url} within {timeout:g} s "
                    f"({self.cloud.handler.link.last_error})\n{self.broker.log_tail(10)}"
                ) from None
            self._cloud_connects = None
        if self.fleet is not None:
            await self._wait_back(timeout)
            await self.fleet.wait_online(timeout)
        for user in self.users:
            await user.reconnect()  # a phone app opens a new connection; the session token stays valid

    async def broker_restart(self, *, wait: bool = True, timeout: float = 15.0) -> None:
        """Stop and start the broker; with `wait`, return once cloud, cars and apps are back (see `broker_start`)."""
        await self.broker_stop()
        await self.broker_start(wait=wait, timeout=timeout)
