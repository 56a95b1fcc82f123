"""Car selectors: how users' vehicles and scenario steps name cars in a fleet file.

    all              every car of the fleet
    leon             every car of group `leon`
    leon[3]          the car with index 3 in group `leon` (0-based)
    leon[0:5]        cars 0..4 of group `leon` (a Python slice: start in, stop out, either optional)
    VSSZZZKLZTR000123  the car with that VIN

Group names are lower case and start with a letter, VINs are upper case, so the two never collide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ALL", "GROUP_NAME_PATTERN", "SELECTOR_PATTERN", "CarSelector", "parse_selector"]

ALL = "all"
GROUP_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
_VIN = r"[A-HJ-NPR-Z0-9]{17}"
_GROUP = r"[a-z][a-z0-9_-]{0,62}"
SELECTOR_PATTERN = rf"^(?:{ALL}|{_VIN}|{_GROUP}(?:\[\d*(?::\d*)?\])?)$"
_GROUP_SELECTOR = re.compile(rf"^(?P<group>{_GROUP})(?:\[(?P<start>\d*)(?P<colon>:)?(?P<stop>\d*)\])?$")
_VIN_SELECTOR = re.compile(rf"^{_VIN}$")


@dataclass(frozen=True, slots=True)
class CarSelector:
    """A parsed selector. Exactly one of: `everything`, `vin`, or `group` (with an optional index range)."""

    text: str
    everything: bool = False
    vin: str | None = None
    group: str | None = None
    start: int | None = None
    stop: int | None = None

    def indices(self, count: int) -> range:
        """The indices this selector picks in a group of `count` cars (the whole group without a range)."""
        start = 0 if self.start is None else self.start
        stop = count if self.stop is None else self.stop
        return range(start, stop)


def parse_selector(text: str) -> CarSelector:
    """Parse a selector string; ValueError says what is wrong with it."""
    if text == ALL:
        return CarSelector(text, everything=True)
    if _VIN_SELECTOR.match(text):
        return CarSelector(text, vin=text)
    match = _GROUP_SELECTOR.match(text)
    if match is None:
        raise ValueError(
            f"not a car selector: {text!r} (use 'all', a group like 'leon', 'leon[3]', 'leon[0:5]' or a VIN)"
        )
    group, start, colon, stop = match.group("group", "start", "colon", "stop")
    if "[" not in text:
        return CarSelector(text, group=group)
    if colon is None:
        if not start:
            raise ValueError(f"empty index in {text!r} (write 'leon[3]' or 'leon[0:5]')")
        return CarSelector(text, group=group, start=int(start), stop=int(start) + 1)
    first = int(start) if start else None
    last = int(stop) if stop else None
    if first is not None and last is not None and first >= last:
        raise ValueError(f"{text!r} selects no car: the start must be below the stop")
    return CarSelector(text, group=group, start=first, stop=last)
