"""Service licences (R11, R12, R14, R15, R16).

A licence belongs to the car (its VIN), never to a user: it survives a change of owner and cannot move to
another car. Every car starts with a free year from its registration day. A renewal extends the term from its
current end (or from now, when it has lapsed) and can be cancelled, with a refund, within 14 days of its
activation; after that it runs to the end of its term. Reminder mails go to the car's primary user 30 days,
15 days and 48 hours before the end, and at the end; `run_due_reminders` sends each at most once per term, also
with several cloud processes (the registry records each before its mail goes out, atomically).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from broker.registry import (
    EnrolmentState,
    LicenceChange,
    LicenceRecord,
    MailRecord,
    PurchaseRecord,
    Role,
)

from ._access import AccessControl, licence_problem
from ._config import DAY
from ._context import ServiceContext
from ._errors import CancellationPeriodOver, InvalidRequest
from ._rights import Right
from ._security import add_years

__all__ = ["REMINDER_STAGES", "LicenceService", "LicenceStatus", "Reminder"]

#: (stage, seconds before the end of the term) — R14.
REMINDER_STAGES: Final = (("30d", 30 * DAY), ("15d", 15 * DAY), ("48h", 2 * DAY), ("end", 0.0))

_REMINDER_TEXT: Final = {
    "30d": "in 30 days",
    "15d": "in 15 days",
    "48h": "in 48 hours",
    "end": "today",
}


@dataclass(frozen=True, slots=True)
class LicenceStatus:
    """A car's licence as the app shows it."""

    vin: str
    starts_at: float | None
    ends_at: float | None
    valid: bool
    #: `LICENSE_MISSING` / `LICENSE_EXPIRED` when not valid.
    problem: str | None
    purchases: tuple[PurchaseRecord, ...] = ()

    def as_result(self) -> dict[str, Any]:
        """The `result` of the app's `licence_status` / `licence.renew` / `licence.cancel` responses."""
        return {
            "vin": self.vin, "starts_at": self.starts_at, "ends_at": self.ends_at, "valid": self.valid,
            "problem": self.problem,
            "purchases": [
                {"years": p.years, "activated_at": p.activated_at, "starts_at": p.starts_at, "ends_at": p.ends_at,
                 "refunded": p.refunded_at is not None}
                for p in self.purchases
            ],
        }


@dataclass(frozen=True, slots=True)
class Reminder:
    """A reminder mail that was sent."""

    vin: str
    stage: str
    ends_at: float
    user_id: str
    email: str


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


class LicenceService:
    """Licence status, renewal, cancellation and reminders."""

    def __init__(self, ctx: ServiceContext, access: AccessControl) -> None:
        self._ctx = ctx
        self._reg = ctx.registry
        self._access = access

    def __repr__(self) -> str:
        return f"LicenceService({self._reg!r})"

    async def status(self, token: str | None, vin: str) -> LicenceStatus:
        """The licence of one of the user's cars (primary or secondary)."""
        access = await self._access.vehicle(token, vin, Right.LICENCE_STATUS)
        return await self._status(access.vin)

    async def _status(self, vin: str) -> LicenceStatus:
        licence = await self._reg.get_licence(vin)
        problem = licence_problem(licence, self._ctx.now())
        return LicenceStatus(
            vin=vin, starts_at=licence.starts_at if licence else None, ends_at=licence.ends_at if licence else None,
            valid=problem is None, problem=None if problem is None else problem.code.value,
            purchases=tuple(await self._reg.list_purchases(vin)),
        )

    async def renew(self, token: str | None, vin: str, years: int) -> LicenceStatus:
        """Buy `years` more (primary user only, the store right, R10): the term is extended from its end, or
        from now when it has lapsed (R14)."""
        access = await self._access.vehicle(token, vin, Right.STORE)
        limit = self._ctx.config.max_renew_years
        if isinstance(years, bool) or not isinstance(years, int) or not 1 <= years <= limit:
            raise InvalidRequest(f"A renewal is for 1 to {limit} years.")
        now = self._ctx.now()
        user_id = access.principal.user_id

        def extend(licence: LicenceRecord | None, _: list[PurchaseRecord]) -> LicenceChange:
            start = now if licence is None or licence.ends_at < now else licence.ends_at
            end = add_years(start, years)
            return LicenceChange(
                licence=LicenceRecord(vin=access.vin, starts_at=licence.starts_at if licence else now, ends_at=end),
                new_purchase=PurchaseRecord(
                    id=None, vin=access.vin, user_id=user_id, years=years, activated_at=now, starts_at=start,
                    ends_at=end,
                ),
            )

        change = await self._reg.update_licence(access.vin, extend)
        await self._ctx.audit("licence.renewed", user_id=user_id, vin=access.vin, years=years)
        await self._ctx.mail(
            access.principal.user.email, "Your CUPRA CONNECT services were renewed",
            f"The services of the CUPRA with VIN {access.vin} now run until {_day(change.licence.ends_at)}. "
            "You can cancel this purchase within 14 days.", user_id=user_id,
        )
        return await self._status(access.vin)

    async def cancel(self, token: str | None, vin: str) -> LicenceStatus:
        """Cancel the car's latest purchase with a refund, if this user made it and it was activated less than
        14 days ago (R15); otherwise `CancellationPeriodOver` (or `InvalidRequest` when there is none)."""
        access = await self._access.vehicle(token, vin, Right.STORE)
        now = self._ctx.now()
        user_id = access.principal.user_id
        window = self._ctx.config.withdrawal_s

        def refund(licence: LicenceRecord | None, purchases: list[PurchaseRecord]) -> LicenceChange:
            live = [p for p in purchases if p.refunded_at is None]
            if licence is None or not live or live[-1].user_id != user_id:
                raise InvalidRequest("There is no purchase of yours to cancel for this car.")
            latest = live[-1]
            if now - latest.activated_at > window:
                raise CancellationPeriodOver()
            # The latest purchase is the end of the term: cancelling it puts the end back where it started.
            shortened = dataclasses.replace(licence, ends_at=latest.starts_at)
            return LicenceChange(licence=shortened, refund_purchase_id=latest.id, refunded_at=now)

        try:
            await self._reg.update_licence(access.vin, refund)
        except (InvalidRequest, CancellationPeriodOver) as exc:
            await self._ctx.audit(
                "licence.cancel", "refused", user_id=user_id, vin=access.vin, error_code=exc.code.value
            )
            raise
        await self._ctx.audit("licence.cancelled", user_id=user_id, vin=access.vin)
        await self._ctx.mail(
            access.principal.user.email, "Your CUPRA CONNECT purchase was cancelled",
            f"Your purchase for the CUPRA with VIN {access.vin} was cancelled and will be refunded.",
            user_id=user_id,
        )
        return await self._status(access.vin)

    async def run_due_reminders(self, now: float | None = None) -> list[Reminder]:
        """Send every reminder that is due at `now` (default: the clock's now) and was not sent yet for the
        current term; the ones sent. When a run comes late, only the newest due stage is mailed (the earlier
        ones are recorded as passed, never mailed late). A car without a primary user gets no reminder yet."""
        now = self._ctx.now() if now is None else now
        horizon = max(offset for _, offset in REMINDER_STAGES)
        sent: list[Reminder] = []
        for licence in await self._reg.licences_ending_between(
            now - self._ctx.config.reminder_end_grace_s, now + horizon
        ):
            due = [stage for stage, offset in REMINDER_STAGES if now >= licence.ends_at - offset]
            if not due:
                continue
            owner = await self._primary(licence.vin)
            if owner is None:
                continue
            user_id, email = owner
            *passed, current = due
            for stage in passed:
                await self._reg.record_reminder(licence.vin, licence.ends_at, stage, now, None)
            mail = MailRecord(
                at=now, to=email, user_id=user_id,
                subject="Your CUPRA CONNECT services " + ("have ended" if current == "end" else "end soon"),
                body=f"The CUPRA CONNECT services of the CUPRA with VIN {licence.vin} end {_REMINDER_TEXT[current]} "
                f"({_day(licence.ends_at)}). Renew them in the CUPRA Store or the infotainment store.",
            )
            if await self._reg.record_reminder(licence.vin, licence.ends_at, current, now, mail):
                sent.append(Reminder(licence.vin, current, licence.ends_at, user_id, email))
                await self._ctx.audit("licence.reminder", user_id=user_id, vin=licence.vin, stage=current)
                await self._ctx.mailed(mail)
        return sent

    async def _primary(self, vin: str) -> tuple[str, str] | None:
        for e in await self._reg.list_vehicle_enrolments(vin):
            if e.role is Role.PRIMARY and e.state is EnrolmentState.ACTIVE:
                user = await self._reg.get_user(e.user_id)
                if user is not None:
                    return user.id, user.email
        return None
