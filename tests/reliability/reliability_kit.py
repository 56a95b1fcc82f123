"""The ledger of the resilience matrix (docs/reliability.md): what the sandbox's event stream says happened,
counted into the three figures every T-test asserts — acknowledged messages lost, messages applied twice,
cross-car deliveries — and printed as one JSON line per test (`pytest tests/reliability -s` shows them).

- A command is *acknowledged* when the app got its id back (the cloud queued it). It is *lost* if the stream
  never shows it reaching a final state (succeeded, failed, rejected or timed out: the app is always told).
- A command is *applied twice* when a car reports executing it (`CarCommandHandled` succeeded or failed) more
  than once; a car message (status, event, result) when the cloud applied the same (vin, kind, seq) twice.
- A *cross-car delivery* is a command executed by a car other than the one it was sent to.
- Every car message the cloud refused must have been a copy of one it applied (reason `duplicate` or
  `replayed`), or a message the test itself forged: anything else is a car message lost.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from tcu_sim.events import CarCommandHandled, CarConnection, CarMessageHandled, CommandChanged, Subscription
from tcu_sim.protocol import CommandState
from tcu_sim.testing import Sandbox, SimCar, SimUser

WAIT = 15.0
COPIES = frozenset({"duplicate", "replayed"})

FLEET = """
name: reliability
seed: 12
defaults:
  status_interval_s: 60s
  home_area: {center: {lat: 41.3874, lon: 2.1686}, radius_km: 2}
groups:
  - {name: leon, count: 3, model: leon, equipment: media_system}
"""

Watched = CommandChanged | CarMessageHandled | CarCommandHandled | CarConnection


class Ledger:
    """Everything the stream reports from its creation on; `figures()` counts it."""

    def __init__(self, sandbox: Sandbox, name: str) -> None:
        self.name = name
        self._subscription: Subscription[Watched] = sandbox.events.subscribe(
            CommandChanged, CarMessageHandled, CarCommandHandled, CarConnection, buffer=100_000, name=name
        )
        self.events: list[Watched] = []
        self.sent: dict[str, str] = {}  # command id -> the VIN it was sent to

    def close(self) -> None:
        self._subscription.close()

    async def send(self, user: SimUser, car: SimCar, op: str, params: dict[str, Any] | None = None) -> str:
        """Ask for a command through the app and remember whom it was for."""
        command_id = await user.send(car, op, params)
        self.sent[command_id] = car.vin
        return command_id

    def read(self) -> list[Watched]:
        """Take what arrived since the last read."""
        new = self._subscription.drain()
        self.events.extend(new)
        return new

    async def wait_final(self, command_ids: Iterable[str], timeout: float = WAIT) -> dict[str, str]:
        """Wait until every command has a final state on the stream; their final states."""
        wanted = set(command_ids)
        finals = self.finals()
        while not wanted <= finals.keys():
            event = await self._subscription.get(timeout=timeout)
            self.events.append(event)
            if isinstance(event, CommandChanged) and CommandState(event.state).is_final:
                finals[event.command_id] = event.state
        return {command_id: finals[command_id] for command_id in wanted}

    def finals(self) -> dict[str, str]:
        """The final state of each command that has one so far."""
        return {
            e.command_id: e.state
            for e in self.events
            if isinstance(e, CommandChanged) and CommandState(e.state).is_final
        }

    def figures(self, test: str, *, forged: int = 0, **extra: Any) -> dict[str, Any]:
        """The counts of this test; `forged`: car messages the test itself forged (refused on purpose)."""
        self.read()
        finals = self.finals()
        executed = Counter(
            e.command_id for e in self.events if isinstance(e, CarCommandHandled) and e.outcome != "rejected"
        )
        applied = Counter(
            (e.vin, e.topic_kind, e.seq)
            for e in self.events
            if isinstance(e, CarMessageHandled) and e.applied and e.seq is not None
        )
        refused = Counter(
            e.reason or "?" for e in self.events if isinstance(e, CarMessageHandled) and not e.applied
        )
        cross = [
            e for e in self.events
            if isinstance(e, CarCommandHandled) and e.command_id in self.sent and e.vin != self.sent[e.command_id]
        ]
        lost_commands = [c for c in self.sent if c not in finals]
        not_copies = sum(n for reason, n in refused.items() if reason not in COPIES)
        figures = {
            "test": test,
            "commands_acknowledged": len(self.sent),
            "final_states": dict(Counter(finals[c] for c in self.sent if c in finals)),
            "car_messages_applied": sum(applied.values()),
            "car_messages_refused": dict(refused),
            "acknowledged_lost": len(lost_commands) + max(0, not_copies - forged),
            "applied_twice": sum(1 for c in self.sent if executed[c] > 1) + sum(1 for n in applied.values() if n > 1),
            "cross_car_deliveries": len(cross),
            **extra,
        }
        print(json.dumps(figures, sort_keys=True))
        return figures


def assert_clean(figures: dict[str, Any]) -> None:
    """0 acknowledged messages lost, 0 applied twice, 0 cross-car deliveries."""
    assert (figures["acknowledged_lost"], figures["applied_twice"], figures["cross_car_deliveries"]) == (0, 0, 0), (
        figures
    )
