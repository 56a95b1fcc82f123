"""Durations in fleet files: `"300ms"`, `"30s"`, `"5m"`, `"1h"`, `"2d"`, compounds like `"1h30m"`, or a bare
number of seconds. Parsed to float seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

__all__ = ["DURATION_PATTERN", "Duration", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d)"
# One or more number+unit parts; any order is accepted ("90s" and "1m30s" both read well).
DURATION_PATTERN = rf"^\s*(?:{_PART}\s*)+$"
_WHOLE = re.compile(DURATION_PATTERN)
_PARTS = re.compile(_PART)


def parse_duration(value: Any) -> float:
    """Seconds from a duration string or a number of seconds. ValueError (pydantic reports it at its path)."""
    if isinstance(value, bool):  # YAML `yes`/`on` are bools; never a duration
        raise ValueError("expected a duration like '30s', '5m', '1h' or '300ms', got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _WHOLE.match(text):
            raise ValueError(f"expected a duration like '30s', '5m', '1h' or '300ms', got {value!r}")
        seconds = sum(float(number) * _UNITS[unit] for number, unit in _PARTS.findall(text))
    else:
        raise ValueError(f"expected a duration like '30s', '5m', '1h' or '300ms', got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact duration string for `seconds` (`90` → `"1m30s"`, `0.3` → `"300ms"`)."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "description": "seconds"},
                {"type": "string", "pattern": DURATION_PATTERN, "examples": ["300ms", "30s", "5m", "1h30m"]},
            ]
        }
    ),
]
"""A duration field: `"30s"`, `"5m"`, `"1h"`, `"300ms"`, `"1h30m"` or a number of seconds; float seconds."""
