"""A car's verified events as the cloud applies them: in-car enrolment steps (R5-R8), factory reset (R16),
privacy changes (R13) and the emergency call that always works (R12)."""

from __future__ import annotations

import pytest
from cloud_testkit import ATECA_RADIO, DAY, LEON, PASSWORD, SPIN, START, new_user, owner

from broker.cloud import PRIMARY_CONFIRMATION, CloudServices, PairingCodeInvalid, PrivacyModeOn
from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import ErrorCode, Event, EventType


def _event(kind: str, **fields: object) -> Event:
    return Event.model_validate({"type": kind, "at": START, **fields})


async def test_a_pairing_code_event_enrols_and_confirms_in_the_infotainment(cloud: CloudServices) -> None:
    token = await new_user(cloud, "ana@example.com")
    added = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
    assert added.pairing_code is not None
    wrong = await cloud.events.handle(ATECA_RADIO, _event("pairing_code_entered", pairing_code="00000000"))
    assert isinstance(wrong.error, PairingCodeInvalid)
    assert wrong.notify == PairingCodeInvalid.default_message
    assert wrong.enrolment is None
    done = await cloud.events.handle(ATECA_RADIO, _event("pairing_code_entered", pairing_code=added.pairing_code))
    assert done.error is None
    assert done.notify == PRIMARY_CONFIRMATION
    assert done.enrolment is not None
    me = await cloud.accounts.authenticate(token)
    assert done.users_affected == (me.user_id,)


async def test_tkov_and_infotainment_login_events_enrol(cloud: CloudServices) -> None:
    first = await new_user(cloud, "ben@example.com")
    await cloud.garage.add_vehicle(first, LEON, accept_terms=True)
    tkov = await cloud.events.handle(LEON, _event("tkov_completed"))
    assert tkov.enrolment is not None
    assert tkov.enrolment.email == "ben@example.com"
    await new_user(cloud, "cy@example.com")
    refused = await cloud.events.handle(
        LEON, _event("infotainment_login", email="cy@example.com", password="not it at all")
    )
    assert refused.error is not None
    assert refused.error.code is ErrorCode.UNAUTHENTICATED
    login = await cloud.events.handle(LEON, _event("infotainment_login", email="cy@example.com", password=PASSWORD))
    assert login.enrolment is not None
    assert login.enrolment.previous_primary == (await cloud.accounts.authenticate(first)).user_id
    assert set(login.users_affected) == {login.enrolment.user_id, login.enrolment.previous_primary}


async def test_factory_reset_event_empties_every_garage(cloud: CloudServices) -> None:
    token = await owner(cloud, "dan@example.com", LEON)
    reset = await cloud.events.handle(LEON, _event("factory_reset"))
    assert len(reset.removed) == 1
    assert await cloud.garage.list_vehicles(token) == []


async def test_privacy_event_switches_services_off_and_on(cloud: CloudServices) -> None:
    token = await owner(cloud, "eve@example.com", LEON)
    await cloud.events.handle(LEON, _event("privacy_changed", privacy_mode="max"))
    with pytest.raises(PrivacyModeOn):
        await cloud.commands.request(token, "a", LEON, "unlock", spin=SPIN)
    await cloud.events.handle(LEON, Event.model_validate({"type": "privacy_changed", "at": START + 1,
                                                          "privacy_mode": "off"}))
    assert (await cloud.commands.request(token, "b", LEON, "unlock", spin=SPIN)).created


async def test_an_emergency_call_is_handled_without_licence_or_owner(cloud: CloudServices, clock: VirtualClock) -> None:
    await clock.advance(400 * DAY)  # every free year has ended; nobody owns the car
    outcome = await cloud.events.handle(LEON, _event("ecall"))
    assert outcome.error is None
    assert [e.action for e in await cloud.registry.list_audit(vin=LEON)] == ["vehicle.ecall"]


async def test_other_events_change_nothing(cloud: CloudServices) -> None:
    outcome = await cloud.events.handle(LEON, _event("door_opened", door="front_left"))
    assert (outcome.type, outcome.enrolment, outcome.error, outcome.notify) == (EventType.DOOR_OPENED, None, None, None)
