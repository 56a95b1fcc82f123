"""The anti-replay window of one message stream (pure): the highest `seq` seen and which of the 64 below it
(it included) were seen, as IPsec and DTLS keep it (RFC 4303 §3.4.3).

A single high-water mark refuses every message that arrives after a newer one. Cars' messages can overtake each
other on their way to the cloud (two cloud processes sharing a subscription apply them concurrently; a car's
outbox flushes after a reconnect), so a genuine event or result would be dropped. The window accepts any `seq`
not seen before within the last 64, and still refuses every duplicate and every replay:

- `seq` above the highest: accepted; the window slides up;
- `seq` within the 64 up to the highest: accepted once (its bit was clear), refused after that;
- `seq` older than the window: refused (it cannot be told apart from a replay any more).

Bit `i` of `seen` stands for `high - i`. The registry stores `seen` in a signed 64-bit column: `to_stored` /
`from_stored` convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["SEQ_WINDOW", "SeqMark"]

#: How many seqs, the highest included, the window remembers.
SEQ_WINDOW: Final = 64
_MASK: Final = (1 << SEQ_WINDOW) - 1
_SIGN: Final = 1 << (SEQ_WINDOW - 1)


@dataclass(frozen=True, slots=True)
class SeqMark:
    """The highest `seq` of a stream and the bitmap of the seqs seen at and below it (see the module doc).

    `SeqMark()` is a stream that has seen nothing yet."""

    high: int = 0
    seen: int = 0

    def has_seen(self, seq: int) -> bool:
        """Whether `seq` counts as seen: it was, or it is too old to tell (below the window)."""
        if seq > self.high:
            return False
        distance = self.high - seq
        return distance >= SEQ_WINDOW or bool(self.seen >> distance & 1)

    def accept(self, seq: int) -> SeqMark | None:
        """The mark after accepting `seq`, or None when it must be refused (seen, or older than the window)."""
        if seq > self.high:
            shift = seq - self.high
            seen = (self.seen << shift) & _MASK if shift < SEQ_WINDOW else 0
            return SeqMark(seq, seen | 1)
        if self.has_seen(seq):
            return None
        return SeqMark(self.high, self.seen | 1 << (self.high - seq))

    def release(self, seq: int) -> SeqMark:
        """The mark with `seq` no longer seen (an accepted message whose application failed, so that its
        redelivery is accepted). The highest stays where it is; outside the window nothing changes."""
        distance = self.high - seq
        if distance < 0 or distance >= SEQ_WINDOW:
            return self
        return SeqMark(self.high, self.seen & ~(1 << distance) & _MASK)

    def to_stored(self) -> int:
        """`seen` as a signed 64-bit integer (the registry's BIGINT)."""
        return self.seen - (1 << SEQ_WINDOW) if self.seen & _SIGN else self.seen

    @classmethod
    def from_stored(cls, high: int, stored: int) -> SeqMark:
        """From the registry's columns (`stored` signed 64-bit)."""
        return cls(int(high), int(stored) & _MASK)
