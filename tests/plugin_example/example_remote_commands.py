"""What an app team's tests look like with the tcu-sim plugin installed: no conftest.py, no set-up code."""

from __future__ import annotations

import pytest

from tcu_sim.app import VehicleNotFound
from tcu_sim.protocol import CommandState
from tcu_sim.testing import AppUserFactory, SimBroker, SimCar, SimClock, SimCloud, SimFaults, SimFleet, SimUser


async def test_lock_and_unlock(car: SimCar, app_user: SimUser) -> None:
    await app_user.enrol(car)  # add in the app, then two-key verification in the car
    assert await app_user.command(car, "unlock") is CommandState.SUCCEEDED
    await car.wait_for(locked=False)
    assert await app_user.command(car, "lock") is CommandState.SUCCEEDED
    await car.wait_for(locked=True)


async def test_a_command_for_a_car_without_network_times_out(
    car: SimCar, app_user: SimUser, faults: SimFaults, cloud: SimCloud, clock: SimClock
) -> None:
    await app_user.enrol(car)
    await faults.offline(car)  # the car drops off the mobile network
    command_id = await app_user.send(car, "unlock")
    await clock.advance(120)  # virtual time: past the command's 60 s TTL in an instant
    record = await cloud.wait_for_command(command_id, "timed_out")
    assert record.state is CommandState.TIMED_OUT
    await faults.online(car)
    await car.wait_for(locked=True)  # the car never executed the stale command


async def test_a_door_left_open(car: SimCar, app_user: SimUser) -> None:
    await app_user.enrol(car)
    await app_user.command(car, "unlock", expect="succeeded")
    car.open_door("trunk")
    assert await app_user.command(car, "lock") is CommandState.FAILED
    assert app_user.last_command is not None
    assert app_user.last_command.reason == "door_open"


@pytest.mark.tcu_fleet("fleets/commute.yaml")
async def test_a_fleet_file_and_a_stranger(
    fleet: SimFleet, app_user: SimUser, app_user_factory: AppUserFactory
) -> None:
    ateca = fleet.car("ateca")
    await app_user.enrol(ateca)  # the pairing code goes into the car's infotainment
    stranger = await app_user_factory("stranger@example.com")
    with pytest.raises(VehicleNotFound):  # not their car: the cloud does not even say it exists
        await stranger.command(ateca, "unlock")
    assert await app_user.command(ateca, "honk_and_flash", {"mode": "flash", "duration_s": 3}) == "succeeded"


async def test_the_broker_crashes_and_comes_back(
    mqtt_broker: SimBroker, car: SimCar, app_user: SimUser, faults: SimFaults
) -> None:
    if not mqtt_broker.controllable:
        pytest.skip("the broker is not ours to crash (--tcu-broker URL)")
    await app_user.enrol(car)
    await faults.broker_kill()
    await faults.broker_start()  # returns once the cloud, the cars and the apps have reconnected
    assert await app_user.command(car, "lock", expect="succeeded") == "succeeded"
