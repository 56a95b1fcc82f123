"""The recording file: gzip-compressed JSON Lines, a header line first, then one line per message.

    {"format": "tcu-sim-recording", "version": 1, "fleet": "fleet_configs/demo.yaml", "seed": 20260101, ...}
    {"n": 1, "t": 1767225600.12, "vt": 1767225600.0, "dir": "app>cloud", "kind": "requests", "key": "demo-app",
     "topic": "app/demo-app/requests", "msg": {"id": "r-1", "op": "login", "params": {"email": "...",
     "password": "<redacted>"}}, "user": "demo@tcu-sim.test", "secrets": {"params.password": "fleet"}}

`t` is real time, `vt` the run's clock (virtual under a virtual clock), both Unix seconds. Signed messages are
kept as their decoded JWS (`jws: {header, claims}`, the signature checked by the receivers, not here); others as
`msg` (JSON) or `text`. Secrets never reach the file (`_redact`).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

__all__ = [
    "DIRECTIONS",
    "FORMAT",
    "KINDS",
    "VERSION",
    "Header",
    "Recording",
    "RecordingError",
    "RecordingWriter",
    "read_recording",
]

FORMAT: Final = "tcu-sim-recording"
VERSION: Final = 1

#: The topic kinds a recording holds, and the direction each travels.
KINDS: Final[Mapping[str, str]] = {
    "status": "car>cloud",
    "events": "car>cloud",
    "results": "car>cloud",
    "connection": "car>cloud",
    "commands": "cloud>car",
    "requests": "app>cloud",
    "responses": "cloud>app",
    "app_events": "cloud>app",
    "control": "operator>car",
    "control_results": "car>operator",
}
DIRECTIONS: Final = frozenset(KINDS.values())


class RecordingError(Exception):
    """A recording that cannot be read: what is wrong, and where (`path`, `line`: 1-based, None for the file)."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Header:
    """The first line: what was recorded, and what a replay needs to start the same stack."""

    fleet: str | None
    """The fleet file the stack ran (as given to `up`/`record`); None when the recorder was not told."""
    seed: int | None
    started_at: float
    """Real time (Unix seconds) when recording started."""
    virtual_started_at: float
    """The run's clock when recording started (equal to `started_at` under a real clock)."""
    fleet_name: str | None = None
    topic_prefix: str = ""
    tool: str = ""

    def to_json(self) -> dict[str, Any]:
        """The header line's object."""
        return {
            "format": FORMAT, "version": VERSION, "fleet": self.fleet, "fleet_name": self.fleet_name,
            "seed": self.seed, "topic_prefix": self.topic_prefix, "started_at": self.started_at,
            "virtual_started_at": self.virtual_started_at, "tool": self.tool,
        }


@dataclass(slots=True)
class Recording:
    """A recording read back: its header and its records (one dict per message line, in file order)."""

    path: Path
    header: Header
    records: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    """The last line was cut off (a recorder killed mid-write): the lines before it are kept."""


class RecordingWriter:
    """Appends records to a gzip JSON Lines file; every line is flushed, so a killed recorder leaves a readable
    file (at worst a cut-off last line, which readers report). Write-only for the owner (0600)."""

    def __init__(self, path: Path, header: Header) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._raw: IO[bytes] = os.fdopen(fd, "wb")
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0)
        self.count = 0
        self._line(header.to_json())

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record."""
        self.count += 1
        self._line(record)

    def _line(self, obj: Mapping[str, Any]) -> None:
        self._gz.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
        self._gz.flush(zlib.Z_SYNC_FLUSH)
        self._raw.flush()

    def close(self) -> None:
        """Finish the gzip stream and close the file."""
        with contextlib.suppress(OSError):
            self._gz.close()
        self._raw.close()

    def __repr__(self) -> str:
        return f"RecordingWriter({str(self.path)!r}, records={self.count})"


def _lines(path: Path, cut: list[bool]) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, complete) of each line; RecordingError when the file is not gzip at all. `cut`
    gets True when the gzip stream ends without its trailer (a recorder that was killed)."""
    try:
        file = gzip.open(path, "rb")  # noqa: SIM115 - closed by the with below, the generator owns it
    except OSError as exc:
        raise RecordingError(path, None, f"cannot open: {exc.strerror or exc}") from None
    number = 0
    with file:
        while True:
            try:
                line = file.readline()
            except EOFError:
                cut.append(True)  # cut off mid-stream: what came before is kept, the reader notes it
                return
            except (OSError, zlib.error) as exc:
                raise RecordingError(path, number + 1 if number else None, f"not a gzip recording: {exc}") from None
            if not line:
                return
            number += 1
            yield number, line, line.endswith(b"\n")


def read_recording(path: Path) -> Recording:
    """Read and check a recording; RecordingError with the line number for anything wrong."""
    cut: list[bool] = []
    lines = _lines(path, cut)
    first = next(lines, None)
    if first is None:
        raise RecordingError(path, None, "empty file: no header line")
    header = _header(path, _json(path, first[0], first[1]))
    recording = Recording(path, header)
    previous_vt = header.virtual_started_at
    for number, raw, complete in lines:
        if not complete:
            try:
                json.loads(raw)
            except ValueError:
                raise RecordingError(path, number, "cut-off line (the recorder stopped mid-write)") from None
        record = _json(path, number, raw)
        _check_record(path, number, record)
        if record["vt"] < previous_vt - 1e-6:
            raise RecordingError(path, number, f"vt {record['vt']} goes back in time (previous {previous_vt})")
        previous_vt = record["vt"]
        record["line"] = number
        recording.records.append(record)
    recording.truncated = bool(cut)
    return recording


def _json(path: Path, number: int, raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordingError(path, number, f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RecordingError(path, number, f"a line must be a JSON object, got {type(value).__name__}")
    return value


def _header(path: Path, obj: dict[str, Any]) -> Header:
    if obj.get("format") != FORMAT:
        raise RecordingError(path, 1, f"not a tcu-sim recording (header format {obj.get('format')!r}, want {FORMAT!r})")
    if obj.get("version") != VERSION:
        raise RecordingError(path, 1, f"recording format version {obj.get('version')!r}; this tcu-sim reads {VERSION}")
    for name in ("started_at", "virtual_started_at"):
        if not _number(obj.get(name)):
            raise RecordingError(path, 1, f"header field {name!r} must be a number")
    fleet, seed = obj.get("fleet"), obj.get("seed")
    if fleet is not None and not isinstance(fleet, str):
        raise RecordingError(path, 1, "header field 'fleet' must be a path or null")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RecordingError(path, 1, "header field 'seed' must be an integer or null")
    prefix = obj.get("topic_prefix", "")
    return Header(
        fleet=fleet, seed=seed, started_at=float(obj["started_at"]),
        virtual_started_at=float(obj["virtual_started_at"]),
        fleet_name=obj.get("fleet_name") if isinstance(obj.get("fleet_name"), str) else None,
        topic_prefix=prefix if isinstance(prefix, str) else "", tool=str(obj.get("tool", "")),
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_record(path: Path, number: int, record: dict[str, Any]) -> None:
    for name in ("t", "vt"):
        if not _number(record.get(name)):
            raise RecordingError(path, number, f"field {name!r} must be a number")
    kind = record.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise RecordingError(path, number, f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    if record.get("dir") != KINDS[kind]:
        raise RecordingError(path, number, f"direction {record.get('dir')!r} does not fit kind {kind!r}")
    if not isinstance(record.get("key"), str) or not record["key"]:
        raise RecordingError(path, number, "field 'key' (VIN or client id) must be a non-empty string")
    for name in ("msg", "jws"):
        if name in record and not isinstance(record[name], dict):
            raise RecordingError(path, number, f"field {name!r} must be an object")
