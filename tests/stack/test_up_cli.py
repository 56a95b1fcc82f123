"""`tcu-sim up` as a user runs it — a process of its own on the real Mosquitto — and a second terminal's
`tcu-sim app ...` locking a car while it runs; a second `up` on the same state directory refused (exit 2) while
the first keeps working; `tcu-sim car` finding the stack's broker from its state directory; no secret on a
piped stdout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from stack_kit import DEMO_FLEET, REPO, demo, demo_user

from tcu_sim.testing.plugin import require_mosquitto

TCU_SIM = [sys.executable, "-c", "from tcu_sim.cli import main; main()"]
START = 60.0  # seconds `up` may take to say it is ready (a slow CI machine)


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_mosquitto()


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # never the user's own app session
    return env


@dataclass
class UpProcess:
    """A running `tcu-sim up`, its output so far, and a way to wait for a line."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self.changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.changed.notify_all()

    async def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(timeout), self.changed:
                while True:
                    for line in self.lines:
                        if match := regex.search(line):
                            return match
                    if self.proc.returncode is not None:
                        raise AssertionError(f"`up` exited ({self.proc.returncode}) before {pattern!r}")
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} within {timeout} s in:\n" + "\n".join(self.lines)) from None

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@contextlib.asynccontextmanager
async def up_process(tmp_path: Path, *args: str) -> AsyncIterator[UpProcess]:
    proc = await asyncio.create_subprocess_exec(
        *TCU_SIM, "up", str(DEMO_FLEET), "--state", str(tmp_path / "state"), "--port", "0", "--no-view", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        env=_env(tmp_path), cwd=REPO,
    )
    up = UpProcess(proc)
    reader = asyncio.create_task(up.read(), name="up.stdout")
    try:
        yield up
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
            await reader


async def _tcu_sim(tmp_path: Path, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `tcu-sim ARGS` as a process next to `up`: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *TCU_SIM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=_env(tmp_path), cwd=REPO,
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(done.stdout)


async def _app(tmp_path: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    env = _env(tmp_path)
    env["TCU_SIM_APP_SESSION_PATH"] = str(tmp_path / "state" / "app-session.json")
    env["TCU_SIM_APP_STATE_DIR"] = str(tmp_path / "state")
    proc = await asyncio.create_subprocess_exec(
        *TCU_SIM, "app", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )
    async with asyncio.timeout(90):
        out, _ = await proc.communicate(None if stdin is None else stdin.encode())
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_up_prints_how_to_log_in_and_stops_by_itself(tmp_path: Path) -> None:
    email, _, _ = demo_user(demo())
    async with up_process(tmp_path, "--duration", "1") as up:
        await up.wait_for(r"^stopped; state kept in ", START)
        async with asyncio.timeout(30):
            assert await up.proc.wait() == 0
    assert up.proc.stderr is not None
    errors = (await up.proc.stderr.read()).decode()
    assert "Traceback" not in errors, errors
    out = up.output
    assert re.search(r"^broker: Mosquitto \S+ \(pid \d+", out, re.MULTILINE), out
    assert re.search(r"^fleet: 20 cars online \d+\.\d\d s after the broker was ready", out, re.MULTILINE), out
    assert f"user {email}: 9 cars as primary (9 enrolled)" in out
    assert re.search(rf"app login {re.escape(email)} ", out), out
    assert re.search(r"app lock VSS[A-HJ-NPR-Z0-9]{14} ", out), out
    assert "TCU_SIM_APP_SESSION_PATH=" in out
    assert "mqtt_password" not in out  # the app's MQTT login stays in the session file
    # Piped (a CI log): where to find the password and S-PIN, never the values.
    _, password, spin = demo_user(demo())
    assert password not in out
    assert f"S-PIN: {spin}" not in out
    assert "# password: `password` of this user in fleet_configs/demo.yaml (users[0])" in out
    assert "# S-PIN: `spin` of this user in fleet_configs/demo.yaml (users[0])" in out
    assert not (tmp_path / "state" / "endpoints.json").exists()  # removed when `up` stopped


async def test_a_second_up_on_the_same_state_exits_2_and_the_first_keeps_working(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with up_process(tmp_path, "--duration", "120") as first:
        await first.wait_for(r"^ready", START)
        vin = (await first.wait_for(r"app lock (VSS[A-HJ-NPR-Z0-9]{14})", 1)).group(1)
        session = (state / "app-session.json").read_bytes()
        endpoints = json.loads((state / "endpoints.json").read_text())
        assert endpoints["pid"] == first.proc.pid
        assert endpoints["device_port"] != 8883  # --port 0: a port `tcu-sim car` could not guess

        code, out, err = await _tcu_sim(
            tmp_path, "up", str(DEMO_FLEET), "--state", str(state), "--port", "0", "--no-view", "--duration", "5"
        )
        assert code == 2, out + err
        assert f"in use by pid {first.proc.pid} (tcu-sim up)" in err
        assert "--state DIR" in err
        assert "starting broker" not in out  # refused before anything started
        assert (state / "app-session.json").read_bytes() == session  # nothing of the first changed
        assert json.loads((state / "endpoints.json").read_text()) == endpoints

        # The first still works, and `tcu-sim car` finds its broker from --state alone (no --broker).
        code, out, err = await _tcu_sim(tmp_path, "car", vin, "lock_key", "--state", str(state))
        assert code == 0, out + err
        assert f"{vin}: lock_key ok" in out
        code, out, err = await _tcu_sim(tmp_path, "car", vin, "open_door", "door=front_left", "--state", str(state))
        assert code == 1, out + err
        assert "refused by the car" in err
        await first.wait_for(rf"car {vin} refused open_door: .*the car is locked", 10)  # the live view says so
        code, out, err = await _tcu_sim(tmp_path, "car", vin, "unlock_key", "--state", str(state))
        assert code == 0, out + err
        code, out, err = await _tcu_sim(tmp_path, "car", vin, "open_door", "door=front_left", "--state", str(state))
        assert code == 0, out + err
        assert f"{vin}: open_door ok" in out

        first.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await first.proc.wait() == 0
    assert not (state / "endpoints.json").exists()


async def test_a_lock_left_by_a_killed_up_is_taken_over(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    dead = _dead_pid()
    (state / ".lock").write_text(json.dumps({"pid": dead, "holder": "up", "since": 0}) + "\n")
    (state / "endpoints.json").write_text(json.dumps({"pid": dead, "holder": "up", "device": "mqtts://127.0.0.1:1"}))

    # Its endpoints are stale: `tcu-sim car` says the stack is gone instead of "connection refused".
    code, out, err = await _tcu_sim(tmp_path, "car", "VSSZZZKL7MA378596", "ecall", "--state", str(state))
    assert code == 1, out + err
    assert f"(pid {dead}, tcu-sim up) is gone" in err

    async with up_process(tmp_path, "--duration", "1") as up:
        await up.wait_for(r"^ready", START)
        async with asyncio.timeout(30):
            assert await up.proc.wait() == 0


@pytest.mark.slow
async def test_a_second_terminal_locks_a_car_while_up_runs(tmp_path: Path) -> None:
    email, password, spin = demo_user(demo())
    async with up_process(tmp_path, "--duration", "120") as up:
        await up.wait_for(r"^ready", START)
        vin = (await up.wait_for(r"app lock (VSS[A-HJ-NPR-Z0-9]{14})", 1)).group(1)

        # The password piped, as a script does: read from stdin, no getpass and so no GetPassWarning.
        code, out = await _app(tmp_path, "login", email, stdin=password + "\n")
        assert code == 0, out
        assert "Warning" not in out
        assert password not in out
        code, out = await _app(tmp_path, "vehicles")
        assert code == 0, out
        assert out.splitlines()[0].split() == ["VIN", "model", "equipment", "role", "state"]
        assert vin in out
        code, out = await _app(tmp_path, "unlock", vin, stdin=spin + "\n")
        assert code == 0, out
        assert "s for the car's answer" in out  # what it waits for, before it waits
        assert re.search(r"command cmd-\S+ succeeded", out), out
        await up.wait_for(rf"command: unlock {vin} by {re.escape(email)}: app → cloud → car "
                          r"\(delivered \d+ ms, received by the car .* → succeeded", 10)

        # A door opened at the car shows in `app status`, and the car reads "unlocked", not "open".
        code, out, err = await _tcu_sim(tmp_path, "car", vin, "open_door", "door=rear_right", "--state",
                                        str(tmp_path / "state"))
        assert code == 0, out + err
        code, out = await _app(tmp_path, "refresh", vin)  # the car's next status, at once
        assert code == 0, out
        code, out = await _app(tmp_path, "status", vin)
        assert code == 0, out
        assert "  unlocked, " in out
        assert "doors: open: rear_right; windows: all closed" in out

        code, out = await _app(tmp_path, "lock", vin, "--spin", "0852")
        assert code == 1, out
        assert "SPIN_INCORRECT" in out
        assert out.count("tries left") == 1  # said once, by the cloud's message
        assert "check the S-PIN" in out  # and what to do next
        await up.wait_for(r"cloud refused 1 app request: SPIN_INCORRECT", 10)

        # An offline car: the app says it waits for the car to come back; the trace says queued, not delivered.
        code, out, err = await _tcu_sim(tmp_path, "fault", "--state", str(tmp_path / "state"), vin, "offline",
                                        "--for", "15s")  # an offline car hears no control: it comes back by itself
        assert code == 0, out + err
        await up.wait_for(rf"car {vin} offline", 10)
        # One app process waits for the car while others run beside it, each on an app login of its own (the
        # client id is the login): none pushes another off.
        waiting = asyncio.create_task(_app(tmp_path, "honk", vin, "--flash-only", "--wait-timeout", "60"))
        await up.wait_for(rf"command: honk_and_flash {vin} by {re.escape(email)}: app → cloud → car "
                          r"\(queued for the offline car \d+ ms\) → …", 30)
        code, out = await _app(tmp_path, "honk", vin, "--flash-only", "--wait-timeout", "1")
        assert code == 3, out
        assert re.search(r"car offline — waiting up to 1 s for it to come back", out), out
        assert "tcu-sim app command-status cmd-" in out  # what to do next
        code, out = await _app(tmp_path, "honk", vin, "--flash-only", "--no-wait")
        assert code == 0, out
        assert "not waiting (--no-wait)" in out
        code, out = await _app(tmp_path, "vehicles")
        assert code == 0, out
        code, out = await waiting  # the car came back (its offline ended): the first process saw it through
        assert code == 0, out
        assert "car offline — waiting up to 60 s for it to come back" in out
        assert re.search(r"command cmd-\S+ succeeded", out), out
        await up.wait_for(rf"command: honk_and_flash {vin} by {re.escape(email)}: app → cloud → car "
                          r"\(queued for the offline car \d+ ms, received by the car .*\) → succeeded", 60)

        up.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await up.proc.wait() == 0
        await up.wait_for(r"^stopped; state kept in ", 5)
    assert up.proc.stderr is not None
    errors = (await up.proc.stderr.read()).decode()
    assert "Traceback" not in errors, errors
