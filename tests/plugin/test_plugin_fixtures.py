"""The tcu-sim pytest fixtures against a real Mosquitto: enrol, command, wait, fail with a useful message."""

from __future__ import annotations

import pytest

from tcu_sim.app import SpinIncorrect
from tcu_sim.protocol import CommandState
from tcu_sim.testing import (
    CarControlRefused,
    CommandFailed,
    FleetFactory,
    SimCar,
    SimClock,
    SimCloud,
    SimFaults,
    SimFleet,
    SimUser,
    WaitTimeout,
)


async def test_enrol_lock_and_wait_for_the_car(car: SimCar, app_user: SimUser) -> None:
    await app_user.enrol(car)
    assert await app_user.command(car, "unlock") is CommandState.SUCCEEDED
    await car.wait_for(locked=False, timeout=5)
    assert await app_user.command(car.vin, "lock", expect="succeeded") == "succeeded"
    status = await car.wait_for(locked=True, doors__front_left__locked=True, online=True, timeout=5)
    assert status.locked is True


async def test_the_default_fleet_has_both_enrolment_methods(fleet: SimFleet, app_user: SimUser) -> None:
    assert [c.model for c in fleet.cars] == ["leon", "ateca"]
    ateca = fleet.car("ateca")
    await app_user.enrol(ateca)  # pairing code, entered in the car's infotainment (R5)
    assert await app_user.command(ateca, "honk_and_flash", {"mode": "flash", "duration_s": 5}) == "succeeded"


async def test_a_command_for_a_car_without_network_times_out(
    car: SimCar, app_user: SimUser, faults: SimFaults, cloud: SimCloud, clock: SimClock
) -> None:
    await app_user.enrol(car)
    await faults.offline(car)
    assert not car.online
    command_id = await app_user.send(car, "unlock")
    await cloud.wait_for_command(command_id, "delivered")  # the broker keeps it in the car's session
    await clock.advance(120)  # past the TTL (60 s) and the car's clock-skew allowance (30 s)
    record = await cloud.wait_for_command(command_id, timeout=5)
    assert record.state is CommandState.TIMED_OUT
    await faults.online(car)
    assert car.online
    assert car.status().locked  # the expired command was never executed


async def test_a_failed_command_explains_itself(car: SimCar, app_user: SimUser) -> None:
    await app_user.enrol(car)
    await app_user.command(car, "unlock", expect="succeeded")
    car.open_door("front_left")
    with pytest.raises(CommandFailed) as failure:
        await app_user.command(car, "lock", expect="succeeded")
    message = str(failure.value)
    assert "expected succeeded, but it ended failed" in message
    assert "history: queued" in message
    assert "failed: door_open" in message
    assert "doors open: front_left" in message  # the car's last status
    assert car.vin in message
    assert app_user.last_command is not None
    assert app_user.last_command.reason == "door_open"


async def test_wait_for_timeout_shows_the_last_status(car: SimCar) -> None:
    car.control("unlock_key")  # the driver unlocks with the key and opens a door
    car.open_door("rear_left")
    with pytest.raises(WaitTimeout) as failure:
        await car.wait_for(locked=False, doors__rear_left__open=False, timeout=0.2)
    message = str(failure.value)
    assert f"car {car.vin} (leon): not 'locked'=False" not in message
    assert f"car {car.vin} (leon): not locked=False, doors.rear_left.open=False within 0.2 s" in message
    assert "doors.rear_left.open is True" in message
    assert "last status (online" in message
    assert "doors open: rear_left" in message


async def test_wait_for_command_timeout_shows_the_history(
    car: SimCar, app_user: SimUser, faults: SimFaults, cloud: SimCloud
) -> None:
    await app_user.enrol(car)
    await faults.offline(car)
    command_id = await app_user.send(car, "lock")
    with pytest.raises(WaitTimeout) as failure:
        await cloud.wait_for_command(command_id, "succeeded", timeout=0.3)
    message = str(failure.value)
    assert f"command {command_id} (lock on {car.vin}): not succeeded within 0.3 s" in message
    assert "history: queued" in message
    assert "delivered" in message
    assert f"car {car.vin} itself: locked=True" in message
    assert "online=False" in message
    assert f"cloud's last status of {car.vin} (offline)" in message


async def test_a_wrong_spin_reaches_the_test_as_the_typed_app_error(car: SimCar, app_user: SimUser) -> None:
    await app_user.enrol(car)
    with pytest.raises(SpinIncorrect) as wrong:
        await app_user.command(car, "unlock", spin="9876")
    assert wrong.value.remaining_tries == 2


async def test_a_refused_control_says_why(fleet: SimFleet) -> None:
    with pytest.raises(CarControlRefused, match="enrols by tkov"):
        fleet.car("leon").control("enter_pairing_code", code="12345678")
    with pytest.raises(CarControlRefused, match="the car is locked: unlock it first"):
        fleet.car("leon").open_door()


async def test_broker_crash_and_restart(car: SimCar, app_user: SimUser, faults: SimFaults) -> None:
    await app_user.enrol(car)
    await faults.broker_kill()
    await car.wait_offline()
    await faults.broker_start()  # returns once the cloud, the cars and the app are back
    assert car.online
    assert await app_user.command(car, "unlock", timeout=15) == "succeeded"


async def test_fault_layer_faults(car: SimCar, faults: SimFaults) -> None:
    assert await faults.inject(car, {"kind": "offline"})
    await car.wait_for(online=False, timeout=5)
    assert await faults.inject(car, {"kind": "online"})
    await car.wait_online()
    assert [entry.what.split()[0] for entry in faults.log[-2:]] == ["offline", "online"]


async def test_fleet_factory_takes_yaml_text(fleet_factory: FleetFactory, app_user: SimUser) -> None:
    born = await fleet_factory(
        """
name: evs
seed: 3
defaults:
  home_area: {center: {lat: 41.40, lon: 2.20}, radius_km: 1}
groups:
  - {name: born, count: 2, model: born, equipment: media_system}
"""
    )
    assert [c.model for c in born.cars] == ["born", "born"]
    await app_user.enrol(born.car(1))
    assert await app_user.command(born.car(1), "ventilation.start", {"duration_min": 10}) == "succeeded"
    await born.car(1).wait_for(aux_heating__state="ventilation")
