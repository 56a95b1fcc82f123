"""`tcu-sim pki ...` and `tcu-sim broker ...`: files, messages, errors without tracebacks, and a configuration
that a real Mosquitto runs with."""

from __future__ import annotations

import asyncio
import getpass
import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from broker.mosquitto import read_password_file, verify_password
from broker.pki import FleetPKI
from tcu_sim.cli import cli
from tcu_sim.protocol import generate_vin
from tcu_sim.testing import free_ports, probe_connect
from tcu_sim.testing.plugin import require_mosquitto

VIN = generate_vin(random.Random("cli"))


def run(*args: str, input: str | None = None) -> Result:  # click's own name for stdin
    return CliRunner().invoke(cli, ["--log-level", "WARNING", *args], input=input, catch_exceptions=False)


def test_pki_init_is_idempotent(tmp_path: Path) -> None:
    first = run("pki", "init", "--state", str(tmp_path), "--host", "broker.example")
    assert first.exit_code == 0, first.output
    assert "CA created" in first.output
    pki = FleetPKI(tmp_path / "pki")
    for name in ("server", "cloud", "operator"):
        assert pki.paths(name).cert.exists()
    assert pki.crl_path.exists()
    san = pki.load_certificate("server").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.example" in san.get_values_for_type(x509.DNSName)

    again = run("pki", "init", "--state", str(tmp_path))
    assert again.exit_code == 0
    assert "CA kept" in again.output


def test_issue_and_revoke(tmp_path: Path) -> None:
    state = str(tmp_path)
    issued = run("pki", "issue-car", VIN, "--state", state)
    assert issued.exit_code == 0, issued.output
    assert issued.output.startswith(f"issued {VIN}: serial ")
    assert run("pki", "issue-car", VIN, "--state", state).output.startswith(f"kept {VIN}")
    serial = re.search(r"serial ([0-9a-f]+)", issued.output)
    assert serial is not None

    revoked = run("pki", "revoke", VIN, "--state", state)
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked serial {serial.group(1)}" in revoked.output
    assert "SIGHUP" in revoked.output
    crl = run("pki", "crl", "--state", state)
    assert crl.output.splitlines()[1:] == [f"  {serial.group(1)}"]

    tester = run("pki", "issue", "tester", "--state", state, "--expired")
    assert tester.exit_code == 0
    assert FleetPKI(tmp_path / "pki").certificate("tester").not_valid_after < datetime.now(UTC)
    by_serial = re.search(r"serial ([0-9a-f]+)", tester.output)
    assert by_serial is not None
    assert run("pki", "revoke", by_serial.group(1), "--serial", "--state", state).exit_code == 0
    assert len(FleetPKI(tmp_path / "pki").revoked_serials()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pki", "issue-car", "VSS123"), "'VSS123' is neither a valid VIN (VIN must be 17 characters long"),
        (("pki", "issue-car", "cloud"), "not a VIN"),
        (("pki", "issue", "server"), "tcu-sim pki init"),
        (("pki", "issue", "Has/Slash"), "is neither a valid VIN"),
        (("pki", "issue", "has/slash"), "not allowed"),
        (("pki", "revoke", VIN), "no CA here"),
        (("broker", "passwd", "cloud", "--password-stdin"), "reserved"),
    ],
)
def test_errors_name_the_problem_without_a_traceback(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    where = "--out" if args[0] == "broker" else "--state"
    result = CliRunner().invoke(cli, [*args, where, str(tmp_path)], input="pw\n")
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_revoking_an_unknown_name(tmp_path: Path) -> None:
    run("pki", "init", "--state", str(tmp_path))
    result = CliRunner().invoke(cli, ["pki", "revoke", VIN, "--state", str(tmp_path)])
    assert result.exit_code == 1
    assert f"no certificate issued for '{VIN}'" in result.output


def test_broker_config_takes_the_fleets_prefix_and_keeps_app_logins(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "broker"
    state.mkdir()
    (state / "vehicles.json").write_text(json.dumps({"topic_prefix": "fleet-a", "vehicles": []}))
    assert run("broker", "passwd", "app-1", "--out", str(out), "--password-stdin", input="secret\n").exit_code == 0

    result = run("broker", "config", "--out", str(out), "--state", str(state), "--port", "18883", "--app-port", "18884")
    assert result.exit_code == 0, result.output
    assert "topic prefix: fleet-a" in result.output
    assert f"run: mosquitto -c {out.absolute()}/mosquitto.conf" in result.output
    assert "pattern write fleet-a/tcu/%u/status" in (out / "device.acl").read_text()
    assert verify_password("secret", read_password_file(out / "passwords")["app-1"])

    assert run("broker", "passwd", "app-1", "--out", str(out), "--delete").exit_code == 0
    assert read_password_file(out / "passwords") == {}

    bad = CliRunner().invoke(cli, ["broker", "config", "--out", str(out), "--state", str(state), "--prefix", "a/#"])
    assert bad.exit_code == 1
    assert "topic_prefix" in bad.output


@pytest.mark.mosquitto
async def test_the_generated_configuration_runs_in_mosquitto(tmp_path: Path) -> None:
    binary = require_mosquitto()
    state, out = tmp_path / "state", tmp_path / "broker"
    port, app_port = free_ports("127.0.0.1", 2)
    assert run("pki", "init", "--state", str(state)).exit_code == 0
    assert run("pki", "issue-car", VIN, "--state", str(state)).exit_code == 0
    assert run("broker", "passwd", "app-1", "--out", str(out), "--password-stdin", input="pw\n").exit_code == 0
    args = ["--out", str(out), "--state", str(state), "--port", str(port), "--app-port", str(app_port)]
    assert run("broker", "config", *args, "--run-as", getpass.getuser()).exit_code == 0

    process = await asyncio.create_subprocess_exec(
        str(binary), "-c", str(out / "mosquitto.conf"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            async for line in process.stdout:
                if b" running" in line:
                    break
        pki = FleetPKI(state / "pki")
        car = await probe_connect("127.0.0.1", port, ssl_context=pki.client_ssl_context(VIN), client_id=VIN)
        assert car.accepted, car
        app = await probe_connect(
            "127.0.0.1",
            app_port,
            ssl_context=pki.client_ssl_context(None),
            client_id="app-1",
            username="app-1",
            password="pw",
        )
        assert app.accepted, app
    finally:
        process.terminate()
        await process.wait()
