"""One running stack per state directory (SPEC §7), and where that stack can be reached.

    with StateLock(state_root, holder="up"):               # StateBusy when another process holds it
        write_endpoints(state_root, Endpoints(holder="up", device="mqtts://127.0.0.1:40113", ...))
        ...

The lock is `fcntl.flock` on `<state>/.lock`: the kernel releases it when its process dies, so a lock file left by
a killed process is no obstacle (its pid is simply overwritten), and the file itself is never deleted (deleting a
locked file lets a second process lock a new inode of the same name). What a holder writes into the file — its
pid and what it is — only names it in a refusal.

A whole stack (`tcu-sim up`, a test `Sandbox`) holds `.lock` exclusively. The two halves of a stack that can run
as separate processes on one directory — `tcu-sim fleet run` (one per shard) and `tcu-sim cloud run` (one per
client id) — hold `.lock` shared and their own `.lock-<role>` exclusively: a fleet and its cloud may share the
directory, a second `up`, a second fleet of the same shard or a second cloud of the same client id may not.

`<state>/endpoints.json` says where the running stack's broker listens (written by `up`, removed when it stops);
`tcu-sim car`, `fault` and `app` read it to find the broker of `--state`. A file whose pid is gone is stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import structlog

from tcu_sim.fleet._errors import FleetError

__all__ = ["ENDPOINTS_FILE", "LOCK_FILE", "Endpoints", "StateBusy", "StateLock", "read_endpoints",
           "remove_endpoints", "write_endpoints"]

LOCK_FILE = ".lock"
ENDPOINTS_FILE = "endpoints.json"

log = structlog.get_logger("tcu_sim.fleet.lock")


class StateBusy(FleetError):
    """The state directory is in use by another running process (`pid`, `holder`: `up`, `fleet run`, ...)."""

    def __init__(self, root: Path, pid: int | None, holder: str | None) -> None:
        self.root = root
        self.pid = pid
        self.holder = holder
        who = f"pid {pid} (tcu-sim {holder or '?'})" if pid is not None else "another process"
        super().__init__(
            f"state directory {root} is in use by {who}; stop that first, or run a second stack with its own "
            f"state directory: --state DIR"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _read_holder(path: Path) -> tuple[int | None, str | None]:
    """The pid and holder written in a lock file, when that pid is alive."""
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return None, None
    pid = data.get("pid") if isinstance(data, dict) else None
    holder = data.get("holder") if isinstance(data, dict) else None
    if not isinstance(pid, int) or not _alive(pid):
        return None, None
    return pid, holder if isinstance(holder, str) else None


class StateLock:
    """Held for the life of a running stack (or, with `role`, of one half of it) on a state directory.

    `holder` is what the refusal names (`up`, `fleet run`, `cloud run`, `sandbox`). Entering raises `StateBusy`
    and changes nothing when another live process holds what this one needs.
    """

    def __init__(self, root: str | os.PathLike[str], *, holder: str, role: str | None = None) -> None:
        self.root = Path(root)
        self.holder = holder
        self.role = role
        self._files: list[IO[str]] = []

    def __repr__(self) -> str:
        state = "held" if self._files else "free"
        return f"StateLock({str(self.root)!r}, holder={self.holder!r}, role={self.role!r}, {state})"

    @property
    def held(self) -> bool:
        return bool(self._files)

    def acquire(self) -> None:
        """Take the lock, or raise `StateBusy` naming the live holder."""
        if self._files:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        main = self.root / LOCK_FILE
        try:
            if self.role is None:
                self._take(main, fcntl.LOCK_EX, record=True)
            else:
                self._take(main, fcntl.LOCK_SH, record=False)
                self._take(self.root / f"{LOCK_FILE}-{self.role}", fcntl.LOCK_EX, record=True)
        except BaseException:
            self.release()
            raise

    def _take(self, path: Path, mode: int, *, record: bool) -> None:
        file = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(file.fileno(), mode | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise self._busy(path) from None
        self._files.append(file)
        if record:
            file.seek(0)
            previous = file.read()
            if previous.strip():
                log.info("state.lock_taken_over", path=str(path), previous=previous.strip()[:200])
            file.seek(0)
            file.truncate()
            file.write(json.dumps({"pid": os.getpid(), "holder": self.holder, "since": time.time()}) + "\n")
            file.flush()

    def _busy(self, path: Path) -> StateBusy:
        """Who holds `path`: its own record, else (shared holders of `.lock`) any live role holder."""
        pid, holder = _read_holder(path)
        if pid is None:
            for other in sorted(self.root.glob(f"{LOCK_FILE}*")):
                pid, holder = _read_holder(other)
                if pid is not None:
                    break
        return StateBusy(self.root, pid, holder)

    def release(self) -> None:
        """Let go (idempotent). The files stay: the next holder overwrites the record."""
        files, self._files = self._files, []
        for file in reversed(files):
            with contextlib.suppress(OSError):
                file.seek(0)
                file.truncate()  # written while locked by us; emptied before the lock goes
            file.close()  # closing drops the flock

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a running stack can be reached (`<state>/endpoints.json`). No secret: logins stay in their files."""

    pid: int
    holder: str
    device: str
    """The broker's device listener (cars, cloud, operator): `mqtts://host:port` or `mqtt://host:port`."""
    app: str | None = None
    """The app listener, without a login."""
    device_port: int | None = None
    app_port: int | None = None

    @property
    def alive(self) -> bool:
        """Is the process that wrote this still running?"""
        return _alive(self.pid)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_endpoints(root: str | os.PathLike[str], endpoints: Endpoints) -> Path:
    """Write `<root>/endpoints.json` (through a temporary file and a rename)."""
    path = Path(root) / ENDPOINTS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(endpoints.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_endpoints(root: str | os.PathLike[str]) -> Endpoints | None:
    """The endpoints a stack on `root` recorded (None when there is no such file); StateDirError-free: a file
    that cannot be read is treated as absent."""
    path = Path(root) / ENDPOINTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Endpoints(
            pid=int(data["pid"]), holder=str(data["holder"]), device=str(data["device"]),
            app=None if data.get("app") is None else str(data["app"]),
            device_port=data.get("device_port"), app_port=data.get("app_port"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_endpoints(root: str | os.PathLike[str], pid: int | None = None) -> None:
    """Remove `<root>/endpoints.json` (only when written by `pid`, if given)."""
    path = Path(root) / ENDPOINTS_FILE
    found = read_endpoints(root)
    if pid is not None and found is not None and found.pid != pid:
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
