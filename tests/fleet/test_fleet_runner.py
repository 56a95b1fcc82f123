"""The fleet runner and its hook: what takes part in a run is attached before the cars connect and detached
after them, a run that fails to start leaves nothing running, and without a hook cars refuse `fault` controls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tcu_sim.clock import VirtualClock
from tcu_sim.fleet import (
    BrokerUrl,
    FleetHook,
    FleetRunner,
    NoHook,
    StateDir,
    StateDirError,
    expand_fleet,
    parse_fleet,
    provision,
)
from tcu_sim.protocol import encode_json
from tcu_sim.transport import Backoff, BrokerAddress, FaultHandler, TcuSession

FLEET = """
name: runner-test
seed: 3
defaults:
  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 1}
groups:
  - {name: leon, count: 3, model: leon, equipment: media_system}
"""

NOWHERE = BrokerUrl("127.0.0.1", 1, False)  # nothing listens: the cars keep trying, which is all these tests need


class RecordingHook:
    """A hook that records what the runner asks of it, and fails where told to."""

    def __init__(self, *, fail_attach: bool = False, fail_address_of: int | None = None) -> None:
        self.calls: list[str] = []
        self.faults: list[tuple[str, dict[str, Any]]] = []
        self.fail_attach = fail_attach
        self.fail_address_of = fail_address_of
        self.running_cars_at_detach: int | None = None
        self._runner: FleetRunner | None = None

    @property
    def fault_handler(self) -> FaultHandler:
        return self._fault

    def _fault(self, session: TcuSession, params: dict[str, Any]) -> None:
        self.faults.append((session.vin, params))

    async def attach(self, runner: FleetRunner) -> None:
        self.calls.append(f"attach {len(runner.sessions)} sessions")
        if self.fail_attach:
            raise RuntimeError("attach failed")
        self._runner = runner

    def address_for(self, vin: str, address: BrokerAddress) -> BrokerAddress:
        self.calls.append(f"address {vin}")
        if self.fail_address_of is not None and len(self.calls) - 1 == self.fail_address_of + 1:
            raise RuntimeError("no route")
        return address

    async def detach(self) -> None:
        self.calls.append("detach")
        self.running_cars_at_detach = len(_tasks("tcu["))


def _tasks(prefix: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done()]


def _runner(tmp_path: Path, hook: FleetHook | None = None) -> FleetRunner:
    config = parse_fleet(FLEET, source="<test>")
    state = StateDir(tmp_path / "state")
    provision(config, state, clock=VirtualClock(), pki=False)
    return FleetRunner(
        expand_fleet(config), state=state, broker=NOWHERE, clock=VirtualClock(), backoff=Backoff(base_s=5, cap_s=5),
        faults=hook,
    )


async def test_the_hook_is_attached_before_the_cars_start_and_detached_after_they_stopped(tmp_path: Path) -> None:
    hook = RecordingHook()
    runner = _runner(tmp_path, hook)
    vins = [car.vin for car in runner.cars]
    async with runner:
        assert hook.calls == ["attach 3 sessions", *(f"address {vin}" for vin in vins)]
        assert len(_tasks("tcu[")) == 3
        # The hook's fault handler takes the cars' `fault` controls.
        runner.sessions[vins[0]].handle_control(encode_json({"action": "fault", "params": {"kind": "offline"}}))
        assert hook.faults == [(vins[0], {"kind": "offline"})]
    assert hook.calls[-1] == "detach"
    assert hook.running_cars_at_detach == 0
    assert _tasks("link_pool.") == []


async def test_without_a_hook_cars_refuse_fault_controls(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    assert isinstance(runner.faults, NoHook)
    async with runner:
        session = next(iter(runner.sessions.values()))
        session.handle_control(encode_json({"action": "fault", "params": {"kind": "offline"}}))
        assert session.stats.controls_refused == 1
    assert _tasks("link_pool.") == []


async def test_a_start_that_fails_on_a_missing_car_key_leaves_nothing_running(tmp_path: Path) -> None:
    hook = RecordingHook()
    runner = _runner(tmp_path, hook)
    runner.state.car_key_path(runner.cars[1].vin).unlink()
    with pytest.raises(StateDirError):
        await runner.__aenter__()
    assert _tasks("link_pool.") == []  # the link pool it had started is closed again
    assert _tasks("tcu[") == []
    assert hook.calls == []  # never attached, so never detached


async def test_a_start_whose_hook_fails_to_attach_leaves_nothing_running(tmp_path: Path) -> None:
    hook = RecordingHook(fail_attach=True)
    runner = _runner(tmp_path, hook)
    with pytest.raises(RuntimeError, match="attach failed"):
        await runner.__aenter__()
    assert _tasks("link_pool.") == []
    assert _tasks("tcu[") == []
    assert hook.calls == ["attach 3 sessions"]  # an attach that fails cleans up after itself


async def test_a_start_that_fails_half_way_stops_the_cars_it_started_and_detaches_the_hook(tmp_path: Path) -> None:
    hook = RecordingHook(fail_address_of=1)
    runner = _runner(tmp_path, hook)
    with pytest.raises(RuntimeError, match="no route"):
        await runner.__aenter__()
    assert hook.calls[-1] == "detach"
    assert hook.running_cars_at_detach == 0  # the first car was started, and stopped before the detach
    assert _tasks("link_pool.") == []
    assert _tasks("tcu[") == []
