"""Counters of the handler: what it received, applied, refused (by reason), answered, sent and dropped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HandlerStats"]


@dataclass(slots=True)
class HandlerStats:
    """Counters a test, the live view or the benchmark reads; all only grow."""

    connects: int = 0
    disconnects: int = 0
    #: Car messages by topic kind (status, events, results, connection), received and applied.
    received: Counter[str] = field(default_factory=Counter)
    applied: Counter[str] = field(default_factory=Counter)
    #: Car messages refused, by `RefusalReason` value (never applied).
    refused: Counter[str] = field(default_factory=Counter)
    #: App requests by op, and error replies by error code.
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    requests_unanswerable: int = 0
    commands_sent: int = 0
    command_send_failures: int = 0
    pushes: int = 0
    push_failures: int = 0
    #: Messages the MQTT client's bounded incoming queue had to drop.
    dropped_incoming: int = 0
    handler_errors: int = 0
    #: PUBACKs sent once a message was settled (with `ack_after_apply`).
    acked: int = 0
    #: Batches of car statuses applied in one registry transaction, and the statuses in them.
    status_batches: int = 0
    status_batch_messages: int = 0
    #: Registry calls retried because the store was unavailable for a moment.
    store_retries: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {
            "connects": self.connects,
            "disconnects": self.disconnects,
            "received": dict(self.received),
            "applied": dict(self.applied),
            "refused": dict(self.refused),
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "requests_unanswerable": self.requests_unanswerable,
            "commands_sent": self.commands_sent,
            "command_send_failures": self.command_send_failures,
            "pushes": self.pushes,
            "push_failures": self.push_failures,
            "dropped_incoming": self.dropped_incoming,
            "handler_errors": self.handler_errors,
            "acked": self.acked,
            "status_batches": self.status_batches,
            "status_batch_messages": self.status_batch_messages,
            "store_retries": self.store_retries,
        }
