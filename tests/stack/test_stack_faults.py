"""`tcu-sim up` runs its cars through the fault proxy and opens a broker control socket, so the README's fleet
and broker faults (and the dashboard's) work against it: a group latency on the group's route, a broker restart
after which every car comes back."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from stack_kit import WAIT, local_stack

from tcu_sim.events import BrokerAction, CarConnection, Event, Source
from tcu_sim.faults import FaultKind, FaultProxy, FleetFaults, ProxyMode
from tcu_sim.testing.plugin import require_mosquitto
from tcu_sim.transport import Backoff


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_mosquitto()


async def _tcu_sim(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tcu_sim.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_group_latency_and_a_broker_restart_reach_the_running_stack(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with local_stack(state, broker="mosquitto", enrol_users=False) as stack:
        faults = stack.fleet.faults
        assert getattr(faults, "proxy", None) is ProxyMode.GROUP
        leon = [spec.vin for spec in stack.cars if spec.group == "leon"]
        assert leon

        code, out = await _tcu_sim("fault", "--state", str(state), "--group", "leon", "latency", "300ms")
        assert code == 0, out
        assert isinstance(faults, FleetFaults)
        assert isinstance(faults.backend, FaultProxy)  # the stack's in-process proxy, one route per group
        routes = faults.backend.routes
        assert [(t.kind, getattr(t, "latency_ms", None)) for t in routes["leon"].toxics] == [(FaultKind.LATENCY, 300)]
        assert routes["formentor"].toxics == []

        with stack.events.subscribe(CarConnection, BrokerAction, name="test") as seen:
            code, out = await _tcu_sim("fault", "broker", "restart", "--state", str(state))
            assert code == 0, out
            # One pass over the stream: cars may be back before the restart is reported as done.
            back: set[str] = set()
            restarted: list[BrokerAction] = []

            def all_back(event: Event) -> bool:
                if isinstance(event, BrokerAction) and event.action == "restart":
                    restarted.append(event)
                if isinstance(event, CarConnection) and event.source is Source.FLEET and event.online:
                    back.add(event.vin)
                return bool(restarted) and len(back) == len(stack.cars)

            # Back within twice the reconnect backoff's cap (SPEC P4), whatever the machine's load.
            await seen.wait_for(all_back, timeout=2 * Backoff().cap_s + WAIT)
        assert stack.fleet.online_count == len(stack.cars)
