"""What the cloud did with each car message: applied, or refused and why — for scenario expectations (none
missing, none twice) and for proving that an attack changed nothing.

`CloudObserver` reads the cloud's event stream (SPEC §8): the handler publishes one `CarMessageHandled` per car
message it applied or refused, with the refusal reason and the payload as it came (`token`). The observer
subscribes before the cloud starts and takes up what was published whenever it is read, so a reader always sees
every message handled so far. Order does not matter to it (outcomes are counted per car and looked up by
payload), so the cloud may apply car messages with any number of workers.

    observer = CloudObserver(handler.events)      # before the handler starts
    ...
    assert not observer.refused[vin]
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from tcu_sim.events import AlertFired, CarMessageHandled, EventStream

__all__ = ["CloudObserver", "Handled", "token_claims"]

_KEPT = 200_000  # messages remembered (and events buffered between two reads); a scenario run is far smaller


def token_claims(token: bytes) -> dict[str, Any]:
    """The claims of a signed token, unverified (only to read `seq`/`body` of what was already judged)."""
    try:
        part = token.split(b".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4)))
        return claims if isinstance(claims, dict) else {}
    except (IndexError, ValueError):
        return {}


@dataclass(frozen=True, slots=True)
class Handled:
    """One car message the cloud handled."""

    vin: str
    kind: str
    """The topic kind: status, events, results, connection."""
    seq: int | None
    """The message's `seq` (None on the plain-text connection topic or when unreadable)."""
    applied: bool
    reason: str | None
    """The refusal reason when it was not applied."""
    payload: bytes


class CloudObserver:
    """Records every car message the cloud publishing into `events` handles (see the module docstring); close it
    (or use `with`) when done."""

    def __init__(self, events: EventStream, *, buffer: int = _KEPT) -> None:
        self._handled: list[Handled] = []
        self._applied: defaultdict[str, list[int]] = defaultdict(list)
        self._refused: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._by_payload: dict[bytes, Handled] = {}
        self._alerts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._subscription = events.subscribe(
            CarMessageHandled, AlertFired, buffer=buffer, name="scenario.observer"
        )

    def __repr__(self) -> str:
        applied = sum(1 for h in self.handled if h.applied)
        return (
            f"CloudObserver(handled={len(self._handled)}, applied={applied}, dropped={self._subscription.dropped})"
        )

    @property
    def handled(self) -> list[Handled]:
        """Every car message handled so far, in the order the cloud settled them (the first 200 000)."""
        self.catch_up()
        return self._handled

    @property
    def applied(self) -> defaultdict[str, list[int]]:
        """The seq of every signed message applied, per VIN."""
        self.catch_up()
        return self._applied

    @property
    def refused(self) -> defaultdict[str, Counter[str]]:
        """How many messages were refused, per VIN and reason."""
        self.catch_up()
        return self._refused

    @property
    def by_payload(self) -> dict[bytes, Handled]:
        """The last outcome of each payload (a replay is the same bytes as its original)."""
        self.catch_up()
        return self._by_payload

    @property
    def alerts(self) -> defaultdict[str, Counter[str]]:
        """How many alerts fired, per VIN and kind (`speed`, `area`)."""
        self.catch_up()
        return self._alerts

    def catch_up(self) -> None:
        """Take up every event published since the last read."""
        for event in self._subscription.drain():
            if isinstance(event, AlertFired):
                self._alerts[event.vin][event.alert] += 1
            elif isinstance(event, CarMessageHandled):
                self._record(event)

    def _record(self, event: CarMessageHandled) -> None:
        vin, kind, payload = event.vin, event.topic_kind, event.token
        seq: Any = event.seq
        if seq is None and kind != "connection":
            seq = token_claims(payload).get("seq")  # a message refused before its seq was read
        reason = None if event.applied else event.reason
        handled = Handled(vin, kind, seq if isinstance(seq, int) else None, event.applied, reason, payload)
        if len(self._handled) < _KEPT:
            self._handled.append(handled)
            self._by_payload[payload] = handled
        if handled.applied and handled.seq is not None:
            self._applied[vin].append(handled.seq)
        elif reason is not None:
            self._refused[vin][reason] += 1

    def close(self) -> None:
        """Stop following the cloud (what was handled so far stays readable)."""
        self.catch_up()
        self._subscription.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
