"""tcu-sim: a fleet of simulated connected cars and the cloud they talk to over MQTT.

The public Python API, for scripts and for test suites (the pytest plugin's fixtures are built from it):

    import asyncio
    from tcu_sim import Sandbox

    async def main() -> None:
        async with Sandbox(".tcu-sim/script", broker="auto", seed=7) as sandbox:
            fleet = await sandbox.start_fleet("fleet_configs/demo.yaml")
            user = await sandbox.new_user("alice@example.com")
            await user.enrol(fleet.car("leon"))
            print(await user.command(fleet.car("leon"), "lock"))

    asyncio.run(main())

- `Sandbox`: a broker (Mosquitto, the embedded one, or a URL), the cloud and fleets on one virtual clock.
- `SimBroker`, `SimCloud`, `SimFleet`, `SimCar`, `SimUser`, `SimFaults`, `SimClock`: its parts, with
  await-style helpers (`car.wait_for(locked=True)`, `user.command(car, "unlock")`,
  `cloud.wait_for_command(id, "timed_out")`) whose failures (`WaitTimeout`, `CommandFailed`) explain themselves.
- Fleets without the harness: `load_fleet` / `parse_fleet` → `FleetConfig`, `expand_fleet`, `provision`,
  `StateDir`, `FleetRunner`; the app side: `AppClient`; clocks: `Clock`, `SystemClock`, `VirtualClock`,
  `SkewedClock`.

Names are imported on first use, so `import tcu_sim` stays cheap (the CLI and the pytest plugin load it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tcu_sim._version import __version__
from tcu_sim.clock import Clock, SkewedClock, SystemClock, VirtualClock

if TYPE_CHECKING:
    from tcu_sim.app import AppClient
    from tcu_sim.fleet import FleetConfig, FleetRunner, StateDir, expand_fleet, load_fleet, parse_fleet, provision
    from tcu_sim.protocol import CommandOp, CommandState
    from tcu_sim.testing import (
        BrokerKind,
        CarControlRefused,
        CommandFailed,
        HarnessError,
        HarnessSetupError,
        NotSupported,
        Sandbox,
        SimBroker,
        SimCar,
        SimClock,
        SimCloud,
        SimFaults,
        SimFleet,
        SimUser,
        WaitTimeout,
    )

__all__ = [
    "AppClient",
    "BrokerKind",
    "CarControlRefused",
    "Clock",
    "CommandFailed",
    "CommandOp",
    "CommandState",
    "FleetConfig",
    "FleetRunner",
    "HarnessError",
    "HarnessSetupError",
    "NotSupported",
    "Sandbox",
    "SimBroker",
    "SimCar",
    "SimClock",
    "SimCloud",
    "SimFaults",
    "SimFleet",
    "SimUser",
    "SkewedClock",
    "StateDir",
    "SystemClock",
    "VirtualClock",
    "WaitTimeout",
    "__version__",
    "expand_fleet",
    "load_fleet",
    "parse_fleet",
    "provision",
]


_LAZY: dict[str, str] = {
    "AppClient": "tcu_sim.app",
    "FleetConfig": "tcu_sim.fleet",
    "FleetRunner": "tcu_sim.fleet",
    "StateDir": "tcu_sim.fleet",
    "expand_fleet": "tcu_sim.fleet",
    "load_fleet": "tcu_sim.fleet",
    "parse_fleet": "tcu_sim.fleet",
    "provision": "tcu_sim.fleet",
    "CommandOp": "tcu_sim.protocol",
    "CommandState": "tcu_sim.protocol",
    **{
        name: "tcu_sim.testing"
        for name in (
            "BrokerKind",
            "CarControlRefused",
            "CommandFailed",
            "HarnessError",
            "HarnessSetupError",
            "NotSupported",
            "Sandbox",
            "SimBroker",
            "SimCar",
            "SimClock",
            "SimCloud",
            "SimFaults",
            "SimFleet",
            "SimUser",
            "WaitTimeout",
        )
    },
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tcu_sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
