"""What the cloud does with a car's verified event: the in-car enrolment steps, a factory reset, a privacy
change, an emergency call. The MQTT handler verifies the event (signature, `aud`, `exp`, `seq`: R18), then hands
it here and acts on the outcome: a message to show in the infotainment, app pushes for the users affected."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from broker.registry import EnrolmentRecord
from tcu_sim.protocol import Event, EventType

from ._context import ServiceContext
from ._errors import CloudError
from ._garage import EnrolmentOutcome, GarageService
from ._vehicles import VehicleService

__all__ = ["CarEventOutcome", "CarEvents"]

log = structlog.get_logger("broker.cloud.events")


@dataclass(frozen=True, slots=True)
class CarEventOutcome:
    """What an event changed. `notify` is the text the cloud sends back to the car's infotainment
    (`infotainment.notify`): the primary-user confirmation (R8) or why an in-car step was refused."""

    vin: str
    type: EventType
    enrolment: EnrolmentOutcome | None = None
    removed: tuple[EnrolmentRecord, ...] = ()
    error: CloudError | None = None
    notify: str | None = None

    @property
    def users_affected(self) -> tuple[str, ...]:
        """Users whose garage changed (for `vehicle_changed` pushes)."""
        ids = [e.user_id for e in self.removed]
        if self.enrolment is not None:
            ids = [self.enrolment.user_id, *(e.user_id for e in self.enrolment.removed)]
        return tuple(dict.fromkeys(ids))


class CarEvents:
    """Dispatches a car's events to the garage and vehicle services."""

    def __init__(self, ctx: ServiceContext, garage: GarageService, vehicles: VehicleService) -> None:
        self._ctx = ctx
        self._garage = garage
        self._vehicles = vehicles

    def __repr__(self) -> str:
        return "CarEvents()"

    async def handle(self, vin: str, event: Event) -> CarEventOutcome:
        """Apply one verified event of car `vin`. Refusals of in-car steps come back in `error` (never raised):
        they are answers for the person at the car, not failures of the cloud."""
        try:
            if event.type is EventType.PAIRING_CODE_ENTERED and event.pairing_code is not None:
                done = await self._garage.complete_by_pairing_code(vin, event.pairing_code)
                return CarEventOutcome(vin, event.type, enrolment=done, notify=done.confirmation)
            if event.type is EventType.TKOV_COMPLETED:
                done = await self._garage.complete_by_tkov(vin, event.email)
                return CarEventOutcome(vin, event.type, enrolment=done, notify=done.confirmation)
            if event.type is EventType.INFOTAINMENT_LOGIN and event.email is not None and event.password is not None:
                done = await self._garage.complete_by_infotainment_login(
                    vin, event.email, event.password.get_secret_value()
                )
                return CarEventOutcome(vin, event.type, enrolment=done, notify=done.confirmation)
            if event.type is EventType.FACTORY_RESET:
                removed = await self._garage.factory_reset(vin)
                return CarEventOutcome(vin, event.type, removed=tuple(removed))
            if event.type is EventType.PRIVACY_CHANGED and event.privacy_mode is not None:
                await self._vehicles.record_privacy(vin, event.privacy_mode.value, event.at)
                return CarEventOutcome(vin, event.type)
            if event.type is EventType.ECALL:
                # Required by law: handled whatever the licence, privacy level or enrolment (R12, R13).
                await self._ctx.audit("vehicle.ecall", vin=vin)
                return CarEventOutcome(vin, event.type)
        except CloudError as exc:
            log.info("car_event.refused", vin=vin, event_type=event.type.value, error_code=exc.code.value)
            return CarEventOutcome(vin, event.type, error=exc, notify=exc.message)
        return CarEventOutcome(vin, event.type)
