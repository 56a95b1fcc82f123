"""Seeded random streams for fleet expansion.

Every group draws from its own streams, one per purpose (VINs, home positions, registration, car seeds),
each derived from the fleet seed and the group name by SHA-256. So a car's VIN depends only on the seed, its
group's name and its index in the group: growing one group, adding another or moving a home area leaves
every other VIN as it was.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable

from tcu_sim.protocol import generate_vin

__all__ = ["fleet_vins", "stream"]


def stream(seed: int, *labels: str) -> random.Random:
    """A `random.Random` fixed by the fleet seed and the labels (stable across processes and platforms)."""
    material = ":".join([str(seed), *labels]).encode()
    return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:16], "big"))


def fleet_vins(seed: int, groups: Iterable[tuple[str, int]]) -> list[list[str]]:
    """The VINs of each (group name, count), in order; unique across the whole fleet.

    A VIN drawn twice (about one chance in 10^11 per pair) is drawn again from the same group's stream, so the
    outcome is still a function of the seed and the groups before it.
    """
    seen: set[str] = set()
    result: list[list[str]] = []
    for name, count in groups:
        rng = stream(seed, "vin", name)
        vins: list[str] = []
        while len(vins) < count:
            vin = generate_vin(rng)
            if vin not in seen:
                seen.add(vin)
                vins.append(vin)
        result.append(vins)
    return result
