"""The stack's errors: one root, subclasses by what went wrong (the CLI prints the message and exits 1)."""

from __future__ import annotations

__all__ = ["BrokerStartError", "EnrolmentError", "FleetStartError", "StackBusy", "StackError"]


class StackError(Exception):
    """The local stack could not start (or run) as configured; the message says what and where."""


class BrokerStartError(StackError):
    """The broker did not start, or the given one is not reachable."""


class FleetStartError(StackError):
    """Not every car came online in time."""


class EnrolmentError(StackError):
    """A user of the fleet file could not be created or their cars not enrolled."""


class StackBusy(StackError):
    """Another running process holds the state directory (SPEC §7); nothing was started or written."""
