"""R5-R9 over MQTT: adding cars, the in-car steps (two keys, pairing code, infotainment login) done in real TCUs,
the pairing code's year on the virtual clock, the one primary user, and the garage limit."""

from __future__ import annotations

import asyncio
import re

import pytest
from rules_kit import (
    DAY,
    HOUR,
    fleet_of,
    garage,
    jump_to,
    next_push,
    operator_control,
    refusal,
    relogin,
    wait_enrolment,
    wait_notification,
)

from broker.cloud import PRIMARY_CONFIRMATION, add_years
from broker.registry import EnrolmentState, Role
from tcu_sim.protocol import ErrorCode
from tcu_sim.testing import AppUserFactory, CarControlRefused, SimBroker, SimClock, SimCloud, SimFleet

ALL_MODELS = fleet_of(
    {"name": "leon", "count": 1, "model": "leon", "equipment": "media_system"},
    {"name": "formentor", "count": 1, "model": "formentor", "equipment": "media_system"},
    {"name": "ateca-nav", "count": 1, "model": "ateca", "equipment": "navigation"},
    {"name": "ateca-radio", "count": 1, "model": "ateca", "equipment": "radio"},
    {"name": "born", "count": 1, "model": "born", "equipment": "media_system"},
    {"name": "tavascan", "count": 1, "model": "tavascan", "equipment": "navigation"},
    {"name": "terramar", "count": 1, "model": "terramar", "equipment": "media_system"},
    name="models",
)
FIFTY_TWO = fleet_of(
    {"name": "leon", "count": 50, "model": "leon", "equipment": "media_system"},
    {"name": "formentor", "count": 2, "model": "formentor", "equipment": "media_system"},
    name="garage",
)
ATECA_ONLY = fleet_of({"name": "ateca", "count": 1, "model": "ateca", "equipment": "radio"}, name="radio")
NOT_VALID = "registration code is not valid"


@pytest.mark.tcu_fleet(ALL_MODELS)
async def test_r05_a_car_is_added_by_vin_with_the_terms_and_enrolled_by_two_keys_or_a_pairing_code_by_model(
    fleet: SimFleet, cloud: SimCloud, app_user_factory: AppUserFactory
) -> None:
    owner = await app_user_factory("owner@example.com")
    leon, radio = fleet.car("leon"), fleet.car("ateca-radio")
    code, _ = await refusal(owner.app.add_vehicle(leon.vin, accept_terms=False))
    assert code == ErrorCode.TERMS_AND_CONDITIONS_NOT_ACCEPTED
    assert await garage(owner) == {}

    # Leon and Formentor with media system, Ateca with navigation and the newer models: two-key verification;
    # the Ateca with radio: an 8-digit pairing code.
    methods = {car.group: (await owner.app.add_vehicle(car.vin)) for car in fleet.cars}
    assert {group: added.method for group, added in methods.items()} == {
        "leon": "tkov", "formentor": "tkov", "ateca-nav": "tkov", "ateca-radio": "pairing_code", "born": "tkov",
        "tavascan": "tkov", "terramar": "tkov",
    }
    pairing_code = methods["ateca-radio"].pairing_code
    assert pairing_code is not None
    assert re.fullmatch(r"\d{8}", pairing_code)
    assert all(added.pairing_code is None for group, added in methods.items() if group != "ateca-radio")
    assert set((await garage(owner)).values()) == {("primary", "pending")}  # nothing is done until the car says so

    # In the car: each car takes its own method's step only, and two-key verification needs both keys.
    with pytest.raises(CarControlRefused):
        radio.control("tkov")
    with pytest.raises(CarControlRefused):
        leon.control("enter_pairing_code", code=pairing_code)
    with pytest.raises(CarControlRefused):
        leon.control("tkov", keys=1)
    for car in fleet.cars:
        if car is radio:
            car.control("enter_pairing_code", code=pairing_code)  # Settings > Online Services > Register
        else:
            car.control("tkov")
    for car in fleet.cars:
        await wait_enrolment(cloud, car.vin, owner, EnrolmentState.ACTIVE)
    assert await garage(owner) == {car.vin: ("primary", "active") for car in fleet.cars}
    methods_used = {entry["vin"]: entry["method"] for entry in await owner.app.list_vehicles()}
    assert methods_used == {car.vin: "pairing_code" if car is radio else "tkov" for car in fleet.cars}


@pytest.mark.tcu_fleet(ATECA_ONLY)
async def test_r06_a_pairing_code_lasts_a_year_needs_the_car_online_and_a_re_add_voids_the_old_one(
    fleet: SimFleet, cloud: SimCloud, clock: SimClock, app_user_factory: AppUserFactory
) -> None:
    ateca = fleet.car("ateca")
    first = await app_user_factory("first@example.com")
    added = await first.app.add_vehicle(ateca.vin)
    assert added.expires_at == add_years(clock.now(), 1)

    # Removing and re-adding the car issues a new code and voids the old one.
    await first.app.remove_vehicle(ateca.vin)
    readded = await first.app.add_vehicle(ateca.vin)
    assert readded.pairing_code is not None
    assert readded.pairing_code != added.pairing_code
    ateca.control("enter_pairing_code", code=added.pairing_code)
    await wait_notification(ateca, NOT_VALID)
    assert await garage(first) == {ateca.vin: ("primary", "pending")}

    # Without a connection the car cannot have a code accepted: it reaches the cloud once the car is online.
    await ateca.go_offline()

    async def offline() -> bool | None:
        state = await cloud.vehicle_state(ateca.vin)
        return True if state is not None and state.online is False else None

    async def what() -> str:
        return f"the cloud still thinks {ateca.vin} is online: {await cloud.vehicle_state(ateca.vin)}"

    await cloud.wait_until(offline, timeout=10, what=what)
    ateca.control("enter_pairing_code", code=readded.pairing_code)
    assert len(ateca.session.outbox) >= 1  # the event waits in the car
    assert await garage(first) == {ateca.vin: ("primary", "pending")}
    await ateca.go_online()
    await wait_enrolment(cloud, ateca.vin, first, EnrolmentState.ACTIVE)
    await wait_notification(ateca, PRIMARY_CONFIRMATION)

    # A code is valid for one year: a year and an hour later it is refused as expired, while a code issued a
    # day later (a year minus 23 hours old) still works.
    late = await app_user_factory("late@example.com")
    later = await app_user_factory("later@example.com")
    expired = await late.app.add_vehicle(ateca.vin)
    assert expired.expires_at is not None
    await clock.advance(DAY)
    valid = await later.app.add_vehicle(ateca.vin)
    await jump_to(clock, expired.expires_at + HOUR)
    for user in (first, late, later):
        await relogin(user)  # sessions last 30 days
    ateca.control("enter_pairing_code", code=expired.pairing_code)
    await wait_notification(ateca, "registration code has expired")
    assert await garage(late) == {ateca.vin: ("primary", "pending")}
    ateca.control("enter_pairing_code", code=valid.pairing_code)
    await wait_enrolment(cloud, ateca.vin, later, EnrolmentState.ACTIVE)
    await wait_notification(ateca, PRIMARY_CONFIRMATION, count=2)
    assert await garage(first) == {}  # replaced by the new primary user (R8)


async def test_r07_logging_in_with_the_cupra_id_in_the_infotainment_adds_the_car_to_the_garage(
    fleet: SimFleet, cloud: SimCloud, mqtt_broker: SimBroker, app_user_factory: AppUserFactory
) -> None:
    leon, radio = fleet.car("leon"), fleet.car("ateca")
    driver = await app_user_factory("driver@example.com")

    leon.control("infotainment_login", email=driver.email, password="not the password")
    await wait_notification(leon, "password is not correct")
    assert await garage(driver) == {}

    # "Add user" in the infotainment, this time by the operator over `sim/{vin}/control`.
    await operator_control(mqtt_broker, leon, "infotainment_login", email=driver.email, password=driver.password)
    await wait_enrolment(cloud, leon.vin, driver, EnrolmentState.ACTIVE)
    pushed = await next_push(driver.app, "vehicle_changed", lambda d: d.get("event") == "enrolled")
    assert pushed == {"vin": leon.vin, "event": "enrolled", "role": "primary", "method": "infotainment_login"}
    assert [(v["vin"], v["role"], v["state"], v["method"]) for v in await driver.app.list_vehicles()] == [
        (leon.vin, "primary", "active", "infotainment_login")
    ]
    await wait_notification(leon, PRIMARY_CONFIRMATION)
    assert await driver.command(leon, "lock", expect="succeeded") == "succeeded"

    # A radio Ateca has no user menu to log in from: the car itself refuses.
    with pytest.raises(CarControlRefused):
        radio.control("infotainment_login", email=driver.email, password=driver.password)


async def test_r08_enrolment_makes_the_one_primary_user_shown_in_the_car_and_a_new_owner_replaces_the_old(
    fleet: SimFleet, cloud: SimCloud, app_user_factory: AppUserFactory
) -> None:
    leon = fleet.car("leon")
    seller = await app_user_factory("seller@example.com")
    buyer = await app_user_factory("buyer@example.com")
    unverified = await app_user_factory("unverified@example.com", verified=False)

    async def primaries() -> list[str]:
        return [
            e.user_id for e in await cloud.registry.list_vehicle_enrolments(leon.vin)
            if e.role is Role.PRIMARY and e.state is EnrolmentState.ACTIVE
        ]

    await seller.enrol(leon)
    assert await wait_notification(leon, PRIMARY_CONFIRMATION) == "You are now the primary user of this vehicle."
    assert await primaries() == [await seller.user_id()]

    # Somebody who has not verified their CUPRA ID replaces nobody.
    leon.control("infotainment_login", email=unverified.email, password=unverified.password)
    await wait_notification(leon, "verify your e-mail address")
    assert await primaries() == [await seller.user_id()]

    # A new verified owner (two keys in the car) replaces the old one, who is told by push and by mail.
    await buyer.enrol(leon)
    await wait_notification(leon, PRIMARY_CONFIRMATION, count=2)
    assert await primaries() == [await buyer.user_id()]
    told = await next_push(seller.app, "vehicle_changed", lambda d: d.get("event") == "removed")
    assert told == {"vin": leon.vin, "event": "removed", "reason": "replaced"}
    assert "A CUPRA left your garage" in [mail.subject for mail in await seller.app.mailbox()]
    assert await garage(seller) == {}
    assert await garage(buyer) == {leon.vin: ("primary", "active")}
    code, _ = await refusal(seller.app.lock(leon.vin, seller.spin))
    assert code == ErrorCode.VEHICLE_NOT_FOUND
    assert await buyer.command(leon, "unlock", expect="succeeded") == "succeeded"


@pytest.mark.tcu_fleet(FIFTY_TWO)
async def test_r09_a_garage_holds_up_to_fifty_cars(
    fleet: SimFleet, cloud: SimCloud, app_user_factory: AppUserFactory
) -> None:
    collector = await app_user_factory("collector@example.com")
    fifty, (fifty_first, fifty_second) = fleet.select("leon"), fleet.select("formentor")
    assert len(fifty) == 50
    added = await asyncio.gather(*(collector.app.add_vehicle(car.vin) for car in fifty))
    assert {a.method for a in added} == {"tkov"}
    for car in fifty:
        car.control("tkov")
    user_id = await collector.user_id()

    async def all_active() -> bool | None:
        garage_now = await cloud.registry.list_user_enrolments(user_id)
        return True if sum(e.state is EnrolmentState.ACTIVE for e in garage_now) == 50 else None

    async def what() -> str:
        return f"garage: {sorted(v[1] for v in (await garage(collector)).values())}"

    await cloud.wait_until(all_active, timeout=20, what=what)

    # The 51st car: refused in the app, and in the car's infotainment (which says why).
    code, _ = await refusal(collector.app.add_vehicle(fifty_first.vin))
    assert code == ErrorCode.GARAGE_FULL
    fifty_second.control("infotainment_login", email=collector.email, password=collector.password)
    await wait_notification(fifty_second, "garage is full")
    assert len(await garage(collector)) == 50

    # Removing one makes room for another.
    await collector.app.remove_vehicle(fifty[0].vin)
    await collector.enrol(fifty_first)
    current = await garage(collector)
    assert len(current) == 50
    assert current[fifty_first.vin] == ("primary", "active")
    assert fifty[0].vin not in current
