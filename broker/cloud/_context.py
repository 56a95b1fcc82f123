"""What every domain service shares: the registry, the clock, the secret, the configuration, and the two
side effects every service has — an audit entry and a simulated e-mail (with listeners told of each mail, so
that the MQTT handler can push a `mail` event to the user's app)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from broker.registry import AuditRecord, MailRecord, Registry
from tcu_sim.clock import Clock

from ._config import CloudConfig
from ._security import PasswordHasher, ServerSecret

__all__ = ["MailListener", "ServiceContext"]

log = structlog.get_logger("broker.cloud")

#: Told of every mail delivered to the simulated mailbox (after it is stored).
MailListener = Callable[[MailRecord], Awaitable[None]]


@dataclass(frozen=True, eq=False)
class ServiceContext:
    """Dependencies of the domain services, injected once (tests pass a virtual clock and a seeded rng)."""

    registry: Registry
    clock: Clock
    secret: ServerSecret
    config: CloudConfig = field(default_factory=CloudConfig)
    #: For identifiers (user and command ids). Secrets never come from here: they come from `secrets`.
    rng: random.Random = field(default_factory=random.SystemRandom)
    passwords: PasswordHasher = field(default_factory=PasswordHasher)
    #: Called with every mail delivered (`mailed`); a failing listener is logged, never the service's failure.
    mail_listeners: list[MailListener] = field(default_factory=list)

    def now(self) -> float:
        """The current time of the injected clock."""
        return self.clock.now()

    def new_id(self, prefix: str) -> str:
        """A fresh identifier with 96 random bits (unique across processes unless the rng is seeded alike)."""
        return f"{prefix}-{self.rng.getrandbits(96):024x}"

    async def audit(
        self,
        action: str,
        outcome: str = "ok",
        *,
        user_id: str | None = None,
        vin: str | None = None,
        **detail: Any,
    ) -> None:
        """Record a security-relevant action in the audit log and the structured log. `detail` must hold
        names and outcomes only: callers never pass a password, S-PIN, token or pairing code."""
        await self.registry.add_audit(
            AuditRecord(at=self.now(), action=action, outcome=outcome, user_id=user_id, vin=vin, detail=detail)
        )
        log.info("audit", action=action, outcome=outcome, user_id=user_id, vin=vin, **detail)

    async def mail(self, to: str, subject: str, body: str, *, user_id: str | None = None) -> MailRecord:
        """Deliver an e-mail to the simulated mailbox (and tell the listeners); the mail as stored."""
        stored = await self.registry.add_mail(
            MailRecord(at=self.now(), to=to, subject=subject, body=body, user_id=user_id)
        )
        log.info("mail.sent", to_user=user_id, subject=subject)
        await self.mailed(stored)
        return stored

    async def mailed(self, mail: MailRecord) -> None:
        """Tell the listeners that `mail` was delivered (services that store a mail another way call this)."""
        for listener in list(self.mail_listeners):
            try:
                await listener(mail)
            except Exception as exc:
                # Never the mail's content: it may hold a verification link.
                log.error("mail.listener_failed", to_user=mail.user_id, error_type=type(exc).__name__)
