"""`tcu-sim record OUT --state DIR` beside a running stack (over the real Mosquitto): it finds the broker in the
state's endpoints file, connects as the read-only `recorder` (certificate issued on first use) and records what
an app does, with the login's password redacted."""

from __future__ import annotations

import asyncio
import gzip
import sys
import time
from pathlib import Path

import pytest

from broker.cloud import PasswordHasher
from tcu_sim.clock import VirtualClock
from tcu_sim.fleet import load_fleet
from tcu_sim.record import read_recording
from tcu_sim.stack import LocalStack, StackConfig
from tcu_sim.testing.plugin import require_mosquitto

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "fleet_configs" / "scenarios" / "spin-brute-force.yaml"
WAIT = 30.0


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_mosquitto()


async def test_record_finds_the_running_stack_and_records_an_app_login(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "beside.jsonl.gz"
    config = StackConfig(state_dir=state, port=0, broker="mosquitto")
    clock = VirtualClock(start=time.time())  # nothing moves it: the one car sends no status of its own
    async with LocalStack(load_fleet(FLEET), config, clock=clock, passwords=PasswordHasher.for_tests()) as stack:
        # The car's retained status and connection, then the login's request and response.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tcu_sim.cli", "--log-level", "WARNING", "record", str(out), "--state", str(state),
            "--fleet", str(FLEET), "--messages", "4", "--duration", str(WAIT),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        )
        assert process.stderr is not None
        async with asyncio.timeout(WAIT):
            first = await process.stderr.readline()
        assert first.startswith(b"recording mqtts://"), first
        async with stack.app_client() as app:
            await app.login("owner@tcu-sim.test", "owner-2026-pass")
        async with asyncio.timeout(WAIT):
            _, rest = await process.communicate()
        assert process.returncode == 0, rest.decode()
        assert stack.pki.certificate("recorder").name == "recorder"

    recording = read_recording(out)
    assert recording.header.fleet == str(FLEET)
    assert recording.header.seed == 4711
    first_two, rest_of = recording.records[:2], recording.records[2:]
    assert sorted(r["kind"] for r in first_two) == ["connection", "status"]
    assert all(r.get("retained") for r in first_two)
    assert [r["kind"] for r in rest_of] == ["requests", "responses"]
    login = next(r for r in recording.records if r["kind"] == "requests")
    assert login["msg"]["params"]["password"] == "<redacted>"
    assert login["secrets"] == {"params.password": "fleet"}
    assert b"owner-2026-pass" not in gzip.decompress(out.read_bytes())


async def test_up_records_from_the_moment_the_stack_is_up(tmp_path: Path) -> None:
    out = tmp_path / "up.jsonl.gz"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tcu_sim.cli", "up", str(FLEET), "--record", str(out), "--no-view", "--duration", "1",
        "--port", "0", "--no-http", "--state", str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    async with asyncio.timeout(120):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stdout.decode() + stderr.decode()
    assert f"recording to {out}" in stdout.decode()
    recording = read_recording(out)
    assert recording.header.fleet == str(FLEET)
    assert recording.header.fleet_name == "spin-brute-force"
    # The one car's retained status and connection at least (it may send more while `up` runs).
    assert {"status", "connection"} <= {r["kind"] for r in recording.records}
    assert not recording.truncated
