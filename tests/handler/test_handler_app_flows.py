"""App → cloud over a real Mosquitto: accounts through the simulated mailbox, the garage, typed errors."""

from __future__ import annotations

import pytest
from handler_kit import LEON, PASSWORD, SPIN, Stack, enrol_tkov, sign_up, verification_code

from tcu_sim.app import (
    InvalidRequest,
    SpinIncorrect,
    SpinPolicy,
    Unauthenticated,
    UserNotVerified,
    VehicleNotFound,
)
from tcu_sim.protocol import ErrorCode


async def test_register_verify_login_through_the_mailbox(stack: Stack) -> None:
    async with stack.app("app-1") as app:
        await app.register("alice@example.com", PASSWORD, SPIN)
        login = await app.login("alice@example.com", PASSWORD)
        assert not login.verified
        assert app.token == login.token
        mails = await app.mailbox()
        assert [m.subject for m in mails] == ["Verify your CUPRA ID"]
        await app.verify_email(verification_code(mails))
        again = await app.login("alice@example.com", PASSWORD)
        assert again.verified
        assert again.user_id == login.user_id
        assert stack.stats.requests["login"] == 2


async def test_unverified_user_cannot_add_a_car(stack: Stack) -> None:
    async with stack.app("app-1") as app:
        await app.register("bob@example.com", PASSWORD, SPIN)
        await app.login("bob@example.com", PASSWORD)
        with pytest.raises(UserNotVerified) as err:
            await app.add_vehicle(LEON)
        assert err.value.code is ErrorCode.USER_NOT_VERIFIED


async def test_errors_are_typed_and_carry_their_details(stack: Stack) -> None:
    async with stack.app("app-1") as app:
        with pytest.raises(SpinPolicy):
            await app.register("carol@example.com", PASSWORD, "1234")
        with pytest.raises(Unauthenticated):
            await app.list_vehicles()  # no session
        with pytest.raises(Unauthenticated):
            await app.login("carol@example.com", "wrong password")
        await sign_up(app, "carol@example.com")
        with pytest.raises(InvalidRequest):
            await app.request("no_such_op")
        with pytest.raises(VehicleNotFound):
            await app.lock(LEON, SPIN)  # not in the garage


async def test_wrong_spin_reports_remaining_tries(stack: Stack) -> None:
    async with stack.app("app-1") as app, stack.car(LEON) as car:
        await sign_up(app, "dave@example.com")
        await enrol_tkov(stack, app, car, "dave@example.com")
        with pytest.raises(SpinIncorrect) as err:
            await app.lock(LEON, "9371")
        assert err.value.remaining_tries == 2


async def test_garage_lists_the_enrolled_car(stack: Stack) -> None:
    async with stack.app("app-1") as app, stack.car(LEON) as car:
        await sign_up(app, "erin@example.com")
        await enrol_tkov(stack, app, car, "erin@example.com")
        vehicles = await app.list_vehicles()
        assert [(v["vin"], v["role"], v["state"]) for v in vehicles] == [(LEON, "primary", "active")]
        # R8: the cloud shows the confirmation in the car's infotainment, signed.
        _, command = await car.next_command()
        assert command.body["op"] == "infotainment.notify"
        assert "primary user" in command.body["params"]["message"]
