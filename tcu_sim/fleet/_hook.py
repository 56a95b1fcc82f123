"""What a fleet run lets take part beside its cars: a `FleetHook`. The fault layer (`tcu_sim.faults.FleetFaults`)
is one; the fleet knows it only through this interface, so `tcu_sim.fleet` never imports `tcu_sim.faults`.

`FleetRunner` drives the hook through the run:

1. it makes every car's `TcuSession` with the hook's `fault_handler` (who takes `fault` controls on
   `sim/{vin}/control`; None: the car refuses them like any control it cannot do);
2. `await hook.attach(runner)` before any car connects (the runner's sessions, cars, clock, broker and
   `events` stream are there to use); an `attach` that fails cleans up after itself;
3. `hook.address_for(vin, address)` for where each car connects (a fault proxy's route, or the broker);
4. `await hook.detach()` after the cars stopped.

`NoHook` is the default: cars connect straight to the broker and refuse `fault` controls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from tcu_sim.transport import BrokerAddress, FaultHandler

if TYPE_CHECKING:  # type only: `_runner` imports this module (a FleetRunner takes a FleetHook)
    from tcu_sim.fleet._runner import FleetRunner

__all__ = ["FleetHook", "NoHook"]


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
