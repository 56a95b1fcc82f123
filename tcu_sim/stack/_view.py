"""What `tcu-sim up` shows: a live table on a terminal (rich), plain lines otherwise, and the login instructions.

- `render(snapshot, ...)` turns a `StackSnapshot` into the live view: a header (broker, cloud, fleet, counts),
  one row per car (online, locked/unlocked, open doors and windows, heater, position, last command, faults) and
  the latest commands. Pure; narrower than 120 columns it drops the model and users columns, under 100 position
  and heater too (80 columns stay readable).
- `LiveView` redraws it whenever the stack reads an event (and once a second) and prints a line above it for
  every command that finished or was queued for an offline car (app → cloud → car → result) and every change
  (a car offline, the cloud reconnecting).
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

__all__ = ["LiveView", "LoginHelp", "PlainView", "login_instructions", "open_parts", "render", "summary_line"]

_TICK_S = 1.0  # real seconds between redraws when no event arrives
_MIN_REDRAW_S = 0.05  # at most 20 redraws a second, however many events arrive
_PLAIN_EVERY_S = 1.0  # real seconds between looks at the counts of the plain view
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


_SHORT = {"front_left": "FL", "front_right": "FR", "rear_left": "RL", "rear_right": "RR"}


def open_parts(doors: Sequence[str], windows: Sequence[str]) -> Text:
    """The doors and windows at a glance: `shut`, or the open ones (`FL trunk · win RR`)."""
    if not doors and not windows:
        return Text("shut", style="dim")
    parts = [" ".join(_SHORT.get(d, d) for d in doors)] if doors else []
    if windows:
        parts.append("win " + " ".join(_SHORT.get(w, w) for w in windows))
    return Text(" · ".join(parts), style="bold yellow")


def render(
    snapshot: StackSnapshot, *, height: int | None = None, width: int | None = None, hint: str | None = None
) -> RenderableType:
    """The live view of `snapshot`; with `height`, the car table is cut to fit that many terminal lines; with
    `width` under 120 columns the model and users columns go, under 100 position and heater too."""
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

    narrow = width is not None and width < 120
    table = Table(expand=True, pad_edge=False, header_style="bold")
    # One line per car whatever the width (a cut cell ends in "…"), so the table fits the height it is given;
    # VIN, state and position keep their width, the free-text columns share what is left.
    columns: tuple[tuple[str, JustifyMethod, int, int | None], ...] = (
        ("VIN", "left", 17, None), ("model", "left", 6, 2), ("users", "left", 5, 2), ("online", "center", 6, None),
        ("lock", "left", 8, None), ("open", "left", 4, None), ("heater", "left", 6, None),
        ("position", "left", 18, None), ("last command", "left", 8, 3), ("faults", "left", 6, 3),
    )
    dropped = {"model", "users"} if narrow else set()
    if width is not None and width < 100:
        dropped |= {"position", "heater"}  # the header counts the heaters on
    for name, justify, min_width, ratio in columns:
        if name not in dropped:
            table.add_column(name, overflow="ellipsis", no_wrap=True, justify=justify, min_width=min_width,
                             ratio=ratio)
    rows = snapshot.cars
    if height is not None:
        room = max(3, height - _OVERHEAD_LINES - (_COMMAND_LINES if narrow else 0))  # command lines wrap when narrow
        if len(rows) > room:
            # Show the cars with something to see first: offline, faulty or open, then the rest in fleet order.
            rows = tuple(sorted(rows, key=lambda c: c.online and not c.faults and not c.doors))[: room - 1]
            table.caption = f"… and {len(snapshot.cars) - len(rows)} more cars"
    for car in rows:
        cells: dict[str, RenderableType] = {
            "VIN": car.vin,
            "model": car.model,
            "users": car.users,
            "online": Text("● on", style="green") if car.online else Text("○ off", style="red"),
            # Words, not a padlock and "open": an unlocked car is not a car with an open door.
            "lock": Text("locked", style="green") if car.locked else Text("unlocked", style="bold yellow"),
            "open": open_parts(car.doors, car.windows),
            "heater": car.heater if car.heater == "off" else Text(car.heater, style="magenta"),
            "position": car.position,
            "last command": car.last_command,
            "faults": Text(car.faults, style="red") if car.faults else "",
        }
        table.add_row(*(cell for name, cell in cells.items() if name not in dropped))
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
        f"  {p} app heater start {vin} --duration 20      # S-PIN too",
    ]
    if len(help_.vins) > 1:
        lines.append(f"  ({help_.email}'s cars: {', '.join(help_.vins)})")
    lines.append("  (the session file holds the app listener's URL and MQTT login; `login` adds the session token)")
    return lines


class LiveView:
    """The rich live view of a running stack, until cancelled."""

    def __init__(
        self, stack: LocalStack, console: Console, *, hint: str | None = None, tick_s: float = _TICK_S
    ) -> None:
        self.stack = stack
        self.console = console
        self.hint = hint
        self.tick_s = tick_s
        """Seconds between redraws when nothing happens (the uptime and heater minutes move anyway)."""

    def _renderable(self) -> RenderableType:
        size = self.console.size
        return render(self.stack.snapshot(commands=_COMMAND_LINES), height=size.height, width=size.width,
                      hint=self.hint)

    async def run(self) -> None:
        """Redraw whenever the stack reads an event (at most every `_MIN_REDRAW_S`, so a burst costs one redraw)
        and every `tick_s` otherwise; print a line above the table for each finished command, each command
        queued for an offline car, and each change."""
        changed = asyncio.Event()
        with Live(self._renderable(), console=self.console, auto_refresh=False, transient=False) as live:

            def on_command(trace: CommandTrace) -> None:
                if trace.final or trace.queued_offline:
                    live.console.print(Text(f"{_clock()} {trace.line()}"))
                changed.set()

            def on_event(event: StackEvent) -> None:
                live.console.print(Text(f"{_clock(event.at)} {event.text}", style="dim"))
                changed.set()

            with _subscribed(self.stack, on_command, on_event), _changes(self.stack, changed.set):
                while True:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.tick_s):
                            await changed.wait()
                    changed.clear()
                    live.update(self._renderable(), refresh=True)
                    await asyncio.sleep(_MIN_REDRAW_S)  # events of the next few ms are drawn together


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
            if trace.final or trace.queued_offline:
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
                await asyncio.sleep(_PLAIN_EVERY_S)


def _clock(at: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at).strftime("%H:%M:%S")


@contextlib.contextmanager
def _changes(stack: LocalStack, listener: Callable[[], None]) -> Iterator[None]:
    unsubscribe = stack.on_change(listener)
    try:
        yield
    finally:
        unsubscribe()


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
