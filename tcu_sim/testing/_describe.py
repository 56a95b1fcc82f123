"""One-line descriptions of a car's status and a command's history, for failure messages a tester can act on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["at", "describe_conditions", "describe_history", "describe_status", "status_value"]


def at(ts: float | None) -> str:
    """A clock time as `2026-01-01T00:01:30Z` (or `-`)."""
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_value(status: Mapping[str, Any], path: str) -> Any:
    """The value at `path` (`locked`, `doors.front_left.open`, `aux_heating.state`) of a JSON status."""
    value: Any = status
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def _open(parts: Mapping[str, Any] | None, is_open: Any) -> list[str]:
    if not isinstance(parts, Mapping):
        return []
    return [name for name, value in parts.items() if is_open(value)]


def describe_status(status: Mapping[str, Any] | None) -> str:
    """`locked=False (doors open: front_left), ignition=off, moving=False, ...` from a JSON status."""
    if not status:
        return "no status"
    doors = _open(status.get("doors"), lambda d: isinstance(d, Mapping) and d.get("open"))
    windows = _open(status.get("windows"), lambda w: w == "open")
    connection = status.get("connection") or {}
    aux = status.get("aux_heating") or {}
    bits = [
        f"locked={status.get('locked')}" + (f" (doors open: {', '.join(doors)})" if doors else ""),
        f"ignition={status.get('ignition')}",
        f"moving={status.get('moving')}",
        f"privacy_mode={status.get('privacy_mode')}",
        f"aux_heating={aux.get('state')}"
        + (f" ({aux.get('remaining_min')} min left)" if aux.get("remaining_min") else ""),
        f"battery_12v_v={status.get('battery_12v_v')}",
        f"online={connection.get('online')}",
        f"updated_at={at(status.get('updated_at'))}",
    ]
    if windows:
        bits.append(f"windows open: {', '.join(windows)}")
    return ", ".join(bits)


def describe_history(steps: Iterable[Any], created_at: float | None = None) -> str:
    """`queued at 00:00:00 → delivered (+0.0 s) → failed: door_open (+0.0 s)` from registry command steps."""
    parts: list[str] = []
    for step in steps:
        state = getattr(step.state, "value", step.state)
        text = str(state)
        reason = getattr(step, "reason", None)
        detail = getattr(step, "detail", None)
        if reason:
            text += f": {reason}"
        if detail:
            text += f" ({detail})"
        when = step.at
        text += f" at {at(when)}" if created_at is None else f" (+{when - created_at:.1f} s)"
        parts.append(text)
    return " → ".join(parts) if parts else "no history"


def describe_conditions(conditions: Sequence[tuple[str, Any]]) -> str:
    """`locked=True, doors.front_left.open=False`."""
    return ", ".join(f"{path}={value!r}" for path, value in conditions)

