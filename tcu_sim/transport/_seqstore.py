"""A car's sequence numbers, kept on disk across restarts.

Two numbers per car: the `seq` it puts on its own messages (only grows) and the highest command `seq` it accepted
(anything not above it is a replay). Writing a file for every message would cost a disk write per status for every
car, so outgoing numbers are reserved in blocks: the file records the end of the current block, and after a restart
the car continues above it (numbers may skip, never repeat). The accepted command seq is written on every accept.

`reserve()` writes the next block ahead of time and may run in a worker thread (a lock keeps it apart from
`next_seq`): the session has its handshake thread do it before connecting, else a fleet starting 10,000 cars
would create 10,000 files on its event loop while it should be answering TLS handshakes.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

__all__ = ["SeqStore"]


class SeqStore:
    """Persistent `seq` counters of one car (`path` is a small JSON file; None keeps them in memory only)."""

    __slots__ = ("_dir_ready", "_lock", "_next", "_path", "_reserved", "block", "last_command_seq")

    def __init__(self, path: Path | None, *, block: int = 256) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._dir_ready = False
        self.block = block
        self._reserved = 0
        self.last_command_seq = 0
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                self._reserved = int(data["reserved"])
                self.last_command_seq = int(data["last_command_seq"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}: unreadable sequence file ({exc})") from exc
        self._next = self._reserved + 1

    def __repr__(self) -> str:
        return f"SeqStore(next={self._next}, last_command_seq={self.last_command_seq})"

    @property
    def last_issued(self) -> int:
        """The last outgoing seq handed out (0 before the first)."""
        return self._next - 1

    @property
    def needs_reserve(self) -> bool:
        """True when the next `next_seq()` would write the file (the current block is used up)."""
        return self._next > self._reserved

    def reserve(self) -> None:
        """Write the next block now if `next_seq()` would have to (blocking file I/O: may run in a thread)."""
        with self._lock:
            if self._next > self._reserved:
                self._reserved = self._next + self.block - 1
                self._save()

    def next_seq(self) -> int:
        """The next outgoing seq, reserving a new block on disk when the current one is used up."""
        with self._lock:
            seq = self._next
            if seq > self._reserved:
                self._reserved = seq + self.block - 1
                self._save()
            self._next = seq + 1
            return seq

    def accept_command(self, seq: int) -> None:
        """Record an accepted command seq (callers check it is above `last_command_seq` first)."""
        with self._lock:
            self.last_command_seq = seq
            self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        if not self._dir_ready:  # once: a fleet's first statuses write 10,000 of these files at connect time
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._dir_ready = True
        tmp = f"{self._path}.tmp"
        with open(tmp, "w", encoding="utf-8") as file:
            file.write(json.dumps({"reserved": self._reserved, "last_command_seq": self.last_command_seq}))
        os.replace(tmp, self._path)
