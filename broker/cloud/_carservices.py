"""The car services of the seed beyond remote commands (SPEC §2.5): driving data (trips), the health report,
speed and area alerts, service scheduling and online roadside assistance.

Every app-facing method goes through `AccessControl.service` (session, car in the garage, R10 rights, R11/R12
licence, R13 privacy); every car-facing method takes what a verified car event carried. What the app is pushed
is decided by the handler; mails are sent here (the mail listeners push their subjects).

Alerts are checked on the trips a car reports: its speed and position samples, taken while driving. A speed
alert fires when the car drives faster than the limit for more than `SPEED_GRACE_S` seconds; an area alert when
the car leaves or enters its circle. Each fires once per crossing: the speed must drop to the limit, the car must
come back across the boundary, before the alert fires again. The area's inside/outside is kept between trips.
An alert fires only for the car's active primary user, with a valid licence and the car not in maximum privacy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

from broker.registry import (
    AlertRecord,
    BookingRecord,
    CarContext,
    EnrolmentState,
    RoadsideCaseRecord,
    Role,
    TripRecord,
    UserRecord,
)
from tcu_sim.protocol import Position, PrivacyMode, Trip, TripSample

from ._access import AccessControl, licence_problem
from ._context import ServiceContext
from ._errors import InvalidRequest
from ._rights import Right

__all__ = [
    "ALERT_KINDS",
    "SPEED_GRACE_S",
    "Booking",
    "CarServices",
    "FiredAlert",
    "RoadsideCase",
    "area_crossings",
    "booking_result",
    "case_result",
    "speed_crossings",
    "trip_result",
]

SPEED_GRACE_S: Final = 5.0  # a speed alert fires only after the limit is exceeded for more than this
ALERT_KINDS: Final = ("speed", "area")
_EARTH_RADIUS_M: Final = 6_371_008.8
_MAX_TRIPS: Final = 500
_DEFAULT_WORKSHOP: Final = "nearest CUPRA service partner"


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def speed_crossings(samples: Sequence[TripSample], max_speed_kmh: float) -> list[tuple[float, float]]:
    """Each time the speed went above `max_speed_kmh` for more than `SPEED_GRACE_S`: (when it went above, the
    top speed of that stretch). A sample's speed holds until the next sample."""
    fired: list[tuple[float, float]] = []
    start: float | None = None
    top = 0.0

    def close(end: float) -> None:
        if start is not None and end - start > SPEED_GRACE_S:
            fired.append((start, top))

    for sample in samples:
        if sample.speed_kmh > max_speed_kmh:
            if start is None:
                start, top = sample.at, sample.speed_kmh
            top = max(top, sample.speed_kmh)
        elif start is not None:
            close(sample.at)
            start = None
    if start is not None and samples:
        close(samples[-1].at)
    return fired


def area_crossings(
    samples: Sequence[TripSample], lat: float, lon: float, radius_m: float, inside: bool | None
) -> tuple[list[tuple[float, str, Position]], bool | None]:
    """Each crossing of the circle's boundary: (when, `left` | `entered`, where); and whether the car is inside
    after the samples. `inside` is where it was before them (None: unknown, the first sample tells)."""
    crossings: list[tuple[float, str, Position]] = []
    for sample in samples:
        if sample.lat is None or sample.lon is None:
            continue  # privacy hid the position
        now_inside = _distance_m(sample.lat, sample.lon, lat, lon) <= radius_m
        if inside is not None and now_inside != inside:
            crossings.append((sample.at, "entered" if now_inside else "left", Position(lat=sample.lat, lon=sample.lon)))
        inside = now_inside
    return crossings, inside


@dataclass(frozen=True, slots=True)
class FiredAlert:
    """An alert that fired: to tell `user_id` (pushed by the handler; the mail is sent already)."""

    vin: str
    user_id: str
    kind: str  # speed | area
    at: float
    detail: dict[str, Any]

    def as_data(self) -> dict[str, Any]:
        """The push event's data."""
        return {"vin": self.vin, "alert": self.kind, "at": self.at, **self.detail}


@dataclass(frozen=True, slots=True)
class Booking:
    """A booking as the app sees it, and the message the car's infotainment shows about it."""

    record: BookingRecord
    notice: str

    def as_result(self) -> dict[str, Any]:
        """`{booking_id, date, workshop, reason, state, created_at, cancelled_at}`."""
        return booking_result(self.record)


def booking_result(b: BookingRecord) -> dict[str, Any]:
    """A booking as an app result."""
    return {
        "booking_id": b.id, "date": b.date, "workshop": b.workshop, "reason": b.reason, "state": b.state,
        "created_at": b.created_at, "cancelled_at": b.cancelled_at,
    }


@dataclass(frozen=True, slots=True)
class RoadsideCase:
    """A case opened from a breakdown call (None `record`: refused, and `notice` tells the car why), and the
    primary user to tell."""

    record: RoadsideCaseRecord | None
    notice: str
    primary_user_id: str | None

    def as_data(self) -> dict[str, Any]:
        """The push event's data."""
        assert self.record is not None  # only pushed for an opened case
        return {"vin": self.record.vin, **case_result(self.record)}


def case_result(c: RoadsideCaseRecord) -> dict[str, Any]:
    """A roadside case as an app result."""
    return {"case_id": c.id, "opened_at": c.opened_at, "state": c.state, "position": c.position, "detail": c.detail}


def trip_result(t: TripRecord) -> dict[str, Any]:
    """A trip as the app's driving data shows it (the samples stay in the cloud, for the alerts)."""
    data = {k: v for k, v in t.trip.items() if k != "samples"}
    data.setdefault("start", None)
    data.setdefault("end", None)
    return {"trip_id": t.id, **data}


class CarServices:
    """Driving data, health report, alerts, service scheduling and roadside assistance."""

    def __init__(self, ctx: ServiceContext, access: AccessControl) -> None:
        self._ctx = ctx
        self._reg = ctx.registry
        self._access = access

    def __repr__(self) -> str:
        return f"CarServices({self._reg!r})"

    # -- driving data ----------------------------------------------------------------------------------------
    async def record_trip(self, vin: str, trip: Trip) -> TripRecord | None:
        """Keep a trip the car reported; None for a car the cloud does not know."""
        if await self._reg.get_vehicle(vin) is None:
            return None
        return await self._reg.add_trip(
            TripRecord(
                id=None, vin=vin, started_at=trip.started_at, ended_at=trip.ended_at,
                trip=trip.model_dump(mode="json"), received_at=self._ctx.now(),
            )
        )

    async def driving_data(
        self, token: str | None, vin: str, since: float | None, limit: int
    ) -> dict[str, Any]:
        """`{vin, trips: [...]}`, newest first (primary and secondary users, R10)."""
        access = await self._access.service(token, vin, Right.DRIVING_DATA)
        trips = await self._reg.list_trips(access.vin, since=since, limit=min(limit, _MAX_TRIPS))
        return {"vin": access.vin, "trips": [trip_result(t) for t in trips]}

    # -- health report ---------------------------------------------------------------------------------------
    async def health_report(self, token: str | None, vin: str) -> dict[str, Any]:
        """The health report from the car's last status (primary and secondary users, R10)."""
        access = await self._access.service(token, vin, Right.HEALTH_REPORT)
        state = await self._reg.get_vehicle_state(access.vin)
        status = None if state is None else state.status
        report: dict[str, Any] = {
            "vin": access.vin, "updated_at": None, "warnings": [], "inspection_due_days": None,
            "oil_service_due_km": None, "battery_12v_v": None, "fuel_level_pct": None, "range_km": None,
            "odometer_km": None,
        }
        if status is not None:
            health = status.get("health", {})
            report.update(
                updated_at=status.get("updated_at"), warnings=list(health.get("warnings", [])),
                inspection_due_days=health.get("inspection_due_days"),
                oil_service_due_km=health.get("oil_service_due_km"),
                battery_12v_v=status.get("battery_12v_v"), fuel_level_pct=status.get("fuel_level_pct"),
                range_km=status.get("range_km"), odometer_km=status.get("odometer_km"),
            )
        return report

    async def health_warning(self, vin: str, warning: str) -> str | None:
        """A new warning the car reported: mail the primary user (services active); their id, or None."""
        owner = await self._active_primary(vin)
        if owner is None:
            return None
        user, context = owner
        if licence_problem(context.licence, self._ctx.now()) is not None:
            return None
        await self._ctx.mail(
            user.email, f"Health warning: {warning.replace('_', ' ')}",
            f"Your CUPRA {context.vehicle.model.title()} ({vin}) reports a new warning: {warning}. "
            "Please check the vehicle health report in the app.",
            user_id=user.id,
        )
        return user.id

    # -- alerts ----------------------------------------------------------------------------------------------
    async def set_alert(self, token: str | None, vin: str, kind: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Set the user's speed or area alert for the car (primary only, R10); the setting as stored. Changing an
        area forgets where the car was relative to the old one."""
        access = await self._access.service(token, vin, _ALERT_RIGHTS[kind])
        user_id = access.principal.user_id
        old = await self._reg.list_alerts(access.vin, user_id)
        state = next((a.state for a in old if a.kind == kind and kind == "speed"), {})
        await self._reg.put_alert(
            AlertRecord(vin=access.vin, user_id=user_id, kind=kind, settings=settings, state=state,
                        updated_at=self._ctx.now())
        )
        await self._ctx.audit(f"{kind}_alert.set", user_id=user_id, vin=access.vin)
        return settings

    async def get_alert(self, token: str | None, vin: str, kind: str) -> dict[str, Any] | None:
        """The user's speed or area alert for the car, or None (primary only, R10)."""
        access = await self._access.service(token, vin, _ALERT_RIGHTS[kind])
        for alert in await self._reg.list_alerts(access.vin, access.principal.user_id):
            if alert.kind == kind:
                return alert.settings
        return None

    async def delete_alert(self, token: str | None, vin: str, kind: str) -> bool:
        """Remove the user's speed or area alert for the car (primary only, R10); False when there was none."""
        access = await self._access.service(token, vin, _ALERT_RIGHTS[kind])
        deleted = await self._reg.delete_alert(access.vin, access.principal.user_id, kind)
        if deleted:
            await self._ctx.audit(f"{kind}_alert.delete", user_id=access.principal.user_id, vin=access.vin)
        return deleted

    async def check_trip(self, vin: str, trip: Trip) -> list[FiredAlert]:
        """Check a trip against the car's alerts; the alerts that fired (each mailed already)."""
        fired: list[FiredAlert] = []
        for alert in await self._reg.list_alerts(vin):
            context = await self._reg.get_car_context(vin, alert.user_id)
            enrolment = None if context is None else context.enrolment
            if (
                context is None or enrolment is None or enrolment.state is not EnrolmentState.ACTIVE
                or enrolment.role is not Role.PRIMARY
            ):
                continue  # no longer the primary user: the alert sleeps
            live = (
                alert.settings.get("enabled", True)
                and licence_problem(context.licence, self._ctx.now()) is None
                and context.privacy_mode != PrivacyMode.MAX.value
            )
            if alert.kind == "speed":
                hits = [] if not live else [
                    FiredAlert(vin, alert.user_id, "speed", at, {
                        "speed_kmh": top, "max_speed_kmh": alert.settings["max_speed_kmh"],
                    })
                    for at, top in speed_crossings(trip.samples, alert.settings["max_speed_kmh"])
                ]
            else:
                s = alert.settings
                crossings, inside = area_crossings(
                    trip.samples, s["lat"], s["lon"], s["radius_m"], alert.state.get("inside")
                )
                if inside != alert.state.get("inside"):
                    await self._reg.set_alert_state(vin, alert.user_id, "area", {"inside": inside}, self._ctx.now())
                hits = [] if not live else [
                    FiredAlert(vin, alert.user_id, "area", at, {
                        "crossing": crossing, "position": where.model_dump(mode="json"),
                        "center": {"lat": s["lat"], "lon": s["lon"]}, "radius_m": s["radius_m"],
                    })
                    for at, crossing, where in crossings
                ]
            for hit in hits:
                await self._mail_alert(hit, context)
            fired += hits
        return sorted(fired, key=lambda f: (f.at, f.kind))

    async def _mail_alert(self, hit: FiredAlert, context: CarContext) -> None:
        user = await self._reg.get_user(hit.user_id)
        if user is None:
            return
        when = datetime.fromtimestamp(hit.at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        car = f"CUPRA {context.vehicle.model.title()} ({hit.vin})"
        if hit.kind == "speed":
            subject = "Speed alert"
            body = (f"Your {car} drove at {hit.detail['speed_kmh']:.0f} km/h, above your limit of "
                    f"{hit.detail['max_speed_kmh']} km/h, at {when}.")
        else:
            subject = "Area alert"
            body = f"Your {car} {hit.detail['crossing']} the area you set at {when}."
        await self._ctx.mail(user.email, subject, body, user_id=user.id)
        await self._ctx.audit(f"{hit.kind}_alert.fired", user_id=user.id, vin=hit.vin)

    # -- service scheduling ----------------------------------------------------------------------------------
    async def book(
        self, token: str | None, vin: str, day: str, workshop: str | None, reason: str | None
    ) -> Booking:
        """Book a service appointment (primary only, R10): stored, confirmed by mail."""
        access = await self._access.service(token, vin, Right.SERVICE_SCHEDULING)
        try:
            when = datetime.fromisoformat(day)
        except ValueError:
            raise InvalidRequest("Parameter 'date' must be an ISO 8601 date.") from None
        today = datetime.fromtimestamp(self._ctx.now(), UTC).date()
        if when.date() < today:
            raise InvalidRequest("Parameter 'date' must not be in the past.")
        user = access.principal
        record = BookingRecord(
            id=self._ctx.new_id("bk"), vin=access.vin, user_id=user.user_id, date=day,
            workshop=workshop or _DEFAULT_WORKSHOP, reason=reason, state="booked", created_at=self._ctx.now(),
        )
        await self._reg.add_booking(record)
        await self._ctx.audit("service.booked", user_id=user.user_id, vin=access.vin, booking_id=record.id)
        notice = f"Service appointment booked: {_day(when)} at {record.workshop}."
        await self._mail_user(user.user_id, "Your service appointment is booked",
                              f"{notice} Reason: {reason or 'service'}. Booking {record.id}.")
        return Booking(record, notice)

    async def bookings(self, token: str | None, vin: str) -> list[BookingRecord]:
        """The car's service appointments (primary only, R10), oldest booked first."""
        access = await self._access.service(token, vin, Right.SERVICE_SCHEDULING)
        return await self._reg.list_bookings(access.vin)

    async def cancel_booking(self, token: str | None, vin: str, booking_id: str) -> Booking:
        """Cancel a booked appointment of the car (primary only, R10), confirmed by mail."""
        access = await self._access.service(token, vin, Right.SERVICE_SCHEDULING)
        record = await self._reg.cancel_booking(access.vin, booking_id, self._ctx.now())
        if record is None:
            raise InvalidRequest("There is no booked appointment with this id for this vehicle.")
        await self._ctx.audit("service.cancelled", user_id=access.principal.user_id, vin=access.vin,
                              booking_id=booking_id)
        notice = f"Service appointment of {_day(datetime.fromisoformat(record.date))} cancelled."
        await self._mail_user(access.principal.user_id, "Your service appointment is cancelled", notice)
        return Booking(record, notice)

    # -- roadside assistance ---------------------------------------------------------------------------------
    async def breakdown_call(self, vin: str, at: float, position: Position | None, detail: str | None) -> RoadsideCase:
        """A breakdown call from the car: a case for its primary user when the car's services are active."""
        owner = await self._active_primary(vin)
        vehicle = await self._reg.get_vehicle(vin)
        if vehicle is None:
            return RoadsideCase(None, "Online roadside assistance is not available for this vehicle.", None)
        licence = await self._reg.get_licence(vin)
        if licence_problem(licence, self._ctx.now()) is not None:
            return RoadsideCase(
                None, "Online roadside assistance needs active CUPRA CONNECT services. In an emergency, use the "
                "emergency call.", None,
            )
        case = RoadsideCaseRecord(
            id=self._ctx.new_id("rsa"), vin=vin, opened_at=at, state="open",
            position=None if position is None else position.model_dump(mode="json"), detail=detail,
        )
        await self._reg.add_roadside_case(case)
        await self._ctx.audit("roadside.opened", user_id=None if owner is None else owner[0].id, vin=vin,
                              case_id=case.id)
        notice = "Roadside assistance: your call was received, help is on its way."
        if owner is not None:
            await self._ctx.mail(owner[0].email, "Roadside assistance case opened",
                                 f"A breakdown call from your CUPRA ({vin}) opened case {case.id}.",
                                 user_id=owner[0].id)
        return RoadsideCase(case, notice, None if owner is None else owner[0].id)

    async def roadside_status(self, token: str | None, vin: str) -> dict[str, Any]:
        """`{vin, cases: [...]}`, newest first (primary and secondary users)."""
        access = await self._access.service(token, vin, Right.ROADSIDE)
        cases = await self._reg.list_roadside_cases(access.vin)
        return {"vin": access.vin, "cases": [case_result(c) for c in cases]}

    # -- helpers ---------------------------------------------------------------------------------------------
    async def _active_primary(self, vin: str) -> tuple[UserRecord, CarContext] | None:
        for e in await self._reg.list_vehicle_enrolments(vin):
            if e.role is Role.PRIMARY and e.state is EnrolmentState.ACTIVE:
                user = await self._reg.get_user(e.user_id)
                context = await self._reg.get_car_context(vin, e.user_id)
                if user is not None and context is not None:
                    return user, context
        return None

    async def _mail_user(self, user_id: str, subject: str, body: str) -> None:
        user = await self._reg.get_user(user_id)
        if user is not None:
            await self._ctx.mail(user.email, subject, body, user_id=user.id)


_ALERT_RIGHTS: Final = {"speed": Right.SPEED_ALERT, "area": Right.AREA_ALERT}


def _day(when: datetime | date) -> str:
    return when.strftime("%Y-%m-%d %H:%M") if isinstance(when, datetime) and (when.hour or when.minute) else (
        when.strftime("%Y-%m-%d")
    )
