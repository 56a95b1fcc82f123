"""What the stack saw of each app command on its way app → cloud → car → result, for the live view and tests.

The cloud reports every step of a command (`delivered` when the broker took it for the car, `in_progress`
when the car accepted it, then the final state); `CommandLog` keeps the recent ones and tells listeners about
each step. A delivery while the car is offline (the stack knows from the fleet's connection events) is only the
broker queueing it in the car's session: the line says "queued for the offline car", and "received by the car"
when the car took it (`in_progress`). Nothing here holds a secret: a command carries no S-PIN once the cloud has
checked it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from tcu_sim.protocol import CommandState

__all__ = ["CommandLog", "CommandStep", "CommandTrace"]

_KEPT = 256  # commands remembered (oldest forgotten first)


@dataclass(frozen=True, slots=True)
class CommandStep:
    """One state of a command, `after_s` clock seconds after the app asked for it."""

    state: CommandState
    after_s: float
    car_online: bool = True
    """Whether the car was online at this step (a `delivered` to an offline car is only queued by the broker)."""

    def text(self) -> str:
        """`delivered 3 ms`, `queued for the offline car 3 ms`, `received by the car 29.1 s`."""
        if self.state is CommandState.DELIVERED and not self.car_online:
            return f"queued for the offline car {_ms(self.after_s)}"
        if self.state is CommandState.IN_PROGRESS:
            return f"received by the car {_ms(self.after_s)}"
        return f"{self.state.value} {_ms(self.after_s)}"


@dataclass(slots=True)
class CommandTrace:
    """One app command: who asked, what for which car, and each step so far."""

    command_id: str
    vin: str
    op: str
    user: str
    created_at: float
    steps: list[CommandStep] = field(default_factory=list)
    reason: str | None = None

    @property
    def state(self) -> CommandState:
        """The latest state (`queued` before the cloud reported any step)."""
        return self.steps[-1].state if self.steps else CommandState.QUEUED

    @property
    def final(self) -> bool:
        """True once the command reached a final state (it never changes again)."""
        return self.state.is_final

    @property
    def queued_offline(self) -> bool:
        """True while the command waits in the broker for its offline car."""
        last = self.steps[-1] if self.steps else None
        return last is not None and last.state is CommandState.DELIVERED and not last.car_online

    def line(self) -> str:
        """One line: `lock VSS... by demo@...: app → cloud → car (delivered 3 ms, received by the car 9 ms) →
        succeeded after 20 ms`; `(queued for the offline car 2 ms, received by the car 29.1 s)` for an offline car."""
        steps = ", ".join(s.text() for s in self.steps if not s.state.is_final)
        reason = f" ({self.reason})" if self.reason else ""
        path = f"app → cloud → car ({steps})" if steps else "app → cloud"
        outcome = f"{self.state.value}{reason} after {_ms(self.steps[-1].after_s)}" if self.final else "…"
        return f"{self.op} {self.vin} by {self.user}: {path} → {outcome}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


class CommandLog:
    """The recent commands, by id, and the listeners told about every step."""

    def __init__(self, kept: int = _KEPT) -> None:
        self._kept = kept
        self._traces: OrderedDict[str, CommandTrace] = OrderedDict()
        self._listeners: list[Callable[[CommandTrace], None]] = []
        self._changed = asyncio.Condition()
        self.steps_seen = 0

    def __repr__(self) -> str:
        return f"CommandLog(commands={len(self._traces)}, steps={self.steps_seen})"

    def subscribe(self, listener: Callable[[CommandTrace], None]) -> Callable[[], None]:
        """Call `listener(trace)` after every step; returns the function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def recent(self, count: int) -> list[CommandTrace]:
        """The `count` most recent commands, newest last."""
        return list(self._traces.values())[-count:]

    def get(self, command_id: str) -> CommandTrace | None:
        """The trace of one command, if it is still remembered."""
        return self._traces.get(command_id)

    def last_for(self, vin: str) -> CommandTrace | None:
        """The newest command for car `vin`."""
        return next((t for t in reversed(self._traces.values()) if t.vin == vin), None)

    async def record(
        self,
        *,
        command_id: str,
        vin: str,
        op: str,
        user: str,
        state: CommandState,
        created_at: float,
        at: float,
        reason: str | None,
        car_online: bool = True,
    ) -> CommandTrace:
        """Note one step of a command (steps of a command already final are ignored)."""
        trace = self._traces.get(command_id)
        if trace is None:
            trace = CommandTrace(command_id, vin, op, user, created_at)
            self._traces[command_id] = trace
            while len(self._traces) > self._kept:
                self._traces.popitem(last=False)
        if trace.final:
            return trace
        trace.steps.append(CommandStep(state, max(0.0, at - created_at), car_online))
        trace.reason = reason
        self.steps_seen += 1
        for listener in list(self._listeners):
            listener(trace)
        async with self._changed:
            self._changed.notify_all()
        return trace

    async def wait_final(self, command_id: str, timeout: float) -> CommandTrace:
        """Wait until the command reached a final state here; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: (t := self._traces.get(command_id)) is not None and t.final)
        trace = self._traces[command_id]
        return trace
