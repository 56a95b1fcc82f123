"""Strict reading of simulator-control parameters (`sim/{vin}/control` params are untrusted JSON).

Every problem raises `InvalidControl` naming the parameter; values of secret parameters are never echoed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from ._errors import InvalidControl

__all__ = ["ControlParams"]

E = TypeVar("E", bound=StrEnum)

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}")


class ControlParams:
    """The parameters of one control; `finish()` refuses any parameter nobody asked for."""

    __slots__ = ("_action", "_params", "_seen")

    def __init__(self, action: str, params: Mapping[str, Any] | None) -> None:
        if params is not None and not isinstance(params, Mapping):
            raise InvalidControl(action, f"params must be an object, got {type(params).__name__}")
        self._action = action
        self._params: Mapping[str, Any] = params or {}
        self._seen: set[str] = set()

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        if name not in self._params:
            if default is _REQUIRED:
                raise InvalidControl(self._action, f"missing parameter {name!r}")
            return default
        return self._params[name]

    def number(self, name: str, low: float, high: float, default: Any = None) -> float:
        """A finite number within [low, high] (booleans are not numbers)."""
        value = self._get(name, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidControl(self._action, f"{name} must be a number, got {type(value).__name__}")
        if not math.isfinite(value) or not low <= value <= high:
            raise InvalidControl(self._action, f"{name} must be between {low} and {high}, got {value!r}")
        return float(value)

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int:
        """An integer within [low, high]."""
        value = self._get(name, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidControl(self._action, f"{name} must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise InvalidControl(self._action, f"{name} must be between {low} and {high}, got {value}")
        return value

    def choice(self, name: str, enum: type[E]) -> E:
        """A member of `enum`, given by its value."""
        value = self._get(name, _REQUIRED)
        try:
            return enum(value)
        except (ValueError, TypeError):
            choices = ", ".join(m.value for m in enum)
            raise InvalidControl(self._action, f"{name} must be one of: {choices}") from None

    def secret(self, name: str, *, pattern: re.Pattern[str], what: str) -> str:
        """A secret string matching `pattern`; the error says `what` it must be, never what it was."""
        value = self._get(name, _REQUIRED)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise InvalidControl(self._action, f"{name} must be {what}")
        return value

    def email(self, name: str) -> str:
        """An e-mail address (shape only)."""
        value = self._get(name, _REQUIRED)
        if not isinstance(value, str) or len(value) > 254 or not _EMAIL.fullmatch(value):
            raise InvalidControl(self._action, f"{name} must be an e-mail address")
        return value

    def finish(self) -> None:
        """Refuse parameters the action does not take."""
        unknown = sorted(str(k)[:40] for k in self._params if k not in self._seen)
        if unknown:
            raise InvalidControl(self._action, f"unknown parameter(s): {', '.join(unknown)}")


_REQUIRED: Any = object()
