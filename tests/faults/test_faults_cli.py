"""`tcu-sim fault` and `tcu-sim scenario`: targets, every fault kind, live faults on a running fleet over the
real Mosquitto, Toxiproxy, the broker control socket, and scenario runs with their exit codes and JUnit XML."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from faults_kit import WAIT, Rig, fleet, fleet_rig
from faults_toxiproxy_fake import FakeToxiproxy

from tcu_sim.cli import cli
from tcu_sim.faults import BrokerControl, FaultKind, FaultProxy, FleetFaults, ProxyMode
from tcu_sim.testing import MosquittoBroker
from tcu_sim.testing.plugin import require_mosquitto

SCENARIOS = Path(__file__).resolve().parents[2] / "fleet_configs" / "scenarios"
BASE = """
name: faults-cli
seed: 21
defaults:
  status_interval_s: 1h
  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 0.5}
groups:
  - {name: leon, count: 2, model: leon, equipment: media_system}
  - {name: born, count: 1, model: born, equipment: media_system}
"""

_COMMAND_OF = {
    FaultKind.OFFLINE: "offline", FaultKind.ONLINE: "online", FaultKind.FLAKY: "flaky", FaultKind.WEAK_SIGNAL: "weak",
    FaultKind.CLOCK_SKEW: "skew", FaultKind.RESTART: "restart", FaultKind.LATENCY: "latency",
    FaultKind.BANDWIDTH: "bandwidth", FaultKind.BLACK_HOLE: "blackhole", FaultKind.RESET: "reset",
    FaultKind.SLICER: "slice", FaultKind.DATA_LIMIT: "limit", FaultKind.CLEAR: "clear",
}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


async def invoke_async(*args: str) -> Result:
    """The CLI runs its own event loop: call it from a thread while the test's loop runs the fleet."""
    return await asyncio.to_thread(invoke, *args)


def _last_line(result: Result) -> str:
    """The command's own answer (the run's log lines come before it on the same output)."""
    return result.output.strip().splitlines()[-1]


def test_every_fault_kind_has_a_subcommand() -> None:
    assert set(_COMMAND_OF) == set(FaultKind)
    result = invoke("fault", "--help")
    assert result.exit_code == 0
    for command in [*_COMMAND_OF.values(), "broker"]:
        assert f"  {command} " in result.output


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("fault", "offline"), "say which cars"),
        (("fault", "VSSZZZKLZTR000001", "offline", "--for", "soon"), "expected a duration"),
        (("fault", "VSSZZZKLZTR000001", "flaky", "--drop-rate", "2"), "drop-rate"),
        (("fault", "--toxiproxy", "http://127.0.0.1:9", "VSSZZZKLZTR000001", "offline"), "transport faults only"),
    ],
)
def test_fault_usage_errors(args: tuple[str, ...], problem: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [*args[:1], "--state", str(tmp_path), *args[1:]])
    assert result.exit_code != 0
    assert problem in result.output


def _state_for_cli(rig: Rig, broker: MosquittoBroker) -> Path:
    """The rig's state directory (manifest) with the broker's PKI beside it, as `--state` expects."""
    link = rig.state.root / "pki"
    if not link.exists():
        link.symlink_to(broker.pki.directory, target_is_directory=True)
    return rig.state.root


async def test_live_faults_from_the_command_line(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    config = fleet(BASE)
    faults = FleetFaults.from_config(config, proxy=ProxyMode.GROUP, reconnect_jitter_s=0.5)
    async with fleet_rig(mosquitto, config, tmp_path, faults) as rig:
        await rig.runner.wait_all_online(WAIT)
        state = _state_for_cli(rig, mosquitto)
        common = ["fault", "--broker", f"mqtts://{mosquitto.host}:{mosquitto.port}", "--state", str(state)]
        leon0 = rig.cars[0].vin

        result = await invoke_async(*common[:1], *common[1:], leon0, "offline", "--for", "30s")
        assert result.exit_code == 0, result.output
        assert f"offline hard for 30s sent to {leon0}" in result.output
        await rig.inbox.wait_for(f"tcu/{leon0}/connection", b"offline", timeout=WAIT)

        applied = asyncio.Event()
        faults.log.listeners.append(lambda i: applied.set() if i.target == "route:leon" else None)
        result = await invoke_async(
            *common, "--timeout", "2", "--group", "leon", "latency", "300ms", "--jitter", "50ms"
        )
        # leon0 is offline: the broker keeps the control for it, but it cannot answer in time (SPEC §7: exit 1).
        assert result.exit_code == 1, result.output
        assert "sent to 2 cars" in result.output
        assert "1 applied, 1 no answer" in result.output
        assert f"no car answered within 2 s: {leon0}" in result.output
        async with asyncio.timeout(WAIT):
            await applied.wait()
        assert isinstance(faults.backend, FaultProxy)
        (toxic,) = faults.backend.route("leon").toxics
        assert (toxic.kind, toxic.latency_ms, toxic.jitter_ms) == (FaultKind.LATENCY, 300, 50)  # type: ignore[union-attr]
        assert faults.backend.route("born").toxics == []

        skewed = asyncio.Event()
        born = rig.cars[2].vin
        faults.log.listeners.append(lambda i: skewed.set() if i.target == born else None)
        result = await invoke_async(*common, "born[0]", "skew", "--", "-90s")
        assert result.exit_code == 0, result.output
        assert f"sent to {born} (id op-" in result.output
        assert ": 1 applied" in result.output
        async with asyncio.timeout(WAIT):
            await skewed.wait()
        assert faults.car(born).skew_s == -90

        result = await invoke_async(*common, "ateca", "offline")
        assert result.exit_code != 0
        assert "matches no car" in result.output


async def test_broker_faults_from_the_command_line(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    path = tmp_path / "broker.sock"
    async with BrokerControl(mosquitto, path):
        result = await invoke_async("fault", "broker", "status", "--control", str(path))
        assert (result.exit_code, _last_line(result)) == (0, "broker status: running")
        result = await invoke_async("fault", "--state", str(tmp_path), "broker", "stop")  # <state>/broker.sock
        assert (result.exit_code, _last_line(result)) == (0, "broker stop: not running")
        assert not mosquitto.running
        result = await invoke_async("fault", "broker", "restart", "--control", str(path))
        assert (result.exit_code, _last_line(result)) == (0, "broker restart: running")
    result = await invoke_async("fault", "broker", "kill", "--control", str(path))
    assert result.exit_code == 1
    assert "no broker control socket" in result.output


async def test_transport_faults_through_toxiproxy_from_the_command_line(tmp_path: Path) -> None:
    fake = FakeToxiproxy()
    async with fake.running() as url:
        client_route = await fake.handle("POST", "/proxies", {"name": "tcu-sim-city", "upstream": "127.0.0.1:9",
                                                             "listen": "127.0.0.1:0"})
        assert client_route[0] == 201
        result = await invoke_async("fault", "--toxiproxy", url, "--group", "city", "blackhole", "--close-after", "2s")
        assert result.exit_code == 0, result.output
        assert "on Toxiproxy proxies tcu-sim-city" in result.output
        assert {t["type"] for t in fake.toxics["tcu-sim-city"].values()} == {"timeout"}
        result = await invoke_async("fault", "--toxiproxy", url, "--group", "city", "clear")
        assert result.exit_code == 0, result.output
        assert fake.toxics["tcu-sim-city"] == {}


def test_scenario_validate_checks_every_shipped_file() -> None:
    files = sorted(str(p) for p in SCENARIOS.glob("*.yaml"))
    result = invoke("scenario", "validate", *files)
    assert result.exit_code == 0, result.output
    assert result.output.count(" ok: ") == len(files)


def test_scenario_validate_names_file_line_and_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "scenario:\n  - {at: 1s, do: check, expect: [{online: maybe}]}\n")
    result = CliRunner().invoke(cli, ["scenario", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:" in result.output
    assert "scenario[0].expect[0]: online: true or false" in result.output


@pytest.mark.mosquitto
def test_scenario_run_exits_non_zero_and_writes_junit_when_an_expectation_fails(tmp_path: Path) -> None:
    require_mosquitto()
    scenario = tmp_path / "doomed.yaml"
    scenario.write_text(BASE + """
scenario:
  - {at: 1s, do: go_offline, cars: "born[0]", duration: 20s}
  - {at: 2s, name: offline now, do: check, cars: "born[0]", expect: [{online: false, within: 10s}]}
  - {at: 3s, name: never unlocked, do: check, cars: "leon[0]", expect: [{locked: false, within: 5s}]}
""")
    junit = tmp_path / "junit.xml"
    report = tmp_path / "report.txt"
    result = invoke("--log-level", "ERROR", "scenario", "run", str(scenario), "--junit", str(junit),
                    "--report", str(report), "--time-scale", "60", "--quiet")
    assert result.exit_code == 1, result.output
    assert _last_line(result) == f"scenario faults-cli ({scenario}), seed 21: FAILED"
    assert "[FAIL] t=3s step 2 (never unlocked): locked false" in report.read_text()
    suite = ET.parse(junit).getroot().find("testsuite")  # noqa: S314 - our own output, not untrusted XML
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")


@pytest.mark.mosquitto
def test_scenario_run_logs_only_when_asked(tmp_path: Path) -> None:
    """As a user runs it (a process, stderr a pipe): `--quiet` prints the verdict and nothing else; without it the
    report and no log lines; `-v` adds the JSON log on stderr."""
    require_mosquitto()
    scenario = tmp_path / "short.yaml"
    scenario.write_text(BASE + """
scenario:
  - {at: 1s, do: go_offline, cars: "born[0]", duration: 5s}
  - {at: 2s, name: offline now, do: check, cars: "born[0]", expect: [{online: false, within: 10s}]}
""")
    tcu_sim = [sys.executable, "-c", "from tcu_sim.cli import main; main()", "scenario", "run", str(scenario),
               "--time-scale", "60"]
    quiet = subprocess.run([*tcu_sim, "--quiet"], capture_output=True, text=True, timeout=120, check=False)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert quiet.stdout.splitlines() == [f"scenario faults-cli ({scenario}), seed 21: PASSED"], quiet.stdout
    assert quiet.stderr == ""
    plain = subprocess.run(tcu_sim, capture_output=True, text=True, timeout=120, check=False)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "1/1 expectations held" in plain.stdout
    assert not [line for line in plain.stderr.splitlines() if line.startswith("{")], plain.stderr
    verbose = subprocess.run([*tcu_sim, "-v"], capture_output=True, text=True, timeout=120, check=False)
    assert verbose.returncode == 0, verbose.stderr
    logged = [json.loads(line) for line in verbose.stderr.splitlines() if line.startswith("{")]
    assert logged
    assert {entry["level"] for entry in logged} >= {"info"}


def test_scenario_run_help_says_how_to_see_the_log() -> None:
    result = invoke("scenario", "run", "--help")
    assert "-v, --verbose" in result.output
    assert "--log-level" in result.output
    assert "Examples:" in invoke("scenario", "--help").output
