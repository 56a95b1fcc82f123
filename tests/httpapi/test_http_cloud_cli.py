"""`tcu-sim cloud run --http HOST:PORT`: the cloud process serves the app API over HTTP beside MQTT."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from broker.pki import FleetPKI
from tcu_sim.clock import SystemClock
from tcu_sim.fleet import load_fleet, provision
from tcu_sim.testing import MosquittoBroker
from tcu_sim.testing.plugin import require_mosquitto

pytestmark = pytest.mark.mosquitto

REPO = Path(__file__).resolve().parents[2]
TCU_SIM = [sys.executable, "-c", "from tcu_sim.cli import main; main()"]


async def test_cloud_run_serves_the_app_api_over_http(tmp_path: Path) -> None:
    require_mosquitto()
    state = tmp_path / "state"
    provision(load_fleet(REPO / "fleet_configs" / "demo.yaml"), state, clock=SystemClock())
    async with MosquittoBroker(tmp_path / "mosquitto", FleetPKI(state / "pki")) as broker:
        proc = await asyncio.create_subprocess_exec(
            *TCU_SIM, "cloud", "run", "--broker", f"mqtts://{broker.host}:{broker.port}", "--state", str(state),
            "--session-expiry", "0", "--http", "127.0.0.1:0", stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, env=dict(os.environ),
        )
        lines: list[str] = []
        try:
            assert proc.stderr is not None
            async with asyncio.timeout(30):
                while not any("app API on" in line for line in lines):
                    raw = await proc.stderr.readline()
                    assert raw, "".join(lines)
                    lines.append(raw.decode(errors="replace"))
            found = re.search(r"app API on (http://127\.0\.0\.1:\d+)/api/v1/", "".join(lines))
            assert found is not None, "".join(lines)
            async with httpx.AsyncClient(base_url=found.group(1), timeout=10) as http:
                document = (await http.get("/openapi.json")).json()
                assert document["openapi"].startswith("3.1")
                refused = await http.post("/api/v1/login", json={"email": "nobody@example.com", "password": "x" * 12})
                assert refused.status_code == 401
                assert refused.json()["code"] == "UNAUTHENTICATED"
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(20):
                await proc.communicate()
        assert proc.returncode == 0, "".join(lines)


async def test_a_malformed_http_address_is_a_usage_error(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *TCU_SIM, "cloud", "run", "--state", str(tmp_path), "--http", "no-port-here",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "expected HOST:PORT" in err.decode()
