"""R10-R13 over MQTT: what a secondary user may do, what a service needs (connection, the VIN in the garage, a
model that has it, a valid licence), what works without activated services (the eCall), and maximum privacy —
the services carried out by real TCUs, the time rules (command TTL, licence end) on the virtual clock."""

from __future__ import annotations

import random

import pytest
from rules_kit import (
    FREE_YEAR_ENDS,
    HOUR,
    RULES_FLEET,
    advance_to,
    cloud_handled,
    garage,
    next_push,
    record_commands,
    refusal,
    relogin,
)

from tcu_sim.protocol import CommandState, ErrorCode, generate_vin
from tcu_sim.testing import AppUserFactory, SimClock, SimCloud, SimFleet

HEATER = {"duration_min": 10, "target_temperature_c": 21.0}


async def test_r10_a_secondary_user_gets_status_locking_and_climate_but_no_alerts_scheduling_or_stores(
    fleet: SimFleet, app_user_factory: AppUserFactory
) -> None:
    leon = fleet.car("leon")
    owner = await app_user_factory("owner@example.com")
    friend = await app_user_factory("friend@example.com")
    await owner.enrol(leon)
    code, _ = await refusal(friend.app.vehicle_status(leon.vin))
    assert code == ErrorCode.VEHICLE_NOT_FOUND

    # The primary user nominates the secondary user.
    await owner.app.invite_secondary(leon.vin, friend.email)
    assert await garage(friend) == {leon.vin: ("secondary", "active")}
    assert "A CUPRA was added to your garage" in [mail.subject for mail in await friend.app.mailbox()]

    # Vehicle status, parking position, health report, remote lock and unlock, ventilation and heater: yes.
    seen = await friend.app.vehicle_status(leon.vin)
    assert seen["status"]["parking_position"] is not None
    assert "inspection_due_days" in seen["status"]["health"]
    assert await friend.command(leon, "unlock", expect="succeeded") == "succeeded"
    await leon.wait_for(locked=False)
    assert await friend.command(leon, "lock", expect="succeeded") == "succeeded"
    await leon.wait_for(locked=True)
    assert await friend.command(leon, "ventilation.start", {"duration_min": 10}, expect="succeeded") == "succeeded"
    await leon.wait_for(aux_heating__state="ventilation")
    assert await friend.command(leon, "aux_heating.start", HEATER, expect="succeeded") == "succeeded"
    await leon.wait_for(aux_heating__state="heating")
    assert (await friend.app.licence_status(leon.vin))["valid"] is True

    # Speed alert, area alert, service scheduling, the stores, nominating users: no.
    refused = [
        await refusal(friend.app.speed_alert_set(leon.vin, max_speed_kmh=120)),
        await refusal(friend.app.area_alert_set(leon.vin, lat=41.39, lon=2.17, radius_m=500)),
        await refusal(friend.app.service_scheduling_book(leon.vin, date="2026-02-02")),
        await refusal(friend.app.licence_renew(leon.vin, 1)),
        await refusal(friend.app.licence_cancel(leon.vin)),
        await refusal(friend.app.invite_secondary(leon.vin, "another@example.com")),
    ]
    assert [code for code, _ in refused] == [ErrorCode.INSUFFICIENT_RIGHTS] * len(refused)

    # The same requests from the primary user succeed.
    assert (await owner.app.speed_alert_set(leon.vin, max_speed_kmh=120))["speed_alert"]["max_speed_kmh"] == 120
    assert (await owner.app.area_alert_set(leon.vin, lat=41.39, lon=2.17, radius_m=500))["area_alert"]["enabled"]
    assert (await owner.app.service_scheduling_book(leon.vin, date="2026-02-02"))["booking"]["date"] == "2026-02-02"
    assert len((await owner.app.licence_renew(leon.vin, 1))["purchases"]) == 1


async def test_r11_a_service_needs_a_connection_the_vin_in_the_garage_a_model_that_has_it_and_a_licence(
    fleet: SimFleet,
    cloud: SimCloud,
    clock: SimClock,
    app_user_factory: AppUserFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leon, radio = fleet.car("leon"), fleet.car("ateca")
    owner = await app_user_factory("owner@example.com")
    stranger = await app_user_factory("stranger@example.com")
    await owner.enrol(leon)
    await owner.enrol(radio)

    # The VIN linked to the account: somebody else's car answers exactly as a VIN that does not exist.
    nobodys = generate_vin(random.Random(11))
    for ask in (
        lambda vin: stranger.app.lock(vin, stranger.spin),
        lambda vin: stranger.app.lock(vin, "9371"),  # a wrong S-PIN: no try counted, nothing learnt
        lambda vin: stranger.app.vehicle_status(vin),
        lambda vin: stranger.app.licence_status(vin),
    ):
        theirs, unknown = await refusal(ask(leon.vin)), await refusal(ask(nobodys))
        assert theirs == unknown
        assert theirs[0] == ErrorCode.VEHICLE_NOT_FOUND
    tries = await cloud.registry.get_spin_state(await stranger.user_id())
    assert (tries.failures, tries.locked_until) == (0, None)  # the car was never reached, so nothing counted

    # A model that supports it: a radio Ateca has neither heater nor ventilation; the cloud sends it nothing (the
    # next command it does send is the first the car gets after the enrolment's confirmation).
    received = record_commands(radio, monkeypatch)
    assert (await refusal(owner.app.heater_start(radio.vin, owner.spin)))[0] == ErrorCode.UNSUPPORTED_BY_VEHICLE
    assert (await refusal(owner.app.ventilation_start(radio.vin, owner.spin)))[0] == ErrorCode.UNSUPPORTED_BY_VEHICLE
    assert await owner.command(radio, "honk_and_flash", {"mode": "flash", "duration_s": 5}) == "succeeded"
    assert [op for op in received.ops() if op != "infotainment.notify"] == ["honk_and_flash"]

    # A data connection: a command for a car without one waits at the broker and times out after its TTL (60 s);
    # when the car is back it refuses the stale command, which changes nothing.
    await leon.go_offline()
    command_id = await owner.send(leon, "unlock")
    await cloud.wait_for_command(command_id, "delivered")
    await clock.advance(120)
    assert (await cloud.wait_for_command(command_id, "timed_out")).state is CommandState.TIMED_OUT
    assert await owner.app.wait_command(command_id, timeout=10) is CommandState.TIMED_OUT
    results = cloud.stats.received["results"]
    await leon.go_online()
    await cloud_handled(cloud, lambda s: s.received["results"] > results)  # the car's `rejected` reply
    assert leon.session.stats.rejected_by_reason == {"expired": 1}
    assert leon.status().locked is True
    assert (await cloud.command(command_id)) is not None
    assert (await owner.app.command_status(command_id)).state is CommandState.TIMED_OUT  # final: stays so

    # A valid licence: once the free year is over (2026-03-01), the services stop; a renewal brings them back.
    await advance_to(clock, FREE_YEAR_ENDS + HOUR)
    await relogin(owner)
    assert (await refusal(owner.app.unlock(leon.vin, owner.spin)))[0] == ErrorCode.LICENSE_EXPIRED
    assert (await refusal(owner.app.vehicle_status(leon.vin)))[0] == ErrorCode.LICENSE_EXPIRED
    await owner.app.licence_renew(leon.vin, 1)
    assert await owner.command(leon, "unlock", expect="succeeded") == "succeeded"
    await leon.wait_for(locked=False)


@pytest.mark.tcu_fleet(
    {
        **RULES_FLEET,
        "groups": [
            {"name": "leon", "count": 1, "model": "leon", "equipment": "media_system", "registered_at": "2025-03-01"},
            # Registered in June 2026: its services are not activated yet.
            {"name": "formentor", "count": 1, "model": "formentor", "equipment": "media_system",
             "registered_at": "2026-06-01"},
        ],
    }
)
async def test_r12_without_activated_services_only_the_emergency_call_works(
    fleet: SimFleet, clock: SimClock, app_user_factory: AppUserFactory
) -> None:
    leon, formentor = fleet.car("leon"), fleet.car("formentor")
    owner = await app_user_factory("owner@example.com")
    await owner.enrol(leon)
    await owner.enrol(formentor)

    async def only_the_ecall(car_vin: str, code: str) -> None:
        car = fleet.car(car_vin)
        refused = [
            await refusal(owner.app.lock(car_vin, owner.spin)),
            await refusal(owner.app.honk_and_flash(car_vin)),
            await refusal(owner.app.refresh_status(car_vin)),
            await refusal(owner.app.vehicle_status(car_vin)),
            await refusal(owner.app.speed_alert_set(car_vin, max_speed_kmh=120)),
        ]
        assert [c for c, _ in refused] == [code] * len(refused)
        car.control("ecall")  # the emergency call, from the car
        call = await next_push(owner.app, "notification", lambda d: d.get("event") == "ecall" and d["vin"] == car_vin)
        assert call["position"] is not None  # the law wants the position in an emergency call

    # Services not activated yet (the licence starts on the registration day, in June).
    await only_the_ecall(formentor.vin, ErrorCode.LICENSE_MISSING)
    # Services no longer activated: the Leon's free year ended on 2026-03-01.
    await advance_to(clock, FREE_YEAR_ENDS + HOUR)
    await relogin(owner)
    await only_the_ecall(leon.vin, ErrorCode.LICENSE_EXPIRED)


async def test_r13_with_maximum_privacy_on_the_services_are_unavailable(
    fleet: SimFleet, app_user_factory: AppUserFactory
) -> None:
    leon = fleet.car("leon")
    owner = await app_user_factory("owner@example.com")
    await owner.enrol(leon)
    assert await owner.command(leon, "unlock", expect="succeeded") == "succeeded"

    leon.control("set_privacy", mode="max")  # in the car's infotainment
    await next_push(owner.app, "vehicle_changed", lambda d: d.get("privacy_mode") == "max")
    refused = [
        await refusal(owner.app.lock(leon.vin, owner.spin)),
        await refusal(owner.app.honk_and_flash(leon.vin)),
        await refusal(owner.app.vehicle_status(leon.vin)),
        await refusal(owner.app.speed_alert_set(leon.vin, max_speed_kmh=120)),
    ]
    assert [code for code, _ in refused] == [ErrorCode.PRIVACY_MODE] * len(refused)
    assert leon.status().locked is False  # nothing reached the car
    leon.control("ecall")  # what the law requires still goes out
    await next_push(owner.app, "notification", lambda d: d.get("event") == "ecall")

    leon.control("set_privacy", mode="off")
    await next_push(owner.app, "vehicle_changed", lambda d: d.get("privacy_mode") == "off")
    assert await owner.command(leon, "lock", expect="succeeded") == "succeeded"
    await leon.wait_for(locked=True)
