"""The one-command local stack (`tcu-sim up`): broker, cloud, fleet and the fleet file's users in one process.

    config = StackConfig(state_dir=Path(".tcu-sim/demo"))          # broker: Mosquitto if installed, else amqtt
    async with LocalStack(load_fleet("fleet_configs/demo.yaml"), config) as stack:
        stack.timings.all_online_s                                 # broker ready -> every car online
        async with stack.app_client() as app:                      # an app on the app listener
            await app.login("demo@tcu-sim.test", password)
            await app.wait_command(await app.lock(vin, spin), timeout=10)
        stack.commands.recent(5)                                   # each command's way app -> cloud -> car

The live view of `tcu-sim up` renders `stack.snapshot()` (see `_view`).
"""

from __future__ import annotations

from tcu_sim.onboard import EnrolmentOutcome, UserCar

from ._broker import EMBEDDED_LIMITS, AppEndpoint, BrokerInfo, BrokerKind
from ._config import DEFAULT_APP_PORT, DEFAULT_DEVICE_PORT, BrokerChoice, StackConfig
from ._errors import BrokerStartError, EnrolmentError, FleetStartError, StackBusy, StackError
from ._stack import STACK_APP, TERMINAL_APP, TERMINAL_APPS, CarRow, LocalStack, StackEvent, StackSnapshot, StackTimings
from ._trace import CommandLog, CommandStep, CommandTrace
from ._view import LiveView, LoginHelp, PlainView, login_instructions, render, summary_line

__all__ = [
    "DEFAULT_APP_PORT",
    "DEFAULT_DEVICE_PORT",
    "EMBEDDED_LIMITS",
    "STACK_APP",
    "TERMINAL_APP",
    "TERMINAL_APPS",
    "AppEndpoint",
    "BrokerChoice",
    "BrokerInfo",
    "BrokerKind",
    "BrokerStartError",
    "CarRow",
    "CommandLog",
    "CommandStep",
    "CommandTrace",
    "EnrolmentError",
    "EnrolmentOutcome",
    "FleetStartError",
    "LiveView",
    "LocalStack",
    "LoginHelp",
    "PlainView",
    "StackBusy",
    "StackConfig",
    "StackError",
    "StackEvent",
    "StackSnapshot",
    "StackTimings",
    "UserCar",
    "login_instructions",
    "render",
    "summary_line",
]
