"""The live view shows the car services as they happen: a speed alert that fires, a roadside case opened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from stack_kit import WAIT, demo, demo_user, local_stack

from tcu_sim.protocol import encode_json
from tcu_sim.testing.plugin import require_mosquitto


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_mosquitto()


async def _line(lines: asyncio.Queue[str], start: str) -> str:
    async with asyncio.timeout(WAIT * 3):
        while True:
            line = await lines.get()
            if line.startswith(start):
                return line


async def test_the_live_view_shows_a_speed_alert_as_it_fires_and_a_roadside_case(tmp_path: Path) -> None:
    fleet = demo()
    email, password, _ = demo_user(fleet)
    async with local_stack(tmp_path / "state", fleet, broker="mosquitto", time_scale=60) as stack:
        lines: asyncio.Queue[str] = asyncio.Queue()
        stack.subscribe(lambda event: lines.put_nowait(event.text))
        async with stack.app_client(timeout=WAIT) as app:
            await app.login(email, password)
            vin = (await app.list_vehicles())[0]["vin"]
            await app.speed_alert_set(vin, max_speed_kmh=100)
            session = stack.fleet.sessions[vin]
            lat, lon = session.vehicle.position
            drive = {"action": "drive_to", "params": {"lat": lat + 0.02, "lon": lon, "speed_kmh": 150}}
            session.handle_control(encode_json(drive))  # 2 km at 150 km/h: under a minute of stack time

            line = await _line(lines, f"car {vin} speed alert")
            assert line == f"car {vin} speed alert: 150.0 km/h > 100 km/h -> {email}"

            session.handle_control(encode_json({"action": "breakdown_call", "params": {}}))
            line = await _line(lines, f"car {vin} breakdown call")
            assert line.startswith(f"car {vin} breakdown call: roadside assistance case rsa-")
            assert [case["state"] for case in await app.roadside_status(vin)] == ["open"]
