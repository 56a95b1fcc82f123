"""When a flaky or weak connection drops, and for how long (pure: the randomness is passed in).

`drop_rate` is the chance that the connection drops within one minute. Drops are a Poisson process, so the
time to the next drop is exponential with rate `-ln(1 - drop_rate) / 60` per second: with `drop_rate` 0.1
about one minute in ten sees a drop. The next drop is drawn when the previous outage ends, so outages never
overlap and the rate counts (roughly) connected time. Outage lengths follow `distribution` around `outage_s`.

Every draw comes from the car's own fault stream (seeded from the fleet seed and the car), never from the
clock or the network: the same seed gives the same drops at the same clock times on every run.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

from ._spec import FlakyFault, OutageDistribution, WeakSignalFault

__all__ = ["OutageModel", "fault_rng"]

_MAX_RATE = 0.999  # a drop_rate of 1 would mean an infinite rate; "certainly once a minute" is close enough
_MIN_OUTAGE_FRACTION = 0.05  # an exponential draw can be ~0; an outage shorter than this share is no outage


@dataclass(frozen=True, slots=True)
class OutageModel:
    """Random drops of a connection: `drop_rate` per minute, outages of mean `outage_s`."""

    drop_rate: float
    outage_s: float
    distribution: OutageDistribution = OutageDistribution.EXPONENTIAL

    def __post_init__(self) -> None:
        if not 0 <= self.drop_rate <= 1:
            raise ValueError(f"drop_rate must be within 0..1, got {self.drop_rate}")
        if not (math.isfinite(self.outage_s) and self.outage_s > 0):
            raise ValueError(f"outage_s must be a positive number of seconds, got {self.outage_s}")

    @classmethod
    def of(cls, fault: FlakyFault | WeakSignalFault) -> OutageModel:
        """The model of a flaky or weak-signal fault."""
        return cls(fault.drop_rate, fault.outage_s, fault.distribution)

    @property
    def rate_per_s(self) -> float:
        """Drops per second (0 when the connection never drops)."""
        return -math.log1p(-min(self.drop_rate, _MAX_RATE)) / 60.0

    def next_drop_in(self, rng: random.Random) -> float:
        """Seconds until the next drop (infinite when `drop_rate` is 0)."""
        rate = self.rate_per_s
        return math.inf if rate <= 0 else rng.expovariate(rate)

    def outage_length(self, rng: random.Random) -> float:
        """Seconds one outage lasts."""
        mean = self.outage_s
        if self.distribution is OutageDistribution.FIXED:
            return mean
        if self.distribution is OutageDistribution.UNIFORM:
            return rng.uniform(0.5 * mean, 1.5 * mean)
        return max(_MIN_OUTAGE_FRACTION * mean, rng.expovariate(1.0 / mean))


def fault_rng(seed: int, vin: str) -> random.Random:
    """The car's own random stream for faults: fixed by the car's seed and VIN, independent of every other
    use of randomness (reconnect jitter, status offsets), so network timing never shifts a fault."""
    digest = hashlib.sha256(f"{seed}:faults:{vin}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))
