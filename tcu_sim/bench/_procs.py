"""Child processes the benchmark measures from the outside: `tcu-sim fleet run` and `tcu-sim cloud run`.

Their stderr goes to a file that the bench tails (a pipe the bench read too slowly would stall the child's
event loop in the middle of what is being measured, e.g. 10,000 cars logging their disconnect at once); its lines
are kept in a bounded tail, JSON log lines are counted by event, and a caller can wait for a line matching a
pattern. `stop()` sends SIGTERM (the CLI leaves
its contexts cleanly) and SIGKILL after a grace period, so no child outlives the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil

__all__ = ["BenchProcessError", "ChildProcess", "tcu_sim_command"]

_TAIL = 60
_POLL_S = 0.05  # how often the log file is read; a line's time is when it was read (at most this late)


class BenchProcessError(RuntimeError):
    """A child process ended, or did not say what was awaited, in time; the message quotes its stderr."""


def tcu_sim_command() -> list[str]:
    """How to start the `tcu-sim` CLI of this interpreter's environment."""
    script = Path(sys.executable).with_name("tcu-sim")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "tcu_sim.cli"]


class ChildProcess:
    """One child process (an async context manager): started on enter, stopped on exit."""

    def __init__(
        self, name: str, argv: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        self.started_at = 0.0
        self.events: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}  # JSON log event -> time.monotonic() it was first read
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tail: deque[str] = deque(maxlen=_TAIL)
        self._lines: list[tuple[float, str]] = []  # only lines that are not JSON logs (the CLI's own messages)
        self._changed = asyncio.Condition()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"ChildProcess({self.name!r}, {state})"

    @property
    def pid(self) -> int:
        """The process id (once started)."""
        if self._process is None:
            raise BenchProcessError(f"{self.name}: not started")
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.returncode is None

    def psutil(self) -> psutil.Process:
        """A psutil handle on the process (CPU times, memory)."""
        return psutil.Process(self.pid)

    def tail(self) -> str:
        """The last lines it wrote to stderr, for error messages."""
        return "\n".join(self._tail) or "(nothing on stderr)"

    async def __aenter__(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        with self.log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                env=self.env,
            )
        self._reader = asyncio.create_task(self._read(self._process), name=f"bench.{self.name}.stderr")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self.stop())

    async def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace_s`; returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace_s):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._reader is not None:
            try:
                async with asyncio.timeout(5):
                    await self._reader
            except TimeoutError:
                self._reader.cancel()
            self._reader = None
        return process.returncode

    def kill_now(self) -> None:
        """SIGKILL without waiting: the last resort of a teardown."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        """Tail the log file until the process has ended and everything it wrote was read."""
        pending = b""
        with self.log_path.open("rb") as file:
            while True:
                chunk = file.read(1 << 20)
                if chunk:
                    *lines, pending = (pending + chunk).split(b"\n")
                    await self._take([raw.decode("utf-8", "replace") for raw in lines])
                    continue
                if process.returncode is not None:
                    break
                await asyncio.sleep(_POLL_S)
        if pending:
            await self._take([pending.decode("utf-8", "replace")])
        async with self._changed:
            self._changed.notify_all()

    async def _take(self, lines: list[str]) -> None:
        now = time.monotonic()
        async with self._changed:
            for line in lines:
                self._tail.append(line[:500])
                event = _json_event(line)
                if event is not None:
                    self.events[event] += 1
                    self.first_seen.setdefault(event, now)
                else:
                    self._lines.append((now, line))
            self._changed.notify_all()

    async def wait_for_line(self, pattern: str, timeout: float, *, since: float = 0.0) -> tuple[float, re.Match[str]]:
        """The first non-JSON stderr line matching `pattern` (with when it was read, `time.monotonic()`), among
        the lines read at or after `since`. Raises BenchProcessError when the process ends first or nothing
        matches within `timeout`."""
        regex = re.compile(pattern)
        checked = 0
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    for at, line in self._lines[checked:]:
                        match = regex.search(line) if at >= since else None
                        if match:
                            return at, match
                    checked = len(self._lines)
                    if not self.running and self._reader is not None and self._reader.done():
                        raise BenchProcessError(
                            f"{self.name} exited ({self._process.returncode if self._process else '?'}) before"
                            f" {pattern!r}:\n{self.tail()}"
                        )
                    await self._changed.wait()
        except TimeoutError:
            raise BenchProcessError(f"{self.name}: no {pattern!r} within {timeout:g} s:\n{self.tail()}") from None

    def lines(self) -> list[tuple[float, str]]:
        """Every non-JSON stderr line so far, with when it was read."""
        return list(self._lines)

    async def wait_for_event(self, event: str, count: int, timeout: float) -> None:
        """Wait until the JSON log event `event` was seen `count` times (BenchProcessError after `timeout`)."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self.events[event] >= count or not self.running)
        except TimeoutError:
            raise BenchProcessError(f"{self.name}: {event!r} not logged within {timeout:g} s") from None
        if self.events[event] < count:
            raise BenchProcessError(f"{self.name} exited before logging {event!r}:\n{self.tail()}")


def _json_event(line: str) -> str | None:
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    event = data.get("event") if isinstance(data, dict) else None
    return event if isinstance(event, str) else "?"
