"""The seed's car services end to end (SPEC §2.5, R10-R13): driving data, health report, speed and area alerts,
service scheduling and online roadside assistance — real TCU cars driving on the virtual clock, real app users,
the real cloud over Mosquitto, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from rules_kit import FREE_YEAR_ENDS, HOUR, WAIT, advance_to, next_push, refusal, relogin, wait_notification

from tcu_sim.events import AlertFired, RoadsideCaseOpened
from tcu_sim.protocol import ErrorCode, PushEvent, generate_vin
from tcu_sim.testing import AppUserFactory, SimCar, SimClock, SimCloud, SimFleet, SimUser

HOME = (41.3874, 2.1686)  # the rules fleet's home area (radius 2 km)
NEAR = (41.4036, 2.1744)  # about 2 km from HOME
FAR = (41.5300, 2.1700)  # about 16 km north of HOME


async def drive_until_parked(car: SimCar, clock: SimClock, to: tuple[float, float], speed_kmh: float) -> None:
    """Drive the car to `to` at `speed_kmh`, a minute of virtual time at a time, until it parks (so that what it
    sends on the way reaches the cloud well within the messages' lifetime)."""
    car.control("drive_to", lat=to[0], lon=to[1], speed_kmh=speed_kmh)
    await car.wait_for(moving=True)
    for _ in range(600):
        await clock.advance(60)
        if not car.vehicle.moving:
            return
    raise AssertionError(f"{car.vin} still driving after 10 hours: {car.vehicle!r}")


async def drive(
    car: SimCar, clock: SimClock, user: SimUser, to: tuple[float, float], speed_kmh: float
) -> list[PushEvent]:
    """Drive the car to `to` at `speed_kmh` until the cloud has its trip; every push `user` got until the cloud
    told them of the trip (what the trip fired comes before: alerts and their mails)."""
    await drive_until_parked(car, clock, to, speed_kmh)
    pushed: list[PushEvent] = []
    async with asyncio.timeout(WAIT):
        while True:
            event = await user.app.next_event(WAIT)
            pushed.append(event)
            if event.type == "vehicle_changed" and event.data.get("event") == "trip" and event.data["vin"] == car.vin:
                return pushed


def of_type(pushed: list[PushEvent], kind: str) -> list[dict[str, Any]]:
    """The data of the pushes of one type."""
    return [event.data for event in pushed if event.type == kind]


async def owner_and_friend(fleet: SimFleet, app_user_factory: AppUserFactory) -> tuple[SimCar, SimUser, SimUser]:
    leon = fleet.car("leon")
    owner = await app_user_factory("owner@example.com")
    friend = await app_user_factory("friend@example.com")
    await owner.enrol(leon)
    await owner.app.invite_secondary(leon.vin, friend.email)
    return leon, owner, friend


async def test_driving_data_for_primary_and_secondary_users_and_privacy(
    fleet: SimFleet, clock: SimClock, app_user_factory: AppUserFactory
) -> None:
    leon, owner, friend = await owner_and_friend(fleet, app_user_factory)
    start = clock.now()

    await drive(leon, clock, owner, NEAR, 50)
    trips = await owner.app.driving_data(leon.vin)
    assert await friend.app.driving_data(leon.vin) == trips  # R10: a secondary user sees driving data
    (trip,) = trips
    assert trip["start"] == pytest.approx({"lat": HOME[0], "lon": HOME[1]}, abs=0.05)
    assert trip["end"] == pytest.approx({"lat": NEAR[0], "lon": NEAR[1]}, abs=1e-5)
    assert 1.5 < trip["distance_km"] < 3.5
    assert trip["max_speed_kmh"] == 50
    assert trip["average_speed_kmh"] == pytest.approx(50, abs=0.5)
    assert trip["energy_unit"] == "l"
    assert trip["energy_used"] > 0
    assert trip["started_at"] >= start
    assert "samples" not in trip

    # no_position: the trip is kept, its positions are not.
    leon.control("set_privacy", mode="no_position")
    await drive(leon, clock, owner, HOME, 50)
    newest, oldest = await owner.app.driving_data(leon.vin)
    assert oldest == trip
    assert (newest["start"], newest["end"]) == (None, None)
    assert newest["distance_km"] > 1.5
    assert await owner.app.driving_data(leon.vin, since=newest["started_at"]) == [newest]
    assert await owner.app.driving_data(leon.vin, limit=1) == [newest]

    # max: the car sends no trip at all (and the services are unavailable, R13).
    leon.control("set_privacy", mode="max")
    await next_push(owner.app, "vehicle_changed", lambda d: d.get("privacy_mode") == "max")
    await drive_until_parked(leon, clock, NEAR, 50)
    assert (await refusal(owner.app.driving_data(leon.vin)))[0] == ErrorCode.PRIVACY_MODE
    leon.control("set_privacy", mode="off")  # after the trip: the car's events go out in order
    await next_push(owner.app, "vehicle_changed", lambda d: d.get("privacy_mode") == "off")
    assert len(await owner.app.driving_data(leon.vin)) == 2
    assert leon.vehicle.moving is False


async def test_a_drive_out_of_the_area_and_back_fires_two_area_alerts_and_one_speed_alert_each_pushed_and_mailed_once(
    fleet: SimFleet, cloud: SimCloud, clock: SimClock, app_user_factory: AppUserFactory
) -> None:
    leon, owner, friend = await owner_and_friend(fleet, app_user_factory)

    # R10: alerts are the primary user's; a secondary user can neither set, read nor delete them.
    refused = [
        await refusal(friend.app.speed_alert_set(leon.vin, max_speed_kmh=120)),
        await refusal(friend.app.speed_alert_get(leon.vin)),
        await refusal(friend.app.speed_alert_delete(leon.vin)),
        await refusal(friend.app.area_alert_set(leon.vin, lat=HOME[0], lon=HOME[1], radius_m=5000)),
        await refusal(friend.app.area_alert_get(leon.vin)),
        await refusal(friend.app.area_alert_delete(leon.vin)),
    ]
    assert [code for code, _ in refused] == [ErrorCode.INSUFFICIENT_RIGHTS] * len(refused)
    assert (await refusal(owner.app.speed_alert_set(leon.vin, max_speed_kmh=20)))[0] == ErrorCode.INVALID_REQUEST

    assert await owner.app.speed_alert_get(leon.vin) is None
    await owner.app.speed_alert_set(leon.vin, max_speed_kmh=120)
    await owner.app.area_alert_set(leon.vin, lat=HOME[0], lon=HOME[1], radius_m=5000)
    assert await owner.app.speed_alert_get(leon.vin) == {"enabled": True, "max_speed_kmh": 120}
    assert await owner.app.area_alert_get(leon.vin) == {
        "enabled": True, "lat": HOME[0], "lon": HOME[1], "radius_m": 5000
    }
    fired = cloud.events.subscribe(AlertFired)

    # Out of the area at 140 km/h (one crossing of each), and back in at 50 km/h (one crossing of the area).
    pushed = await drive(leon, clock, owner, FAR, 140)
    pushed += await drive(leon, clock, owner, HOME, 50)

    alerts = of_type(pushed, "alert")
    # In the order they happened: too fast from the start, out of the area some minutes later, back in.
    assert [(a["alert"], a.get("crossing")) for a in alerts] == [("speed", None), ("area", "left"), ("area", "entered")]
    (speed,) = [a for a in alerts if a["alert"] == "speed"]
    assert (speed["speed_kmh"], speed["max_speed_kmh"]) == (140, 120)
    assert all(a["vin"] == leon.vin for a in alerts)
    subjects = sorted(m["subject"] for m in of_type(pushed, "mail") if m["subject"].endswith("alert"))
    assert subjects == ["Area alert", "Area alert", "Speed alert"]
    mailbox = [mail.subject for mail in await owner.app.mailbox()]
    assert sorted(s for s in mailbox if s.endswith("alert")) == subjects
    assert sorted(e.alert for e in fired.drain()) == ["area", "area", "speed"]
    assert of_type(friend.app.pending_events(), "alert") == []  # the primary user's alerts only

    # No flood: a drive that stays in the area and below the limit fires nothing.
    pushed = await drive(leon, clock, owner, NEAR, 100)
    assert of_type(pushed, "alert") == []
    assert fired.drain() == []

    assert await owner.app.speed_alert_delete(leon.vin) is True
    assert await owner.app.speed_alert_delete(leon.vin) is False
    assert await owner.app.speed_alert_get(leon.vin) is None
    pushed = await drive(leon, clock, owner, HOME, 140)
    assert of_type(pushed, "alert") == []


async def test_no_alert_fires_in_maximum_privacy_or_once_the_licence_has_expired(
    fleet: SimFleet, clock: SimClock, app_user_factory: AppUserFactory
) -> None:
    leon = fleet.car("leon")
    owner = await app_user_factory("owner@example.com")
    await owner.enrol(leon)
    await owner.app.speed_alert_set(leon.vin, max_speed_kmh=100)

    # Maximum privacy: the car sends no trip, so nothing to check.
    leon.control("set_privacy", mode="max")
    await next_push(owner.app, "vehicle_changed", lambda d: d.get("privacy_mode") == "max")
    await drive_until_parked(leon, clock, FAR, 140)
    leon.control("set_privacy", mode="off")
    pushed = [await owner.app.next_event(WAIT)]
    while not (pushed[-1].type == "vehicle_changed" and pushed[-1].data.get("privacy_mode") == "off"):
        pushed.append(await owner.app.next_event(WAIT))
    assert of_type(pushed, "alert") == []
    assert await owner.app.driving_data(leon.vin) == []

    # The licence ended: the trip is kept, but no alert fires (and the alert service is refused).
    await advance_to(clock, FREE_YEAR_ENDS + HOUR)
    await relogin(owner)
    pushed = await drive(leon, clock, owner, HOME, 140)
    assert of_type(pushed, "alert") == []
    assert (await refusal(owner.app.speed_alert_get(leon.vin)))[0] == ErrorCode.LICENSE_EXPIRED
    assert not [mail for mail in await owner.app.mailbox() if mail.subject == "Speed alert"]

    # Renewed, the same alert fires again.
    await owner.app.licence_renew(leon.vin, 1)
    pushed = await drive(leon, clock, owner, FAR, 140)
    assert [a["alert"] for a in of_type(pushed, "alert")] == ["speed"]


async def test_the_health_report_and_a_new_warning_pushed_to_the_users_and_mailed_to_the_primary_user(
    fleet: SimFleet, cloud: SimCloud, app_user_factory: AppUserFactory
) -> None:
    leon, owner, friend = await owner_and_friend(fleet, app_user_factory)
    report = await owner.app.health_report(leon.vin)
    assert await friend.app.health_report(leon.vin) == report  # R10: a secondary user gets it
    assert report["vin"] == leon.vin
    status = leon.status()
    assert report["warnings"] == status.health.warnings
    assert report["inspection_due_days"] == status.health.inspection_due_days
    assert report["oil_service_due_km"] == status.health.oil_service_due_km
    assert report["battery_12v_v"] == status.battery_12v_v

    leon.control("set_battery", voltage=11.5)  # a weak 12 V battery: a new warning
    for user in (owner, friend):
        told = await next_push(user.app, "notification", lambda d: d.get("event") == "health_warning")
        assert (told["vin"], told["warning"]) == (leon.vin, "battery_12v_low")
    assert [m.subject for m in await owner.app.mailbox() if m.subject.startswith("Health")] == [
        "Health warning: battery 12v low"
    ]
    assert not [m for m in await friend.app.mailbox() if m.subject.startswith("Health")]

    async def reported() -> dict[str, Any] | None:
        now = await owner.app.health_report(leon.vin)
        return now if "battery_12v_low" in now["warnings"] else None

    async def what() -> str:
        return f"the health report never showed the weak battery: {await owner.app.health_report(leon.vin)}"

    assert (await cloud.wait_until(reported, timeout=WAIT, what=what))["battery_12v_v"] == 11.5


async def test_service_scheduling_books_lists_and_cancels_with_mail_and_infotainment(
    fleet: SimFleet, app_user_factory: AppUserFactory
) -> None:
    leon, owner, friend = await owner_and_friend(fleet, app_user_factory)
    refused = [
        await refusal(friend.app.service_scheduling_book(leon.vin, date="2026-02-02")),
        await refusal(friend.app.service_scheduling_list(leon.vin)),
        await refusal(friend.app.service_scheduling_cancel(leon.vin, "bk-1")),
    ]
    assert [code for code, _ in refused] == [ErrorCode.INSUFFICIENT_RIGHTS] * len(refused)
    for bad in ("2025-12-31", "next tuesday"):  # the clock says 2026-01-01
        assert (await refusal(owner.app.service_scheduling_book(leon.vin, date=bad)))[0] == ErrorCode.INVALID_REQUEST
    assert await owner.app.service_scheduling_list(leon.vin) == []

    booked = (await owner.app.service_scheduling_book(
        leon.vin, date="2026-02-02", workshop="CUPRA Garage Barcelona", reason="oil service"
    ))["booking"]
    assert (booked["date"], booked["workshop"], booked["reason"], booked["state"]) == (
        "2026-02-02", "CUPRA Garage Barcelona", "oil service", "booked"
    )
    shown = await wait_notification(leon, "Service appointment booked")
    assert "2026-02-02" in shown
    assert "CUPRA Garage Barcelona" in shown
    await next_push(owner.app, "mail", lambda d: d["subject"] == "Your service appointment is booked")
    assert await owner.app.service_scheduling_list(leon.vin) == [booked]

    cancelled = (await owner.app.service_scheduling_cancel(leon.vin, booked["booking_id"]))["booking"]
    assert cancelled["state"] == "cancelled"
    await wait_notification(leon, "cancelled")
    await next_push(owner.app, "mail", lambda d: d["subject"] == "Your service appointment is cancelled")
    assert await owner.app.service_scheduling_list(leon.vin) == [cancelled]
    again = await refusal(owner.app.service_scheduling_cancel(leon.vin, booked["booking_id"]))
    assert again[0] == ErrorCode.INVALID_REQUEST


async def test_a_breakdown_call_opens_a_roadside_case_pushed_to_the_primary_user(
    fleet: SimFleet, cloud: SimCloud, clock: SimClock, app_user_factory: AppUserFactory
) -> None:
    leon, owner, friend = await owner_and_friend(fleet, app_user_factory)
    opened = cloud.events.subscribe(RoadsideCaseOpened)
    assert await owner.app.roadside_status(leon.vin) == []

    leon.control("breakdown_call")  # the button in the car
    case = await next_push(owner.app, "roadside")
    assert case["vin"] == leon.vin
    assert case["state"] == "open"
    assert case["position"] == pytest.approx(
        {"lat": leon.vehicle.position[0], "lon": leon.vehicle.position[1]}, abs=1e-6
    )
    await wait_notification(leon, "Roadside assistance")
    cases = await friend.app.roadside_status(leon.vin)  # R10: secondary users see the cases too
    assert cases == [{k: v for k, v in case.items() if k != "vin"}]
    assert (await opened.wait_for(lambda e: e.vin == leon.vin, WAIT)).with_position is True

    # no_position: the case is opened without the car's position.
    await clock.advance(600)
    leon.control("set_privacy", mode="no_position")
    leon.control("breakdown_call")
    hidden = await next_push(owner.app, "roadside")
    assert hidden["position"] is None
    assert [c["case_id"] for c in await owner.app.roadside_status(leon.vin)] == [hidden["case_id"], case["case_id"]]
    assert of_type(friend.app.pending_events(), "roadside") == []  # pushed to the primary user


async def test_another_users_vin_is_vehicle_not_found_for_every_car_service(
    fleet: SimFleet, app_user_factory: AppUserFactory
) -> None:
    leon = fleet.car("leon")
    owner = await app_user_factory("owner@example.com")
    stranger = await app_user_factory("stranger@example.com")
    await owner.enrol(leon)
    nobodys = generate_vin(random.Random(12))
    for ask in (
        lambda vin: stranger.app.driving_data(vin),
        lambda vin: stranger.app.health_report(vin),
        lambda vin: stranger.app.roadside_status(vin),
        lambda vin: stranger.app.speed_alert_set(vin, max_speed_kmh=120),
        lambda vin: stranger.app.speed_alert_get(vin),
        lambda vin: stranger.app.speed_alert_delete(vin),
        lambda vin: stranger.app.area_alert_set(vin, lat=HOME[0], lon=HOME[1], radius_m=500),
        lambda vin: stranger.app.area_alert_get(vin),
        lambda vin: stranger.app.area_alert_delete(vin),
        lambda vin: stranger.app.service_scheduling_book(vin, date="2026-02-02"),
        lambda vin: stranger.app.service_scheduling_list(vin),
        lambda vin: stranger.app.service_scheduling_cancel(vin, "bk-1"),
    ):
        theirs, unknown = await refusal(ask(leon.vin)), await refusal(ask(nobodys))
        assert theirs == unknown
        assert theirs[0] == ErrorCode.VEHICLE_NOT_FOUND
