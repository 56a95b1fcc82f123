"""Strict reading of simulator-control parameters (`sim/{vin}/control` params are untrusted JSON).

Every problem raises `InvalidControl` naming the parameter; values of secret parameters are never echoed.
A `Param` declares one parameter (name, kind, range or choices, default); the vehicle model reads its controls'
parameters through these declarations (`ControlParams.read`), so `describe()` — what `tcu-sim car --help` lists —
is the rule itself, not a copy of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, TypeVar

from ._errors import InvalidControl

__all__ = ["ControlParams", "Param"]

E = TypeVar("E", bound=StrEnum)

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}")


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a simulator control: what it is called, its kind and its valid values."""

    name: str
    kind: Literal["number", "integer", "choice", "secret", "email"]
    low: float = 0.0
    high: float = 0.0
    choices: type[StrEnum] | None = None
    #: The value when it is not given; None: required (unless `optional`, where the caller gives the default).
    default: float | None = None
    optional: str = ""
    """Non-empty: the parameter may be left out, and this says what is used then (e.g. "the car's speed")."""
    pattern: re.Pattern[str] | None = None
    what: str = ""
    """For a secret: what it must be (its value is never echoed)."""

    def describe(self) -> str:
        """`door=front_left|front_right|...`, `voltage=0.0..16.0`, `keys=0..2 (default 2)`."""
        if self.kind == "choice":
            assert self.choices is not None
            values = "|".join(m.value for m in self.choices)
        elif self.kind == "number":
            values = f"{self.low:g}..{self.high:g}"
        elif self.kind == "integer":
            values = f"{int(self.low)}..{int(self.high)}"
        elif self.kind == "email":
            values = "EMAIL"
        else:
            values = f"<{self.what or 'secret'}>"
        text = f"{self.name}={values}"
        if self.default is not None:
            text += f" (default {self.default:g})"
        elif self.optional:
            text += f" (optional; default: {self.optional})"
        return text


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

    def read(self, param: Param, default: Any = None) -> Any:
        """The value of `param`, checked as it declares (`default`: for an optional one, the value when absent)."""
        if param.kind == "number":
            fallback = param.default if param.default is not None else default
            return self.number(param.name, param.low, param.high, default=fallback)
        if param.kind == "integer":
            fallback = int(param.default) if param.default is not None else default
            return self.integer(param.name, int(param.low), int(param.high), default=fallback)
        if param.kind == "choice":
            assert param.choices is not None
            return self.choice(param.name, param.choices)
        if param.kind == "email":
            return self.email(param.name)
        assert param.pattern is not None
        return self.secret(param.name, pattern=param.pattern, what=param.what)

    def finish(self) -> None:
        """Refuse parameters the action does not take."""
        unknown = sorted(str(k)[:40] for k in self._params if k not in self._seen)
        if unknown:
            raise InvalidControl(self._action, f"unknown parameter(s): {', '.join(unknown)}")


_REQUIRED: Any = object()
