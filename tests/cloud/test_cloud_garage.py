"""Garage and enrolment: adding by VIN (R5), pairing codes (R6), in-car login (R7), primary user (R8),
garage limit (R9), secondary users (R10), factory reset (R16)."""

from __future__ import annotations

import pytest
from cloud_testkit import (
    ATECA_RADIO,
    BORN,
    DAY,
    FORMENTOR,
    LEON,
    PASSWORD,
    START,
    UNKNOWN_VIN,
    enrol,
    new_user,
    owner,
    services,
)

from broker.cloud import (
    PRIMARY_CONFIRMATION,
    CloudConfig,
    CloudServices,
    GarageFull,
    InsufficientRights,
    InvalidRequest,
    PairingCodeExpired,
    PairingCodeInvalid,
    Right,
    TermsNotAccepted,
    Unauthenticated,
    UnsupportedByVehicle,
    UserNotVerified,
    VehicleNotFound,
    VehicleOffline,
    rights_of,
)
from broker.registry import EnrolmentState, Role, SqlRegistry, VehicleRecord
from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import generate_vin
from tcu_sim.vehicle import EnrolmentMethod


async def _garage(cloud: CloudServices, token: str) -> dict[str, tuple[Role, EnrolmentState]]:
    return {e.vin: (e.role, e.state) for e in await cloud.garage.list_vehicles(token)}


async def test_r5_adding_needs_the_terms_accepted_and_a_known_vin(cloud: CloudServices) -> None:
    token = await new_user(cloud, "ana@example.com")
    with pytest.raises(TermsNotAccepted):
        await cloud.garage.add_vehicle(token, LEON, accept_terms=False)
    for vin in (UNKNOWN_VIN, "not-a-vin", LEON.lower()):
        with pytest.raises(VehicleNotFound):
            await cloud.garage.add_vehicle(token, vin, accept_terms=True)
    assert await _garage(cloud, token) == {}


async def test_r1_an_unverified_user_cannot_add_a_car(cloud: CloudServices) -> None:
    token = await new_user(cloud, "ben@example.com", verify=False)
    with pytest.raises(UserNotVerified):
        await cloud.garage.add_vehicle(token, LEON, accept_terms=True)


@pytest.mark.parametrize(
    ("vin", "method"),
    [(LEON, EnrolmentMethod.TKOV), (BORN, EnrolmentMethod.TKOV), (FORMENTOR, EnrolmentMethod.TKOV),
     (ATECA_RADIO, EnrolmentMethod.PAIRING_CODE)],
)
async def test_r5_the_method_follows_model_and_equipment(
    cloud: CloudServices, vin: str, method: EnrolmentMethod
) -> None:
    token = await new_user(cloud, "cy@example.com")
    added = await cloud.garage.add_vehicle(token, vin, accept_terms=True)
    assert added.method is method
    result = added.as_result()
    if method is EnrolmentMethod.PAIRING_CODE:
        assert added.pairing_code is not None
        assert len(added.pairing_code) == 8
        assert added.pairing_code.isdigit()
        assert added.expires_at == pytest.approx(START + 365 * DAY)
        assert result["pairing_code"] == added.pairing_code
        assert added.pairing_code not in repr(added)
    else:
        assert added.pairing_code is None
        assert "pairing_code" not in result
    assert await _garage(cloud, token) == {vin: (Role.PRIMARY, EnrolmentState.PENDING)}


async def test_r5_tkov_in_the_car_completes_the_enrolment(cloud: CloudServices) -> None:
    token = await new_user(cloud, "dan@example.com")
    await cloud.garage.add_vehicle(token, LEON, accept_terms=True)
    outcome = await cloud.garage.complete_by_tkov(LEON)
    assert outcome.email == "dan@example.com"
    assert outcome.method == "tkov"
    assert outcome.confirmation == PRIMARY_CONFIRMATION
    assert outcome.previous_primary is None
    assert await _garage(cloud, token) == {LEON: (Role.PRIMARY, EnrolmentState.ACTIVE)}
    with pytest.raises(InvalidRequest):  # nobody else asked to add it
        await cloud.garage.complete_by_tkov(BORN)


async def test_r6_a_pairing_code_completes_the_enrolment_once(cloud: CloudServices) -> None:
    token = await new_user(cloud, "eva@example.com")
    added = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    assert added.pairing_code is not None
    wrong = f"{(int(added.pairing_code) + 1) % 10**8:08d}"
    for bad in (wrong, "1234", "abcdefgh"):
        with pytest.raises(PairingCodeInvalid):
            await cloud.garage.complete_by_pairing_code(ATECA_RADIO, bad)
    outcome = await cloud.garage.complete_by_pairing_code(ATECA_RADIO, added.pairing_code)
    assert outcome.method == "pairing_code"
    assert await _garage(cloud, token) == {ATECA_RADIO: (Role.PRIMARY, EnrolmentState.ACTIVE)}
    with pytest.raises(PairingCodeInvalid):
        await cloud.garage.complete_by_pairing_code(ATECA_RADIO, added.pairing_code)


async def test_r6_a_pairing_code_is_only_for_its_own_car(cloud: CloudServices, registry: SqlRegistry) -> None:
    other_radio = generate_vin(__import__("random").Random(99))
    await registry.upsert_vehicles([VehicleRecord(other_radio, "ateca", "radio", START, None)])
    token = await new_user(cloud, "fay@example.com")
    added = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    assert added.pairing_code is not None
    with pytest.raises(PairingCodeInvalid):
        await cloud.garage.complete_by_pairing_code(other_radio, added.pairing_code)


async def test_r6_a_pairing_code_expires_after_a_year(cloud: CloudServices, clock: VirtualClock) -> None:
    token = await new_user(cloud, "gus@example.com")
    added = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    assert added.pairing_code is not None
    assert added.expires_at is not None
    await clock.advance(added.expires_at - clock.now())
    with pytest.raises(PairingCodeExpired):
        await cloud.garage.complete_by_pairing_code(ATECA_RADIO, added.pairing_code)
    # Removing and re-adding (after logging in again: a year is longer than a session) gives a working code.
    token = (await cloud.accounts.login("gus@example.com", PASSWORD)).token
    await cloud.garage.remove_vehicle(token, ATECA_RADIO)
    again = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    assert again.pairing_code is not None
    await cloud.garage.complete_by_pairing_code(ATECA_RADIO, again.pairing_code)


async def test_r6_a_pairing_code_a_day_before_expiry_still_works(cloud: CloudServices, clock: VirtualClock) -> None:
    token = await new_user(cloud, "hana@example.com")
    added = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    assert added.pairing_code is not None
    await clock.advance(364 * DAY)
    await cloud.garage.complete_by_pairing_code(ATECA_RADIO, added.pairing_code)


async def test_r6_removing_and_re_adding_voids_the_old_code(cloud: CloudServices) -> None:
    token = await new_user(cloud, "ian@example.com")
    old = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    await cloud.garage.remove_vehicle(token, ATECA_RADIO)
    new = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    assert old.pairing_code is not None
    assert new.pairing_code is not None
    assert old.pairing_code != new.pairing_code
    with pytest.raises(PairingCodeInvalid):
        await cloud.garage.complete_by_pairing_code(ATECA_RADIO, old.pairing_code)
    await cloud.garage.complete_by_pairing_code(ATECA_RADIO, new.pairing_code)


async def test_r6_re_adding_without_removing_also_voids_the_old_code(cloud: CloudServices) -> None:
    token = await new_user(cloud, "jan@example.com")
    old = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    new = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    assert old.pairing_code is not None
    assert new.pairing_code is not None
    with pytest.raises(PairingCodeInvalid):
        await cloud.garage.complete_by_pairing_code(ATECA_RADIO, old.pairing_code)
    await cloud.garage.complete_by_pairing_code(ATECA_RADIO, new.pairing_code)


async def test_r6_the_car_must_be_online_to_accept_a_code(cloud: CloudServices) -> None:
    token = await new_user(cloud, "kai@example.com")
    added = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    assert added.pairing_code is not None
    await cloud.vehicles.set_online(ATECA_RADIO, False)
    with pytest.raises(VehicleOffline):
        await cloud.garage.complete_by_pairing_code(ATECA_RADIO, added.pairing_code)
    await cloud.vehicles.set_online(ATECA_RADIO, True)
    await cloud.garage.complete_by_pairing_code(ATECA_RADIO, added.pairing_code)


async def test_r7_logging_in_in_the_infotainment_enrols_the_car(cloud: CloudServices) -> None:
    token = await new_user(cloud, "lou@example.com")
    with pytest.raises(Unauthenticated):
        await cloud.garage.complete_by_infotainment_login(LEON, "lou@example.com", "wrong password")
    with pytest.raises(Unauthenticated):
        await cloud.garage.complete_by_infotainment_login(LEON, "nobody@example.com", PASSWORD)
    outcome = await cloud.garage.complete_by_infotainment_login(LEON, "LOU@example.com", PASSWORD)
    assert outcome.method == "infotainment_login"
    assert await _garage(cloud, token) == {LEON: (Role.PRIMARY, EnrolmentState.ACTIVE)}


async def test_r7_in_car_login_needs_a_verified_account_and_an_infotainment_that_has_it(cloud: CloudServices) -> None:
    await new_user(cloud, "mo@example.com", verify=False)
    with pytest.raises(UserNotVerified):
        await cloud.garage.complete_by_infotainment_login(LEON, "mo@example.com", PASSWORD)
    await new_user(cloud, "nia@example.com")
    with pytest.raises(UnsupportedByVehicle):  # an Ateca with radio has no CUPRA ID login
        await cloud.garage.complete_by_infotainment_login(ATECA_RADIO, "nia@example.com", PASSWORD)


async def test_r8_a_new_verified_owner_replaces_the_old_one_who_is_told(cloud: CloudServices) -> None:
    old = await owner(cloud, "old@example.com", LEON)
    friend = await new_user(cloud, "friend@example.com")
    await cloud.garage.invite_secondary(old, LEON, "friend@example.com")
    new = await new_user(cloud, "new@example.com")
    await cloud.garage.add_vehicle(new, LEON, accept_terms=True)
    outcome = await cloud.garage.complete_by_tkov(LEON, "new@example.com")
    old_id = (await cloud.accounts.authenticate(old)).user_id
    assert outcome.previous_primary == old_id
    assert await _garage(cloud, new) == {LEON: (Role.PRIMARY, EnrolmentState.ACTIVE)}
    assert await _garage(cloud, old) == {}
    assert await _garage(cloud, friend) == {}  # the old owner's nominees go with them
    primaries = [e for e in await cloud.registry.list_vehicle_enrolments(LEON) if e.role is Role.PRIMARY]
    assert len(primaries) == 1
    told = [m.subject for m in await cloud.accounts.mailbox(old)]
    assert "A CUPRA left your garage" in told
    with pytest.raises(VehicleNotFound):
        await cloud.commands.request(old, "r1", LEON, "honk_and_flash", {"mode": "flash", "duration_s": 5})


async def test_r8_the_store_refuses_two_active_primaries(cloud: CloudServices) -> None:
    from broker.registry import EnrolmentRecord, RegistryConflict

    await owner(cloud, "p1@example.com", LEON)
    second = await new_user(cloud, "p2@example.com")
    me = await cloud.accounts.authenticate(second)
    with pytest.raises(RegistryConflict):
        await cloud.registry.put_enrolment(
            EnrolmentRecord(LEON, me.user_id, Role.PRIMARY, EnrolmentState.ACTIVE, "tkov", START, START)
        )


async def test_r9_a_garage_holds_up_to_the_limit(registry: SqlRegistry, clock: VirtualClock) -> None:
    import random

    cloud = services(registry, clock, config=CloudConfig(garage_limit=3))
    rng = random.Random(7)
    vins = [generate_vin(rng) for _ in range(4)]
    await cloud.vehicles.import_vehicles([VehicleRecord(v, "leon", "navigation", START, None) for v in vins])
    token = await new_user(cloud, "ola@example.com")
    for vin in vins[:2]:
        await enrol(cloud, token, vin)
    await cloud.garage.add_vehicle(token, vins[2], accept_terms=True)  # pending cars count too
    with pytest.raises(GarageFull):
        await cloud.garage.add_vehicle(token, vins[3], accept_terms=True)
    await cloud.garage.add_vehicle(token, vins[2], accept_terms=True)  # re-adding a pending one is fine
    await cloud.garage.remove_vehicle(token, vins[0])
    await cloud.garage.add_vehicle(token, vins[3], accept_terms=True)


def test_r9_the_default_limit_is_50() -> None:
    assert CloudConfig().garage_limit == 50


def test_r10_secondary_rights_are_exactly_the_faq_list() -> None:
    assert rights_of(Role.SECONDARY) == {
        Right.DRIVING_DATA, Right.VEHICLE_STATUS, Right.HEALTH_REPORT, Right.PARKING_POSITION, Right.REMOTE_LOCK,
        Right.REMOTE_CLIMATE, Right.HONK_AND_FLASH, Right.LICENCE_STATUS, Right.ROADSIDE,
    }
    assert rights_of(Role.PRIMARY) == set(Right)
    for primary_only in (Right.SPEED_ALERT, Right.AREA_ALERT, Right.SERVICE_SCHEDULING, Right.STORE,
                         Right.MANAGE_USERS):
        assert primary_only not in rights_of(Role.SECONDARY)


async def test_r10_the_primary_invites_and_removes_secondary_users(cloud: CloudServices) -> None:
    primary = await owner(cloud, "pat@example.com", LEON)
    sec = await new_user(cloud, "quin@example.com")
    await cloud.garage.invite_secondary(primary, LEON, "quin@example.com")
    assert await _garage(cloud, sec) == {LEON: (Role.SECONDARY, EnrolmentState.ACTIVE)}
    users = await cloud.garage.list_users(primary, LEON)
    assert {(u["email"], u["role"]) for u in users} == {
        ("pat@example.com", "primary"), ("quin@example.com", "secondary")
    }
    # A secondary user may not manage users, nor use the store.
    with pytest.raises(InsufficientRights):
        await cloud.garage.invite_secondary(sec, LEON, "pat@example.com")
    with pytest.raises(InsufficientRights):
        await cloud.licences.renew(sec, LEON, 1)
    with pytest.raises(InsufficientRights):
        await cloud.garage.list_users(sec, LEON)
    await cloud.garage.remove_secondary(primary, LEON, "quin@example.com")
    assert await _garage(cloud, sec) == {}
    with pytest.raises(InvalidRequest):
        await cloud.garage.remove_secondary(primary, LEON, "quin@example.com")


async def test_r10_inviting_an_address_without_an_account_gives_the_same_reply(cloud: CloudServices) -> None:
    primary = await owner(cloud, "rae@example.com", LEON)
    await cloud.garage.invite_secondary(primary, LEON, "stranger@example.com")
    assert [m.subject for m in await cloud.accounts.mailbox_for("stranger@example.com")] == [
        "You were invited to use a CUPRA"
    ]
    with pytest.raises(InvalidRequest):
        await cloud.garage.invite_secondary(primary, LEON, "rae@example.com")


async def test_r10_removing_the_car_as_primary_takes_the_secondaries_with_it(cloud: CloudServices) -> None:
    primary = await owner(cloud, "sol@example.com", LEON)
    sec = await new_user(cloud, "tam@example.com")
    await cloud.garage.invite_secondary(primary, LEON, "tam@example.com")
    await cloud.garage.remove_vehicle(sec, LEON)  # a secondary leaves alone
    assert await _garage(cloud, primary) == {LEON: (Role.PRIMARY, EnrolmentState.ACTIVE)}
    await cloud.garage.invite_secondary(primary, LEON, "tam@example.com")
    await cloud.garage.remove_vehicle(primary, LEON)
    assert await _garage(cloud, primary) == {}
    assert await _garage(cloud, sec) == {}
    with pytest.raises(VehicleNotFound):
        await cloud.garage.remove_vehicle(primary, LEON)


async def test_r16_a_factory_reset_removes_the_car_from_every_account(cloud: CloudServices) -> None:
    seller = await owner(cloud, "uma@example.com", LEON)
    await new_user(cloud, "vic@example.com")
    await cloud.garage.invite_secondary(seller, LEON, "vic@example.com")
    buyer = await new_user(cloud, "wes@example.com")
    pending = await cloud.garage.add_vehicle(buyer, LEON, accept_terms=True)
    assert pending.method is EnrolmentMethod.TKOV
    removed = await cloud.garage.factory_reset(LEON)
    assert {e.role for e in removed} == {Role.PRIMARY, Role.SECONDARY}
    assert await cloud.registry.list_vehicle_enrolments(LEON) == []
    assert "A CUPRA left your garage" in [m.subject for m in await cloud.accounts.mailbox(seller)]
    # The buyer enrols afresh.
    await enrol(cloud, buyer, LEON)
    assert await _garage(cloud, buyer) == {LEON: (Role.PRIMARY, EnrolmentState.ACTIVE)}


async def test_adding_a_car_already_in_the_garage_is_refused(cloud: CloudServices) -> None:
    token = await owner(cloud, "xia@example.com", LEON)
    with pytest.raises(InvalidRequest):
        await cloud.garage.add_vehicle(token, LEON, accept_terms=True)
