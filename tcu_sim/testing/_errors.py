"""The errors of the test harness, grouped by what a test does about them.

`WaitTimeout` and `CommandFailed` are `AssertionError`s: a helper that gives up fails the test like an `assert`,
and its message carries what a tester needs to act (the car's last status, the command's history, the broker's
log tail). `HarnessSetupError` means the environment is not fit to run the test at all (no broker, a bad fleet
file) and says how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CarControlRefused",
    "CommandFailed",
    "HarnessError",
    "HarnessSetupError",
    "NotSupported",
    "WaitTimeout",
]


class HarnessError(Exception):
    """Root of every error of `tcu_sim.testing`'s helpers."""


class HarnessSetupError(HarnessError):
    """A broker, cloud or fleet could not be started; the message says what to change."""


class NotSupported(HarnessError):
    """The helper cannot do this with the broker in use (e.g. stopping a broker somebody else runs)."""


class WaitTimeout(HarnessError, AssertionError):
    """A wait helper ran out of time; the message shows what was awaited and the last state seen."""


class CommandFailed(HarnessError, AssertionError):
    """A command reached a final state other than the one the test expected; the message shows its history."""


class CarControlRefused(HarnessError):
    """The car refused what a person tried to do at it (e.g. `tkov` on a car that enrols by pairing code)."""


# Tracebacks and pytest reports name the public module, not this private one.
for _error in (HarnessError, HarnessSetupError, NotSupported, WaitTimeout, CommandFailed, CarControlRefused):
    _error.__module__ = "tcu_sim.testing"
