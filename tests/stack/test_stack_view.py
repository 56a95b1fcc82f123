"""The live view, the command trace lines, the login instructions and the state files — pure, no broker."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from tcu_sim.protocol import CommandState
from tcu_sim.stack import (
    CarRow,
    CommandLog,
    LiveView,
    LoginHelp,
    StackError,
    StackSnapshot,
    login_instructions,
    render,
    summary_line,
)
from tcu_sim.stack._files import load_app_logins, load_server_secret, write_app_session

VIN = "VSSZZZKH0RN796056"
OTHER = "VSSZZZKF8PM919930"


def _row(vin: str, **changes: object) -> CarRow:
    fields: dict[str, object] = {
        "vin": vin, "model": "leon/media_system", "group": "leon", "users": "demo (P)", "online": True,
        "locked": True, "heater": "off", "position": "41.39419, 2.16765", "last_command": "", "faults": "",
    }
    fields.update(changes)
    return CarRow(**fields)  # type: ignore[arg-type]  # the test builds the fields by name


def _snapshot(cars: tuple[CarRow, ...], commands: tuple[str, ...] = ()) -> StackSnapshot:
    return StackSnapshot(
        fleet="demo", broker="Mosquitto 2.0.11", broker_url="mqtts://127.0.0.1:8883",
        app_url="mqtts://127.0.0.1:8884", cloud="connected; 40 car messages applied, none refused, 3 app requests",
        cars=cars, online=sum(c.online for c in cars), all_online_s=0.41, commands=commands,
        command_counts={"succeeded": 1}, uptime_s=75,
    )


def _text(renderable: object, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_view_shows_every_car_and_the_latest_commands() -> None:
    cars = (
        _row(VIN, locked=False, heater="heating 25 min", last_command="unlock succeeded"),
        _row(OTHER, online=False, faults="held offline: operator", users=""),
    )
    text = _text(render(_snapshot(cars, ("unlock VSS... by demo@tcu-sim.test: … → succeeded",)), hint="try me"))
    assert "mqtts://127.0.0.1:8883" in text
    assert "mqtts://127.0.0.1:8884" in text
    assert "1/2 online (all online 0.41 s after the broker was ready)" in text
    assert "heating 25 min" in text
    assert "unlock succeeded" in text
    assert "offline" in text
    assert "held offline: operator" in text
    assert "unlock VSS... by demo@tcu-sim.test" in text
    assert "try me" in text
    assert "up 0:01:15" in text


def test_a_short_terminal_shows_the_cars_with_problems_first() -> None:
    cars = (*tuple(_row(f"VSSZZZKH0RN7960{i:02d}") for i in range(30)), _row(OTHER, online=False))
    text = _text(render(_snapshot(cars), height=24))
    assert OTHER in text
    assert "more cars" in text
    assert text.count("VSSZZZKH0RN7960") < 30


def test_doors_windows_and_locks_at_a_glance_at_80_columns() -> None:
    cars = (
        _row(VIN, locked=False, doors=("front_left", "trunk"), windows=("rear_right",),
             faults="held offline: operator", last_command="unlock succeeded"),
        _row(OTHER),
    )
    text = _text(render(_snapshot(cars), width=80, height=40), width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = {vin: line for line in text.splitlines() for vin in (VIN, OTHER) if vin in line}
    assert "unlocked" in rows[VIN]
    assert "FL trunk · win RR" in rows[VIN]  # the open door and window, not hidden behind a "locked" column
    assert " locked " in rows[OTHER]
    assert "shut" in rows[OTHER]
    assert "open" not in rows[OTHER]  # an unlocked or locked car never reads "open" unless something is
    assert "41.39419" not in text  # position is the column that goes at 80 columns; VIN, lock, doors stay
    wide = _text(render(_snapshot(cars), width=200), width=200)
    assert "41.39419" in wide
    assert "leon/media_system" in wide


def test_ten_thousand_cars_fit_a_terminal() -> None:
    cars = tuple(_row(f"VSSZZZKH0RN{i:06d}") for i in range(10_000))
    cars = (*cars[:5000], _row(OTHER, doors=("hood",)), *cars[5000:])
    text = _text(render(_snapshot(cars), width=80, height=40), width=80)
    assert len(text.splitlines()) <= 40 + 6  # the table is cut to the height (wrapped command lines aside)
    assert OTHER in text  # a car with something open comes first
    assert "… and 9991 more cars" in text  # 10 rows fit: 40 lines less the header, table frame and commands


def test_the_summary_counts() -> None:
    cars = (_row(VIN, heater="ventilation 10 min"), _row(OTHER, locked=False, faults="signal 20%"))
    assert summary_line(_snapshot(cars)) == (
        "online 2/2, locked 1, heater/ventilation on 1, with faults 1; commands: 1 succeeded"
    )


async def _step(log: CommandLog, command_id: str, state: CommandState, at: float, reason: str | None = None) -> object:
    return await log.record(
        command_id=command_id, vin=VIN, op="lock", user="demo@tcu-sim.test", state=state, created_at=100.0, at=at,
        reason=reason,
    )


async def test_a_command_trace_becomes_one_line_and_stays_final() -> None:
    log = CommandLog(kept=2)
    seen: list[str] = []
    log.subscribe(lambda trace: seen.append(trace.state.value))
    await _step(log, "cmd-1", CommandState.DELIVERED, 100.004)
    trace = await _step(log, "cmd-1", CommandState.FAILED, 100.02, "door_open")
    await _step(log, "cmd-1", CommandState.SUCCEEDED, 100.5)  # a final state never changes
    assert seen == ["delivered", "failed"]
    final = await log.wait_final("cmd-1", 1)
    assert final is trace
    assert final.line() == (
        f"lock {VIN} by demo@tcu-sim.test: app → cloud → car (delivered 4 ms) → failed (door_open) after 20 ms"
    )
    assert log.last_for(VIN) is trace
    await _step(log, "cmd-2", CommandState.DELIVERED, 101)
    await _step(log, "cmd-3", CommandState.DELIVERED, 101)
    assert log.get("cmd-1") is None  # the oldest is forgotten
    with pytest.raises(TimeoutError):
        await log.wait_final("cmd-3", 0.01)


async def test_a_command_for_an_offline_car_is_queued_not_delivered() -> None:
    log = CommandLog()
    lines: list[str] = []
    log.subscribe(lambda trace: lines.append(trace.line()) if trace.queued_offline or trace.final else None)
    await log.record(command_id="c", vin=VIN, op="unlock", user="demo@tcu-sim.test", state=CommandState.DELIVERED,
                     created_at=100.0, at=100.003, reason=None, car_online=False)
    await log.record(command_id="c", vin=VIN, op="unlock", user="demo@tcu-sim.test",
                     state=CommandState.IN_PROGRESS, created_at=100.0, at=129.1, reason=None)
    await log.record(command_id="c", vin=VIN, op="unlock", user="demo@tcu-sim.test", state=CommandState.SUCCEEDED,
                     created_at=100.0, at=129.2, reason=None)
    assert lines == [
        f"unlock {VIN} by demo@tcu-sim.test: app → cloud → car (queued for the offline car 3 ms) → …",
        f"unlock {VIN} by demo@tcu-sim.test: app → cloud → car (queued for the offline car 3 ms, received by the "
        "car 29.1 s) → succeeded after 29.2 s",
    ]


class _FakeStack:
    """What `LiveView` reads of a stack: a snapshot and three subscriptions (no broker, no cloud)."""

    def __init__(self, snapshot: StackSnapshot) -> None:
        self.current = snapshot
        self.drawn: list[StackSnapshot] = []
        self.redrawn = asyncio.Event()
        self.changes: list[Callable[[], None]] = []
        self.commands = CommandLog()

    def snapshot(self, *, commands: int) -> StackSnapshot:
        self.drawn.append(self.current)
        self.redrawn.set()
        return self.current

    def subscribe(self, listener: object) -> Callable[[], None]:
        return lambda: None

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        self.changes.append(listener)
        return lambda: self.changes.remove(listener)


async def test_the_live_view_redraws_on_an_event_not_on_a_timer() -> None:
    before = _snapshot((_row(VIN),))
    fake = _FakeStack(before)
    console = Console(file=io.StringIO(), width=80, height=30, force_terminal=True, color_system=None)
    view = LiveView(fake, console, tick_s=3600)  # type: ignore[arg-type]  # the fake has what the view reads
    task = asyncio.create_task(view.run())
    try:
        async with asyncio.timeout(10):
            while not fake.changes:  # subscribed, first frame drawn
                fake.redrawn.clear()
                await fake.redrawn.wait()
            fake.current = _snapshot((_row(VIN, doors=("front_left",)),))
            fake.redrawn.clear()
            for listener in fake.changes:
                listener()  # what the stack does after each event it reads
            await fake.redrawn.wait()  # an hour-long tick: only the event can have caused this
        assert fake.drawn[-1] is fake.current
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_the_login_instructions_name_the_session_the_user_and_a_car() -> None:
    lines = login_instructions(
        LoginHelp(
            program="tcu-sim", state_dir=".tcu-sim/demo", session_path=".tcu-sim/demo/app-session.json",
            app_url="mqtts://127.0.0.1:8884", email="demo@tcu-sim.test", password="tcu-sim-demo-2026", spin="4711",
            vins=[VIN, OTHER],
        )
    )
    text = "\n".join(lines)
    assert "export TCU_SIM_APP_SESSION_PATH=.tcu-sim/demo/app-session.json TCU_SIM_APP_STATE_DIR=.tcu-sim/demo" in text
    assert "tcu-sim app login demo@tcu-sim.test" in text
    assert f"tcu-sim app lock {VIN}" in text
    assert "S-PIN: 4711" in text
    assert re.search(rf"app heater start {VIN} .*# S-PIN too", text)  # it asks for the S-PIN as lock does
    assert OTHER in text


def test_the_app_session_file_keeps_a_login_while_the_broker_stays(tmp_path: Path) -> None:
    path = tmp_path / "app-session.json"
    write_app_session(path, broker="mqtts://127.0.0.1:8884", username="demo-app", mqtt_password="pw")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "token": "t-1", "email": "demo@tcu-sim.test"}))
    write_app_session(path, broker="mqtts://127.0.0.1:8884", username="demo-app", mqtt_password="pw")
    assert json.loads(path.read_text())["token"] == "t-1"
    write_app_session(path, broker="mqtts://127.0.0.1:9884", username="demo-app", mqtt_password="pw")
    data = json.loads(path.read_text())
    assert "token" not in data
    assert data["broker"] == "mqtts://127.0.0.1:9884"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_app_logins_and_the_server_secret_are_made_once(tmp_path: Path) -> None:
    logins = load_app_logins(tmp_path / "app-logins.json", ["a", "b"])
    assert load_app_logins(tmp_path / "app-logins.json", ["a", "b"]) == logins
    assert set(load_app_logins(tmp_path / "app-logins.json", ["c"])) == {"a", "b", "c"}
    assert stat.S_IMODE((tmp_path / "app-logins.json").stat().st_mode) == 0o600
    secret = load_server_secret(tmp_path / "cloud" / "server.secret")
    assert len(secret) == 32
    assert load_server_secret(tmp_path / "cloud" / "server.secret") == secret
    (tmp_path / "short").write_bytes(b"x")
    with pytest.raises(StackError, match="at least 16 bytes"):
        load_server_secret(tmp_path / "short")
