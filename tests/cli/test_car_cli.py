"""`tcu-sim car`: a person's action at the car, published as the operator, reaches the car over the real broker,
and the car's answer on `sim/{vin}/control/results` decides the exit code (`tcu-sim fault` alike)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tcu_sim.cli import cli
from tcu_sim.clock import SystemClock
from tcu_sim.protocol import ControlAction, KeySet, SigningKey, generate_vin
from tcu_sim.testing import MosquittoBroker
from tcu_sim.transport import BrokerAddress, LinkPool, SeqStore, TcuSession
from tcu_sim.vehicle import CONTROL_PARAMS, Vehicle


@contextlib.asynccontextmanager
async def running_car(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[TcuSession]:
    """One unlocked car online on the broker, and `tmp_path` a state directory whose PKI is the broker's."""
    (tmp_path / "pki").symlink_to(mosquitto.pki.directory)
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
            yield session
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def tcu_sim(mosquitto: MosquittoBroker, state: Path, command: str, *args: str) -> tuple[int, str, str]:
    """Run `tcu-sim COMMAND --broker ... --state STATE ARGS` as a process: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tcu_sim.cli", command,
        "--broker", f"mqtts://{mosquitto.host}:{mosquitto.port}", "--state", str(state), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.mosquitto
async def test_car_command_opens_a_door_of_a_running_car(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_car(mosquitto, tmp_path) as session:
        code, out, err = await tcu_sim(mosquitto, tmp_path, "car", session.vin, "open_door", "door=front_left")
        assert code == 0, err
        assert f"{session.vin}: open_door ok" in out  # the car's answer, not just "sent"
        assert "front_left" in {str(d) for d in session.vehicle.open_doors}  # it answered after applying it


@pytest.mark.mosquitto
async def test_a_refused_action_exits_1_with_the_cars_reason(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_car(mosquitto, tmp_path) as session:
        code, out, err = await tcu_sim(mosquitto, tmp_path, "car", session.vin, "lock_key")
        assert code == 0, out + err
        code, out, err = await tcu_sim(mosquitto, tmp_path, "car", session.vin, "open_door", "door=front_left")
        assert code == 1, out + err
        assert f"{session.vin}: open_door refused by the car: open_door: the car is locked" in err
        assert not session.vehicle.open_doors  # refused: nothing changed

        # A fault to a car without a fault layer: refused too, and `tcu-sim fault` says so.
        code, out, err = await tcu_sim(mosquitto, tmp_path, "fault", session.vin, "offline")
        assert code == 1, out + err
        assert "0 applied, 1 refused" in out
        assert f"{session.vin}: refused: " in err


@pytest.mark.mosquitto
async def test_an_unknown_car_is_no_answer_not_sent(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_car(mosquitto, tmp_path) as session:
        unknown = generate_vin(random.Random(99))
        assert unknown != session.vin
        code, out, err = await tcu_sim(mosquitto, tmp_path, "car", unknown, "open_door", "door=front_left",
                                       "--timeout", "1")
        assert code == 1, out + err
        assert f"no car answered within 1 s (is {unknown} in the running fleet?)" in err
        assert "ok" not in out
        assert not session.vehicle.open_doors  # another car's control never reaches this one


def test_bad_params_and_vin_are_usage_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["car", "NOT-A-VIN", "ecall"])
    assert result.exit_code == 2
    assert "VIN" in result.output
    result = runner.invoke(cli, ["car", "VSSZZZKL7MA378596", "open_door", "door"])
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.output


def test_a_parameter_typo_is_a_usage_error_before_anything_is_sent(tmp_path: Path) -> None:
    # No broker at all: the parameters are checked against the vehicle model's declarations first.
    runner = CliRunner()
    vin = "VSSZZZKL7MA378596"
    state = ["--state", str(tmp_path), "--broker", "mqtt://127.0.0.1:9"]
    result = runner.invoke(cli, ["car", vin, "open_door", "door=rear_rigth", *state])
    assert result.exit_code == 2, result.output
    assert "door must be one of: front_left, front_right, rear_left, rear_right, trunk, hood" in result.output
    assert "`tcu-sim car --help` lists each action's parameters" in result.output
    result = runner.invoke(cli, ["car", vin, "drive_to", "lat=41.4", "lon=2.2", "speed=50", *state])
    assert result.exit_code == 2
    assert "unknown parameter(s): speed" in result.output
    result = runner.invoke(cli, ["car", vin, "set_battery", "voltage=30", *state])
    assert result.exit_code == 2
    assert "voltage must be between 0.0 and 16.0" in result.output


def test_car_help_lists_each_actions_parameters_from_the_model() -> None:
    result = CliRunner().invoke(cli, ["car", "--help"], terminal_width=200)
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("    ") and line.split()}
    for action in ControlAction:
        if action is not ControlAction.FAULT:
            described = " ".join(p.describe() for p in CONTROL_PARAMS.get(action, ())) or "-"
            assert lines[action.value].split(None, 1)[1] == described
    assert "door=front_left|front_right|rear_left|rear_right|trunk|hood" in lines["open_door"]
    assert "voltage=0..16" in lines["set_battery"]
    assert "speed_kmh=5..250 (optional" in lines["drive_to"]
