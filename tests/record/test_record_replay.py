"""Record → replay over the real Mosquitto: the shipped spin-brute-force scenario's steps played by hand (wrong
S-PINs until the S-PIN locks, the right one while locked, a stranger, the lock run out, the owner unlocking)
plus an operator opening a door so that a lock fails in the car. Replayed against the same build: no divergence;
with one rule changed (3 S-PIN tries become 2): divergences and exit code 1; no secret in the file."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker.cloud import PasswordHasher
from broker.pki import OPERATOR
from tcu_sim.app import AppClient, AppRequestError
from tcu_sim.clock import VirtualClock
from tcu_sim.fleet import load_fleet
from tcu_sim.protocol import CommandState
from tcu_sim.record import REDACTED, Recorder, ReplayOptions, read_recording, record_stack, replay
from tcu_sim.stack import STACK_APP, LocalStack, StackConfig
from tcu_sim.testing.plugin import require_mosquitto

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "fleet_configs" / "scenarios" / "spin-brute-force.yaml"
DEMO = REPO / "fleet_configs" / "demo.yaml"
WAIT = 10.0
OWNER, OWNER_PASSWORD, OWNER_SPIN = "owner@tcu-sim.test", "owner-2026-pass", "2580"
STRANGER, STRANGER_PASSWORD = "stranger@tcu-sim.test", "stranger-2026-pass"
WRONG_SPINS = ("1111", "0852", "9999")


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_mosquitto()


def _answered(client: str, request_id: str) -> Any:
    def predicate(record: Mapping[str, Any]) -> bool:
        msg = record.get("msg") or {}
        return bool(record["kind"] == "responses" and record["key"] == client and msg.get("id") == request_id)

    return predicate


async def _refused(app: AppClient, recorder: Recorder, vin: str, op: str, spin: str) -> str:
    """Send `op` with `spin`; its error code (after the recorder has the answer: the clock may move next)."""
    request_id = app.new_request_id()
    with pytest.raises(AppRequestError) as caught:
        await app.command(vin, op, spin=spin, request_id=request_id)
    await recorder.wait_for(_answered(app.client_id, request_id), WAIT)
    return caught.value.code.value


async def _finished(app: AppClient, recorder: Recorder, command_id: str, state: CommandState) -> None:
    """The command reached `state`, and the recorder has the app's push saying so (the clock may move next)."""
    assert await app.wait_command(command_id, timeout=WAIT) is state
    await recorder.wait_for(
        lambda r: r["kind"] == "app_events" and (r.get("msg") or {}).get("type") == "command_progress"
        and r["msg"]["data"].get("command_id") == command_id and r["msg"]["data"].get("state") == state.value, WAIT,
    )


async def _control(client: aiomqtt.Client, recorder: Recorder, vin: str, action: str, **params: Any) -> None:
    control_id = f"c-{action}-{time.monotonic_ns()}"
    body = json.dumps({"action": action, "params": params, "id": control_id}).encode()
    await client.publish(f"sim/{vin}/control", body, qos=1)
    record = await recorder.wait_for(
        lambda r: r["kind"] == "control_results" and (r.get("msg") or {}).get("id") == control_id, WAIT
    )
    assert record["msg"]["ok"] is True


async def _record_session(out: Path, state: Path) -> dict[str, str]:
    """Run the session on a fresh stack under a virtual clock, recording it to `out`; the session tokens seen."""
    fleet = load_fleet(FLEET)
    clock = VirtualClock(start=time.time())  # the cars' free licence year runs from their registration day
    config = StackConfig(state_dir=state, port=0, broker="mosquitto")
    tokens: dict[str, str] = {}
    async with LocalStack(fleet, config, clock=clock, passwords=PasswordHasher.for_tests()) as stack:
        vin = stack.cars[0].vin
        pki = stack.pki
        pki.ensure_operator()
        device = stack.broker.device
        operator = aiomqtt.Client(device.host, device.port, identifier=OPERATOR,
                                  tls_context=pki.client_ssl_context(OPERATOR))
        async with record_stack(stack, out, fleet_file=FLEET) as recorder, operator, \
                stack.app_client() as owner, stack.app_client(STACK_APP) as stranger:
            await owner.login(OWNER, OWNER_PASSWORD)
            await stranger.login(STRANGER, STRANGER_PASSWORD)
            tokens = {"owner": str(owner.token), "stranger": str(stranger.token)}
            codes = [await _refused(owner, recorder, vin, "unlock", spin) for spin in WRONG_SPINS]
            assert codes == ["SPIN_INCORRECT", "SPIN_INCORRECT", "SPIN_LOCKED"]
            assert await _refused(owner, recorder, vin, "unlock", OWNER_SPIN) == "SPIN_LOCKED"
            assert await _refused(stranger, recorder, vin, "unlock", "9137") == "VEHICLE_NOT_FOUND"
            await clock.advance(301)  # the first S-PIN lock (300 s) runs out
            command = await owner.unlock(vin, OWNER_SPIN)
            await _finished(owner, recorder, command, CommandState.SUCCEEDED)
            await _control(operator, recorder, vin, "open_door", door="front_left")
            command = await owner.lock(vin, OWNER_SPIN)
            await _finished(owner, recorder, command, CommandState.FAILED)  # door_open, in the car
            await _control(operator, recorder, vin, "close_door", door="front_left")
            command = await owner.lock(vin, OWNER_SPIN)
            await _finished(owner, recorder, command, CommandState.SUCCEEDED)
            await recorder.wait_for(
                lambda r: r["kind"] == "status" and (r["jws"]["claims"]["body"] or {}).get("locked") is True
                and not r.get("retained") and r["vt"] > clock.now() - 1, WAIT,
            )
    return tokens


async def test_a_recording_replays_against_the_same_build_without_divergence(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl.gz"
    tokens = await _record_session(out, tmp_path / "state")

    recording = read_recording(out)
    kinds = {r["kind"] for r in recording.records}
    assert {"requests", "responses", "commands", "results", "status", "control", "control_results"} <= kinds
    assert recording.header.fleet == str(FLEET)
    assert recording.header.seed == 4711

    # No secret anywhere in the file: passwords, S-PINs (right and wrong), session tokens.
    text = gzip.decompress(out.read_bytes()).decode()
    for secret in (OWNER_PASSWORD, STRANGER_PASSWORD, *tokens.values()):
        assert secret not in text
    for spin in (OWNER_SPIN, "9137", *WRONG_SPINS):
        assert f'"{spin}"' not in text
    assert REDACTED in text

    report = await replay(recording, ReplayOptions(state_dir=tmp_path / "replay"))
    assert report.divergences == [], report.text()
    assert report.inputs == sum(1 for r in recording.records if r["kind"] in ("requests", "control")) >= 12
    assert any(c.startswith("command (car)") for c in report.checked)
    assert any(c.startswith("control result") for c in report.checked)


async def test_a_changed_rule_is_reported_as_a_divergence_with_exit_code_1(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl.gz"
    await _record_session(out, tmp_path / "state")
    junit = tmp_path / "replay.xml"

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tcu_sim.cli", "--log-level", "WARNING", "replay", str(out),
        "--cloud-config", "spin_max_tries=2", "--junit", str(junit),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    async with asyncio.timeout(120):
        raw_out, raw_err = await process.communicate()
    stdout = raw_out.decode()
    assert process.returncode == 1, stdout + raw_err.decode()
    # The second wrong S-PIN now locks it: what the app was told differs from the recording.
    assert "recorded SPIN_INCORRECT remaining_tries=1, replayed SPIN_LOCKED" in stdout
    assert "recorded SPIN_INCORRECT remaining_tries=2, replayed SPIN_INCORRECT remaining_tries=1" in stdout
    xml = junit.read_text(encoding="utf-8")
    assert 'failures="2"' in xml
    assert "SPIN_LOCKED" in xml


async def test_an_enrolment_by_pairing_code_replays_with_the_replays_own_code(tmp_path: Path) -> None:
    """The cloud issues a pairing code, the person enters it in the car, the car is enrolled and locked: the
    replay gets a code of its own from its cloud and enters that one (the file holds neither)."""
    out = tmp_path / "enrol.jsonl.gz"
    fleet = load_fleet(DEMO)
    user = next(u for u in fleet.users if u.email == "demo@tcu-sim.test")
    password, spin = user.password.get_secret_value(), user.spin.get_secret_value()
    clock = VirtualClock(start=time.time())
    config = StackConfig(state_dir=tmp_path / "state", port=0, broker="mosquitto")
    async with LocalStack(fleet, config, clock=clock, passwords=PasswordHasher.for_tests()) as stack:
        vin = [c.vin for c in stack.cars if c.group == "ateca-radio"][1]  # not enrolled by the fleet file
        stack.pki.ensure_operator()
        device = stack.broker.device
        operator = aiomqtt.Client(device.host, device.port, identifier=OPERATOR,
                                  tls_context=stack.pki.client_ssl_context(OPERATOR))
        async with record_stack(stack, out, fleet_file=DEMO) as recorder, operator, stack.app_client() as app:
            await app.login(user.email, password)
            added = await app.add_vehicle(vin)
            assert added.method == "pairing_code"
            assert added.pairing_code is not None
            code = added.pairing_code
            await _control(operator, recorder, vin, "enter_pairing_code", code=code)
            await recorder.wait_for(  # enrolled: the cloud confirms it on the car's infotainment
                lambda r: r["kind"] == "commands" and r["key"] == vin
                and r["jws"]["claims"]["body"].get("op") == "infotainment.notify", WAIT,
            )
            assert await _refused(app, recorder, vin, "lock", "1111") == "SPIN_INCORRECT"
            command = await app.lock(vin, spin)
            await _finished(app, recorder, command, CommandState.SUCCEEDED)
            await recorder.wait_for(
                lambda r: r["kind"] == "results" and r["key"] == vin
                and r["jws"]["claims"]["body"].get("state") == "succeeded", WAIT,
            )

    text = gzip.decompress(out.read_bytes()).decode()
    assert code not in text
    assert password not in text
    assert f'"{spin}"' not in text
    report = await replay(read_recording(out), ReplayOptions(state_dir=tmp_path / "replay"))
    assert report.divergences == [], report.text()
    assert any(c.startswith(f"control result {vin}") for c in report.checked)
