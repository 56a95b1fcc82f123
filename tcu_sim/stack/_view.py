"""What `tcu-sim up` shows: a live table on a terminal (rich), plain lines otherwise, and the login instructions.

- `render(snapshot, ...)` turns a `StackSnapshot` into the live view: a header (broker, cloud, fleet, counts),
  one row per car (online, locked, heater, position, last command, faults) and the latest commands. Pure.
- `LiveView` redraws it a few times a second and prints a line above it for every command that finished
  (app → cloud → car → result) and every change (a car offline, the cloud reconnecting).
- `PlainView` prints the same lines, plus a summary when the counts change, for a log file or CI.
- `login_instructions(...)` says how a second terminal logs in as the demo user and locks a car.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tcu_sim.stack._stack import LocalStack, StackEvent, StackSnapshot
from tcu_sim.stack._trace import CommandTrace

__all__ = ["LiveView", "LoginHelp", "PlainView", "login_instructions", "render", "summary_line"]

_REFRESH_S = 0.25  # real seconds between redraws
_COMMAND_LINES = 6
_OVERHEAD_LINES = 10 + 5 + 2 + _COMMAND_LINES  # header panel, table head and borders, command panel


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def summary_line(snapshot: StackSnapshot) -> str:
    """The counts in one line: cars online, locked, heaters on, commands by state."""
    cars = snapshot.cars
    locked = sum(1 for c in cars if c.locked)
    heating = sum(1 for c in cars if c.heater != "off")
    faulty = sum(1 for c in cars if c.faults)
    commands = ", ".join(f"{n} {state}" for state, n in sorted(snapshot.command_counts.items())) or "none"
    return (
        f"online {snapshot.online}/{len(cars)}, locked {locked}, heater/ventilation on {heating}, "
        f"with faults {faulty}; commands: {commands}"
    )


def render(snapshot: StackSnapshot, *, height: int | None = None, hint: str | None = None) -> RenderableType:
    """The live view of `snapshot`; with `height`, the car table is cut to fit that many terminal lines."""
    head = Table.grid(padding=(0, 1))
    head.add_column(style="bold")
    head.add_column()
    online = f"{snapshot.online}/{len(snapshot.cars)} online"
    if snapshot.all_online_s is not None:
        online += f" (all online {snapshot.all_online_s:.2f} s after the broker was ready)"
    head.add_row("broker", f"{snapshot.broker_url}  {snapshot.broker}")
    if snapshot.app_url:
        head.add_row("apps", snapshot.app_url)
    head.add_row("cloud", snapshot.cloud)
    head.add_row("fleet", f"{snapshot.fleet}: {online}")
    head.add_row("now", f"{summary_line(snapshot)}  · up {_ago(snapshot.uptime_s)}"
                 + (f" · time scale {snapshot.time_scale:g}" if snapshot.time_scale != 1 else ""))
    if hint:
        head.add_row("try", hint)

    table = Table(expand=True, pad_edge=False, header_style="bold")
    # One line per car whatever the width (a cut cell ends in "…"), so the table fits the height it is given;
    # VIN, state and position keep their width, the free-text columns share what is left.
    columns: tuple[tuple[str, JustifyMethod, int, int | None], ...] = (
        ("VIN", "left", 17, None), ("model", "left", 6, 2), ("users", "left", 5, 2), ("online", "center", 6, None),
        ("locked", "center", 6, None), ("heater", "left", 6, None), ("position", "left", 18, None),
        ("last command", "left", 8, 3), ("faults", "left", 6, 3),
    )
    for name, justify, min_width, ratio in columns:
        table.add_column(name, overflow="ellipsis", no_wrap=True, justify=justify, min_width=min_width, ratio=ratio)
    rows = snapshot.cars
    if height is not None:
        room = max(3, height - _OVERHEAD_LINES)
        if len(rows) > room:
            # Show the cars with something to see first: offline or faulty, then the rest in fleet order.
            rows = tuple(sorted(rows, key=lambda c: (c.online and not c.faults)))[: room - 1]
            table.caption = f"… and {len(snapshot.cars) - len(rows)} more cars"
    for car in rows:
        table.add_row(
            car.vin,
            car.model,
            car.users,
            Text("●", style="green") if car.online else Text("○ off", style="red"),
            "🔒" if car.locked else Text("open", style="yellow"),
            car.heater if car.heater == "off" else Text(car.heater, style="magenta"),
            car.position,
            car.last_command,
            Text(car.faults, style="red") if car.faults else "",
        )
    commands = Text("\n".join(snapshot.commands[-_COMMAND_LINES:]) or "(no app command yet)")
    return Group(
        Panel(head, title=f"tcu-sim up · {snapshot.fleet}", title_align="left"),
        table,
        Panel(commands, title="latest commands (app → cloud → car → result)", title_align="left"),
    )


@dataclass(frozen=True, slots=True)
class LoginHelp:
    """What a second terminal needs to act as a fleet-file user."""

    program: str  # how to call tcu-sim there, e.g. "tcu-sim" or ".venv/bin/tcu-sim"
    state_dir: str
    session_path: str
    app_url: str
    email: str
    password: str | None = field(repr=False)
    """Shown only on a terminal (None: say where to find it instead; stdout may end up in a CI log)."""
    spin: str | None = field(repr=False)
    vins: Sequence[str]
    #: Where the password and S-PIN are written: the fleet file and the user's entry in it.
    secrets_from: str = ""


def login_instructions(help_: LoginHelp) -> list[str]:
    """The lines that tell a second terminal how to log in as the user, list the cars and lock one."""
    vin = help_.vins[0] if help_.vins else "VIN"
    p = help_.program
    where = help_.secrets_from or "the fleet file"
    password = help_.password if help_.password is not None else f"`password` of this user in {where}"
    spin = help_.spin if help_.spin is not None else f"`spin` of this user in {where}"
    lines = [
        f"In a second terminal (in this directory), be {help_.email}'s phone app on {help_.app_url}:",
        f"  export TCU_SIM_APP_SESSION_PATH={help_.session_path} TCU_SIM_APP_STATE_DIR={help_.state_dir}",
        f"  {p} app login {help_.email}        # password: {password}",
        f"  {p} app vehicles",
        f"  {p} app lock {vin}      # S-PIN: {spin}",
        f"  {p} app status {vin}",
        f"  {p} app heater start {vin} --duration 20",
    ]
    if len(help_.vins) > 1:
        lines.append(f"  ({help_.email}'s cars: {', '.join(help_.vins)})")
    lines.append("  (the session file holds the app listener's URL and MQTT login; `login` adds the session token)")
    return lines


class LiveView:
    """The rich live view of a running stack, until cancelled."""

    def __init__(self, stack: LocalStack, console: Console, *, hint: str | None = None) -> None:
        self.stack = stack
        self.console = console
        self.hint = hint

    def _renderable(self) -> RenderableType:
        return render(self.stack.snapshot(commands=_COMMAND_LINES), height=self.console.size.height, hint=self.hint)

    async def run(self) -> None:
        """Redraw until cancelled; print a line above the table for each finished command and each change."""
        with Live(self._renderable(), console=self.console, auto_refresh=False, transient=False) as live:

            def on_command(trace: CommandTrace) -> None:
                if trace.final:
                    live.console.print(Text(f"{_clock()} {trace.line()}"))

            def on_event(event: StackEvent) -> None:
                live.console.print(Text(f"{_clock(event.at)} {event.text}", style="dim"))

            with _subscribed(self.stack, on_command, on_event):
                while True:
                    live.update(self._renderable(), refresh=True)
                    await asyncio.sleep(_REFRESH_S)


class PlainView:
    """Plain lines for a pipe or a file: every finished command, every change, and the counts when they move."""

    def __init__(self, stack: LocalStack, out: TextIO, *, every_s: float = 30.0) -> None:
        self.stack = stack
        self.out = out
        self.every_s = every_s

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def run(self) -> None:
        """Print until cancelled."""

        def on_command(trace: CommandTrace) -> None:
            if trace.final:
                self._print(f"{_clock()} command: {trace.line()}")

        def on_event(event: StackEvent) -> None:
            self._print(f"{_clock(event.at)} {event.text}")

        last_summary, last_at = "", 0.0
        with _subscribed(self.stack, on_command, on_event):
            while True:
                summary = summary_line(self.stack.snapshot(commands=0))
                now = time.monotonic()
                if summary != last_summary or now - last_at >= self.every_s:
                    self._print(f"{_clock()} {summary}")
                    last_summary, last_at = summary, now
                await asyncio.sleep(_REFRESH_S * 4)


def _clock(at: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at).strftime("%H:%M:%S")


@contextlib.contextmanager
def _subscribed(
    stack: LocalStack, on_command: Callable[[CommandTrace], None], on_event: Callable[[StackEvent], None]
) -> Iterator[None]:
    unsubscribe_commands = stack.commands.subscribe(on_command)
    unsubscribe_events = stack.subscribe(on_event)
    try:
        yield
    finally:
        unsubscribe_commands()
        unsubscribe_events()
