"""Rules of SPEC §3 as an app and a car see them through the handler: the in-car enrolment steps arrive as signed
events (R6-R8, R16), the S-PIN lockout and the re-authentication run on the virtual clock (R3, R17), privacy and
roles gate the services (R10, R13)."""

from __future__ import annotations

import pytest
from handler_kit import ATECA_RADIO, LEON, PASSWORD, SPIN, WAIT, FakeCar, Stack, enrol_tkov, sign_up, status

from tcu_sim.app import (
    AppClient,
    InsufficientRights,
    PrivacyModeOn,
    SessionExpired,
    SpinIncorrect,
    SpinLocked,
    VehicleNotFound,
)


async def _event(stack: Stack, car: FakeCar, body: dict[str, object]) -> None:
    before = stack.stats.applied["events"]
    await car.send_event({"at": stack.clock.now(), **body})
    await stack.wait(lambda s: s.applied["events"] > before)


async def _owner(stack: Stack, app: AppClient, car: FakeCar, email: str) -> None:
    await sign_up(app, email)
    await enrol_tkov(stack, app, car, email)
    await car.next_command(0)


async def test_r6_pairing_code_entered_in_the_car(stack: Stack) -> None:
    async with stack.app() as app, stack.car(ATECA_RADIO) as car:
        await sign_up(app, "radio@example.com")
        added = await app.add_vehicle(ATECA_RADIO)
        assert added.method == "pairing_code"
        assert added.pairing_code is not None
        assert len(added.pairing_code) == 8
        await _event(stack, car, {"type": "pairing_code_entered", "pairing_code": "12345678"})
        _, refused = await car.next_command(0)  # the infotainment says why
        assert "not valid" in refused.body["params"]["message"]
        assert [v["state"] for v in await app.list_vehicles()] == ["pending"]
        await _event(stack, car, {"type": "pairing_code_entered", "pairing_code": added.pairing_code})
        _, confirmed = await car.next_command(1)
        assert confirmed.body["params"]["message"] == "You are now the primary user of this vehicle."
        assert [v["state"] for v in await app.list_vehicles()] == ["active"]


async def test_r6_an_offline_car_cannot_accept_a_pairing_code(stack: Stack) -> None:
    async with stack.app() as app, stack.car(ATECA_RADIO) as car:
        await sign_up(app, "radio-offline@example.com")
        added = await app.add_vehicle(ATECA_RADIO)
        await car.publish("connection", b"offline")
        await stack.wait(lambda s: s.applied["connection"] == 1)
        await _event(stack, car, {"type": "pairing_code_entered", "pairing_code": added.pairing_code})
        assert [v["state"] for v in await app.list_vehicles()] == ["pending"]


async def test_r7_r8_login_in_the_infotainment_makes_a_new_primary_and_tells_the_old_one(stack: Stack) -> None:
    async with stack.app("app-1") as first, stack.app("app-2") as second, stack.car(LEON) as car:
        await _owner(stack, first, car, "first@example.com")
        await sign_up(second, "second@example.com")
        await _event(stack, car, {"type": "infotainment_login", "email": "second@example.com", "password": PASSWORD})
        _, confirmed = await car.next_command(1)
        assert "primary user" in confirmed.body["params"]["message"]
        assert [(v["vin"], v["role"]) for v in await second.list_vehicles()] == [(LEON, "primary")]
        assert await first.list_vehicles() == []
        # The old owner's app hears it, and so does their mailbox.
        removed = await first.next_event(timeout=WAIT)
        while removed.data.get("event") != "removed":
            removed = await first.next_event(timeout=WAIT)
        assert removed.data == {"vin": LEON, "event": "removed", "reason": "replaced"}
        assert "A CUPRA left your garage" in [m.subject for m in await first.mailbox()]


async def test_r16_factory_reset_removes_the_car_from_the_owner(stack: Stack) -> None:
    async with stack.app() as app, stack.car(LEON) as car:
        await _owner(stack, app, car, "seller@example.com")
        await _event(stack, car, {"type": "factory_reset"})
        assert await app.list_vehicles() == []
        with pytest.raises(VehicleNotFound):
            await app.lock(LEON, SPIN)


async def test_r3_lockout_reports_tries_then_seconds_and_expires_on_the_clock(stack: Stack) -> None:
    async with stack.app() as app, stack.car(LEON) as car:
        await _owner(stack, app, car, "forgetful@example.com")
        tries = []
        for _ in range(2):
            with pytest.raises(SpinIncorrect) as wrong:
                await app.lock(LEON, "9371")
            tries.append(wrong.value.remaining_tries)
        with pytest.raises(SpinLocked) as locked:
            await app.lock(LEON, "9371")
        assert tries == [2, 1]
        assert locked.value.locked_seconds == 300
        with pytest.raises(SpinLocked):
            await app.lock(LEON, SPIN)  # even the right one, while locked
        await stack.clock.advance(301)
        assert await app.lock(LEON, SPIN)


async def test_r13_maximum_privacy_blocks_the_services(stack: Stack) -> None:
    async with stack.app() as app, stack.car(LEON) as car:
        await _owner(stack, app, car, "private@example.com")
        await car.send_status(status(at=stack.clock.now(), privacy="max"))
        await stack.wait(lambda s: s.applied["status"] == 1)
        with pytest.raises(PrivacyModeOn):
            await app.lock(LEON, SPIN)
        with pytest.raises(PrivacyModeOn):
            await app.vehicle_status(LEON)
        await _event(stack, car, {"type": "privacy_changed", "privacy_mode": "off"})
        assert await app.lock(LEON, SPIN)


async def test_r10_a_secondary_user_locks_but_sets_no_alert(stack: Stack) -> None:
    async with stack.app("app-1") as owner, stack.app("app-2") as friend, stack.car(LEON) as car:
        await _owner(stack, owner, car, "owner@example.com")
        await sign_up(friend, "friend@example.com")
        await owner.invite_secondary(LEON, "friend@example.com")
        assert await friend.lock(LEON, SPIN)
        with pytest.raises(InsufficientRights):
            await friend.speed_alert_set(LEON, max_speed_kmh=120)
        result = await owner.speed_alert_set(LEON, max_speed_kmh=120)
        assert result["speed_alert"] == {"enabled": True, "max_speed_kmh": 120}


async def test_r17_an_idle_session_must_enter_the_password_again(stack: Stack) -> None:
    async with stack.app() as app:
        await sign_up(app, "idle@example.com")
        await app.set_reauth_timeout(5)
        await stack.clock.advance(4 * 60)
        await app.list_vehicles()  # activity within 5 minutes keeps it alive
        await stack.clock.advance(6 * 60)
        with pytest.raises(SessionExpired):
            await app.list_vehicles()
        await app.login("idle@example.com", PASSWORD)
        assert await app.list_vehicles() == []
