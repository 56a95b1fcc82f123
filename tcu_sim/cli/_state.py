"""The state directory's lock for the commands that run a stack or half of one (`up`, `fleet run`, `cloud run`):
a second one on the same directory exits 2, naming the holder, before it writes anything (SPEC §7)."""

from __future__ import annotations

from pathlib import Path

import click

from tcu_sim.fleet import StateBusy, StateLock

__all__ = ["StateInUse", "hold_state"]


class StateInUse(click.ClickException):
    """The state directory is held by another running process: exit code 2."""

    exit_code = 2


def hold_state(state: Path, holder: str, *, role: str | None = None) -> StateLock:
    """Take the state directory's lock for this process (`role`: one half of a stack, see `StateLock`); the
    caller releases it (or the process exits)."""
    lock = StateLock(state, holder=holder, role=role)
    try:
        lock.acquire()
    except StateBusy as exc:
        raise StateInUse(str(exc)) from None
    return lock
