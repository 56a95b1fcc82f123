"""R1, R2, R4, R17 over MQTT: CUPRA ID verification, the S-PIN's policy and storage, changing it, and sessions after
a lost phone — apps (`AppClient`) talking to the real cloud on the real Mosquitto, real TCUs as the cars, one
virtual clock."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from rules_kit import claims_of, garage, record_commands, refusal, relogin, spy, values_in, wait_notification

from broker.cloud import PRIMARY_CONFIRMATION, ServerSecret
from tcu_sim.app import AppOp, SessionExpired, SpinIncorrect, Unauthenticated
from tcu_sim.protocol import ErrorCode
from tcu_sim.testing import AppUserFactory, SimClock, SimCloud, SimFleet

_LINK = re.compile(r"verify\?code=([A-Za-z0-9_-]+)")


async def test_r01_only_a_verified_cupra_id_enrols_a_car_and_a_taken_address_is_never_revealed(
    fleet: SimFleet, app_user_factory: AppUserFactory
) -> None:
    car = fleet.car("leon")
    newcomer = await app_user_factory("newcomer@example.com", verified=False)  # registered, logged in, no link

    # Not verified: neither the app nor the car's infotainment can enrol a car for this CUPRA ID.
    code, _ = await refusal(newcomer.app.add_vehicle(car.vin))
    assert code == ErrorCode.USER_NOT_VERIFIED
    car.control("infotainment_login", email=newcomer.email, password=newcomer.password)
    await wait_notification(car, "verify your e-mail address")
    assert await garage(newcomer) == {}

    # The link of the verification mail (the simulated mailbox) verifies the address; then enrolment works.
    mails = await newcomer.app.mailbox()
    links = [m for mail in mails if (m := _LINK.search(mail.body))]
    assert len(links) == 1, [mail.subject for mail in mails]
    await newcomer.app.verify_email(links[0].group(1))
    await newcomer.enrol(car)  # add in the app, two-key verification in the car
    assert await garage(newcomer) == {car.vin: ("primary", "active")}

    # Registering the taken address again gets exactly the reply a new address gets, and changes nothing.
    async with await newcomer.new_app() as stranger:
        other_password = "somebody else's password"
        taken = await stranger.request(
            AppOp.REGISTER, {"email": newcomer.email, "password": other_password, "spin": "2580"}, authenticated=False
        )
        fresh = await stranger.request(
            AppOp.REGISTER, {"email": "fresh@example.com", "password": other_password, "spin": "2580"},
            authenticated=False,
        )
        assert taken == fresh
        with pytest.raises(Unauthenticated):
            await stranger.login(newcomer.email, other_password)
    # The owner of the address is told by mail, and their account is untouched.
    subjects = [mail.subject for mail in await newcomer.app.mailbox()]
    assert subjects.count("Someone tried to create a CUPRA ID with your address") == 1
    assert await garage(newcomer) == {car.vin: ("primary", "active")}


async def test_r02_the_spin_is_four_non_trivial_digits_kept_as_a_keyed_hash_and_never_sent_to_a_car(
    fleet: SimFleet, cloud: SimCloud, app_user_factory: AppUserFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    car = fleet.car("leon")
    owner = await app_user_factory("owner@example.com", spin="8264")

    # Trivial or malformed S-PINs are refused at registration.
    async with await owner.new_app() as app:
        for n, spin in enumerate(["0000", "7777", "1234", "4321", "6789", "9012", "1212", "123", "12345", "12a4"]):
            code, _ = await refusal(app.register(f"trivial{n}@example.com", "correct horse battery", spin))
            assert code == ErrorCode.SPIN_POLICY, spin

    # Stored only as an HMAC under the server secret, bound to the user: equal S-PINs hash differently, and
    # neither the S-PIN nor its plain hash is in the registry.
    twin = await app_user_factory("twin@example.com", spin="8264")
    stored = await cloud.registry.get_user_by_email(owner.email)
    twin_stored = await cloud.registry.get_user_by_email(twin.email)
    assert stored is not None
    assert twin_stored is not None
    secret = cloud.services.ctx.secret
    assert stored.spin_hash == secret.spin_hash(stored.id, "8264")
    assert twin_stored.spin_hash != stored.spin_hash
    assert stored.spin_hash != ServerSecret(b"another server's secret key 32b").spin_hash(stored.id, "8264")
    assert stored.spin_hash not in {hashlib.sha256(b"8264").hexdigest(), "8264"}

    # Checked in constant time (hmac.compare_digest) against the stored hash.
    compared = spy(monkeypatch, hmac, "compare_digest")
    await owner.enrol(car)
    await wait_notification(car, PRIMARY_CONFIRMATION)  # the cloud's own command, before the recording starts
    commands = record_commands(car, monkeypatch)
    assert await owner.command(car, "unlock", expect="succeeded") == "succeeded"
    assert await owner.command(car, "lock", expect="succeeded") == "succeeded"
    assert (stored.spin_hash, secret.spin_hash(stored.id, "8264")) in compared

    # What reached the car carries no S-PIN: not as a field, not as a value.
    assert commands.ops() == ["unlock", "lock"]
    for payload in commands.payloads:
        everything = list(values_in(claims_of(payload)))
        assert "spin" not in everything, claims_of(payload)
        assert "8264" not in everything, claims_of(payload)


async def test_r04_the_spin_changes_from_the_app_with_the_old_one_once_a_car_is_enrolled(
    fleet: SimFleet, app_user_factory: AppUserFactory
) -> None:
    car = fleet.car("leon")
    owner = await app_user_factory("owner@example.com", spin="4711")

    # No car in the garage yet: no S-PIN change.
    code, _ = await refusal(owner.app.change_spin("4711", "5820"))
    assert code == ErrorCode.INVALID_REQUEST
    await owner.enrol(car)

    # The old S-PIN is required (a wrong one counts towards the lockout), the new one must follow the policy.
    with pytest.raises(SpinIncorrect) as wrong:
        await owner.app.change_spin("9371", "5820")
    assert wrong.value.remaining_tries == 2
    code, _ = await refusal(owner.app.change_spin("4711", "1111"))
    assert code == ErrorCode.SPIN_POLICY
    await owner.app.change_spin("4711", "5820")
    assert "Your S-PIN was changed" in [mail.subject for mail in await owner.app.mailbox()]

    # From now on the car obeys the new S-PIN only.
    with pytest.raises(SpinIncorrect):
        await owner.command(car, "unlock", spin="4711")
    assert await owner.command(car, "unlock", spin="5820", expect="succeeded") == "succeeded"
    await car.wait_for(locked=False)


async def test_r17_a_password_change_ends_the_lost_phones_session_and_idle_sessions_ask_again_after_5_10_15_min(
    fleet: SimFleet, clock: SimClock, app_user_factory: AppUserFactory
) -> None:
    car = fleet.car("leon")
    owner = await app_user_factory("owner@example.com")
    await owner.enrol(car)
    async with await owner.new_app() as lost_phone:
        await lost_phone.login(owner.email, owner.password)
        assert await lost_phone.list_vehicles() != []

        # A password change (from the new phone) ends every other session: the lost phone can do nothing more.
        assert await owner.app.change_password(owner.password, "a brand new password") == 1
        with pytest.raises(Unauthenticated):
            await lost_phone.list_vehicles()
        with pytest.raises(Unauthenticated):
            await lost_phone.command(car.vin, "unlock", spin=owner.spin)
        with pytest.raises(Unauthenticated):
            await lost_phone.login(owner.email, owner.password)  # the old password is gone
    assert await owner.command(car, "unlock", expect="succeeded") == "succeeded"  # this session lives on
    owner.password = "a brand new password"

    # Re-authentication after 5, 10 or 15 idle minutes, on the virtual clock.
    for minutes in (5, 10, 15):
        await owner.app.set_reauth_timeout(minutes)
        await clock.advance(minutes * 60 - 30)
        assert await garage(owner) == {car.vin: ("primary", "active")}  # activity: the idle time starts again
        await clock.advance(minutes * 60 - 1)
        assert await garage(owner) == {car.vin: ("primary", "active")}
        await clock.advance(minutes * 60 + 1)
        with pytest.raises(SessionExpired):
            await owner.app.list_vehicles()
        with pytest.raises(SessionExpired):
            await owner.send(car, "lock")
        await relogin(owner)
    assert await owner.command(car, "lock", expect="succeeded") == "succeeded"
    await car.wait_for(locked=True)
