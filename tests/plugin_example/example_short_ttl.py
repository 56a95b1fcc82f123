"""Changing the cloud's rules for one module: override the `tcu_cloud_config` fixture."""

from __future__ import annotations

import pytest

from broker.cloud import CloudConfig
from tcu_sim.testing import SimCar, SimClock, SimCloud, SimFaults, SimUser


@pytest.fixture
def tcu_cloud_config() -> CloudConfig:
    return CloudConfig(command_ttl_s=10)


async def test_a_ten_second_ttl(
    car: SimCar, app_user: SimUser, faults: SimFaults, cloud: SimCloud, clock: SimClock
) -> None:
    await app_user.enrol(car)
    await faults.offline(car)
    command_id = await app_user.send(car, "lock")
    await clock.advance(41)  # 10 s TTL + 30 s the car may be off in its clock, + 1
    await cloud.wait_for_command(command_id, "timed_out")
