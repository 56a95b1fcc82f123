"""`tcu-sim cloud run` and `tcu-sim app ...` as a user runs them: separate processes, a provisioned state
directory, a real Mosquitto with the fleet's PKI, readable output, non-zero exits with the error code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.pki import FleetPKI
from tcu_sim.clock import SystemClock
from tcu_sim.fleet import load_fleet, provision
from tcu_sim.testing import MosquittoBroker
from tcu_sim.testing.plugin import require_mosquitto

REPO = Path(__file__).resolve().parents[2]
TCU_SIM = [sys.executable, "-c", "from tcu_sim.cli import main; main()"]
APP_USER = "app-cli"
APP_MQTT_PASSWORD = "mqtt-password-for-the-cli-test"
PASSWORD = "Cli-Passw0rd-quux"
SPIN = "8264"


async def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *TCU_SIM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        stdin=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def _cloud_process(broker: MosquittoBroker, state: Path, env: dict[str, str]) -> AsyncIterator[list[str]]:
    """`tcu-sim cloud run` as a child process, ready; yields its stderr lines (growing), stops it with Ctrl-C."""
    proc = await asyncio.create_subprocess_exec(
        *TCU_SIM, "--log-json", "cloud", "run", "--broker", f"mqtts://{broker.host}:{broker.port}",
        "--state", str(state), "--session-expiry", "0", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env, stdin=asyncio.subprocess.DEVNULL,
    )
    lines: list[str] = []
    ready = asyncio.Event()

    async def read() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            lines.append(raw.decode(errors="replace"))
            if "connected and subscribed" in lines[-1]:
                ready.set()

    reader = asyncio.create_task(read())
    try:
        try:
            async with asyncio.timeout(30):
                await ready.wait()
        except TimeoutError:
            raise AssertionError("".join(lines)) from None
        yield lines
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            await proc.wait()
            await reader
    assert proc.returncode == 0, "".join(lines)


@pytest.mark.slow
async def test_cloud_run_and_the_app_commands(tmp_path: Path) -> None:
    require_mosquitto()
    state = tmp_path / "state"
    result = provision(load_fleet(REPO / "fleet_configs" / "demo.yaml"), state, clock=SystemClock())
    vins = json.loads((state / "vehicles.json").read_text())["vehicles"]
    leon = next(v["vin"] for v in vins if v["model"] == "leon")
    assert result.vehicles == len(vins)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "TCU_SIM_APP_MQTT_PASSWORD": APP_MQTT_PASSWORD}
    pki = FleetPKI(state / "pki")
    async with (
        MosquittoBroker(tmp_path / "mosquitto", pki, app_users={APP_USER: APP_MQTT_PASSWORD}) as broker,
        _cloud_process(broker, state, env) as cloud_log,
    ):
        app = ["app", "--broker", f"mqtts://{broker.host}:{broker.app_port}", "--state", str(state)]
        rc, out, err = await _run(*app, "--username", APP_USER, "register", "cli@example.com",
                                  "--password", PASSWORD, "--spin", SPIN, env=env)
        assert rc == 0, err
        assert "registered cli@example.com" in out
        rc, out, err = await _run(*app, "--username", APP_USER, "login", "cli@example.com", "--password", PASSWORD,
                                  env=env)
        assert rc == 0, err
        session = tmp_path / "config" / "tcu-sim" / "session.json"
        assert stat.S_IMODE(session.stat().st_mode) == 0o600
        assert json.loads(session.read_text())["token"]
        # From now on the session file says where to connect and as whom.
        rc, out, err = await _run(*app, "mailbox", env=env)
        assert rc == 0, err
        code = re.search(r"verify\?code=([A-Za-z0-9_-]+)", out)
        assert code is not None, out
        rc, out, err = await _run(*app, "verify", code.group(1), env=env)
        assert (rc, out.strip()) == (0, "e-mail address verified"), err
        rc, out, err = await _run(*app, "add-vehicle", leon, "--accept-terms", env=env)
        assert rc == 0, err
        assert "Two Key Owner Verification" in out
        # The car is not enrolled until the in-car step: the error code is printed and the exit is 1.
        rc, out, err = await _run(*app, "lock", leon, "--spin", SPIN, env=env)
        assert rc == 1
        assert "VEHICLE_NOT_FOUND" in err
        rc, out, err = await _run(*app, "vehicles", env=env)
        assert rc == 0, err
        assert leon in out
        assert "pending" in out
        # Operators read the registry.
        rc, out, err = await _run("cloud", "mailbox", "cli@example.com", "--state", str(state), env=env)
        assert rc == 0, err
        assert "Subject: Verify your CUPRA ID" in out
        rc, out, err = await _run("cloud", "audit", "--state", str(state), "--email", "cli@example.com", env=env)
        assert rc == 0, err
        assert "account.registered" in out
        assert "enrolment.started" in out
    logged = "".join(cloud_log)
    for secret in (PASSWORD, SPIN, APP_MQTT_PASSWORD, code.group(1), json.loads(session.read_text())["token"]):
        assert secret not in logged


async def test_app_without_a_broker_exits_3(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    rc, _, err = await _run(
        "app", "--broker", "mqtt://127.0.0.1:9", "--username", "nobody", "--timeout", "2", "vehicles", env=env
    )
    assert rc == 3
    assert "cannot connect" in err
    assert "Traceback" not in err


async def test_bad_broker_url_is_a_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    rc, _, err = await _run("app", "--broker", "http://x", "--username", "u", "vehicles", env=env)
    assert rc == 2
    assert "mqtts://HOST:PORT" in err
