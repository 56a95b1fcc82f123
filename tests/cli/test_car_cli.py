"""`tcu-sim car`: a person's action at the car, published as the operator, reaches the car over the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tcu_sim.cli import cli
from tcu_sim.clock import SystemClock
from tcu_sim.protocol import KeySet, SigningKey, generate_vin
from tcu_sim.testing import MosquittoBroker
from tcu_sim.transport import BrokerAddress, LinkPool, SeqStore, TcuSession
from tcu_sim.vehicle import Vehicle


@pytest.mark.mosquitto
async def test_car_command_opens_a_door_of_a_running_car(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    (tmp_path / "pki").symlink_to(mosquitto.pki.directory)  # a state directory whose PKI is the broker's
    clock = SystemClock()
    rng = random.Random(5)
    vin = generate_vin(rng)
    vehicle = Vehicle.new(vin, "formentor", "navigation", (41.4, 2.17), rng, clock.now())
    vehicle.control("unlock_key", {}, clock.now())
    session = TcuSession(
        vehicle, signing_key=SigningKey.generate(vin), cloud_keys=KeySet(), clock=clock, rng=rng,
        seq_store=SeqStore(None), tls=mosquitto.ssl_context(vin),
    )
    async with LinkPool() as pool:
        task = asyncio.create_task(session.run(pool, BrokerAddress(mosquitto.host, mosquitto.port)))
        try:
            await session.wait_online(10)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tcu_sim.cli", "car", vin, "open_door", "door=front_left",
                "--broker", f"mqtts://{mosquitto.host}:{mosquitto.port}", "--state", str(tmp_path),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(20):
                out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            assert "open_door sent" in out.decode()
            async with asyncio.timeout(5):
                while "front_left" not in {str(d) for d in vehicle.open_doors}:
                    await session.wait_for_change()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_bad_params_and_vin_are_usage_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["car", "NOT-A-VIN", "ecall"])
    assert result.exit_code == 2
    assert "VIN" in result.output
    result = runner.invoke(cli, ["car", "VSSZZZKL7MA378596", "open_door", "door"])
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.output
