"""Commands: the order of checks, licences and privacy at command time (R11-R13), VEHICLE_NOT_FOUND that tells
nothing, idempotent creation, rate limit, and the lifecycle with TTL (SPEC §2.3)."""

from __future__ import annotations

import asyncio

import pytest
from cloud_testkit import (
    ATECA_RADIO,
    BORN,
    DAY,
    LEON,
    SPIN,
    START,
    UNKNOWN_VIN,
    new_user,
    owner,
    services,
    status,
)

from broker.cloud import (
    CloudConfig,
    CloudError,
    CloudServices,
    InsufficientRights,
    InvalidRequest,
    LicenseExpired,
    LicenseMissing,
    PrivacyModeOn,
    RateLimited,
    SessionExpired,
    SpinIncorrect,
    SpinLocked,
    SpinRequired,
    Unauthenticated,
    UnsupportedByVehicle,
    VehicleNotFound,
    take_token,
)
from broker.registry import SqlRegistry, VehicleRecord, open_registry
from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import (
    AppResponse,
    CommandOp,
    CommandResult,
    CommandState,
    ErrorCode,
    encode_json,
    generate_vin,
)

HONK: dict[str, object] = {"mode": "flash", "duration_s": 5}
HEAT: dict[str, object] = {"duration_min": 20, "target_temperature_c": 21.5}


async def _refused(awaitable: object) -> CloudError:
    with pytest.raises(CloudError) as info:
        await awaitable  # type: ignore[misc]  # every caller passes a coroutine
    return info.value


def _result(**fields: object) -> CommandResult:
    """A car's result, from JSON-like fields."""
    return CommandResult.model_validate(fields)


def _reply(request_id: str, error: CloudError) -> bytes:
    """The bytes the app would receive."""
    return encode_json(AppResponse(id=request_id, ok=False, error=error.to_app_error()).model_dump(mode="json"))


# -- the order of the checks -----------------------------------------------------------------------------------
async def test_command_is_created_queued_with_its_ttl(cloud: CloudServices) -> None:
    token = await owner(cloud, "ana@example.com", LEON)
    new = await cloud.commands.request(token, "r1", LEON, "unlock", {}, spin=SPIN)
    assert new.created
    c = new.command
    assert (c.vin, c.op, c.state) == (LEON, "unlock", CommandState.QUEUED)
    assert c.expires_at - c.created_at == cloud.ctx.config.command_ttl_s == 60
    assert c.id.startswith("cmd-")
    view = await cloud.commands.status(token, c.id)
    assert [s.state for s in view.history] == [CommandState.QUEUED]
    assert view.as_result()["state"] == "queued"


async def test_order_session_before_everything(cloud: CloudServices) -> None:
    assert isinstance(await _refused(cloud.commands.request(None, "r", UNKNOWN_VIN, "nonsense")), Unauthenticated)


async def test_order_garage_before_rights(cloud: CloudServices) -> None:
    token = await owner(cloud, "ben@example.com", LEON)
    await owner(cloud, "other@example.com", BORN)
    # infotainment.notify is for the cloud only, but on somebody else's car the answer is still "not found".
    error = await _refused(cloud.commands.request(token, "r", BORN, "infotainment.notify", {"message": "hi"}))
    assert isinstance(error, VehicleNotFound)
    error = await _refused(cloud.commands.request(token, "r", LEON, "infotainment.notify", {"message": "hi"}))
    assert isinstance(error, InsufficientRights)


async def test_order_rights_before_licence(cloud: CloudServices, clock: VirtualClock) -> None:
    token = await owner(cloud, "cy@example.com", LEON)
    await clock.advance(300 * DAY)  # the free year has ended
    token = (await cloud.accounts.login("cy@example.com", "correct horse battery")).token
    error = await _refused(cloud.commands.request(token, "r", LEON, "infotainment.notify", {"message": "x"}))
    assert isinstance(error, InsufficientRights)
    assert isinstance(await _refused(cloud.commands.request(token, "r", LEON, "honk_and_flash", HONK)), LicenseExpired)


async def test_order_licence_before_privacy_before_capability_before_spin(
    cloud: CloudServices, clock: VirtualClock
) -> None:
    token = await owner(cloud, "dan@example.com", BORN)
    await cloud.vehicles.record_status(BORN, status("max"))
    # Born: no auxiliary heater; max privacy; no S-PIN given.
    error = await _refused(cloud.commands.request(token, "r", BORN, "aux_heating.start", HEAT))
    assert isinstance(error, PrivacyModeOn)
    await cloud.vehicles.record_status(BORN, status("off", at=START + 1))
    error = await _refused(cloud.commands.request(token, "r", BORN, "aux_heating.start", HEAT))
    assert isinstance(error, UnsupportedByVehicle)
    error = await _refused(cloud.commands.request(token, "r", BORN, "ventilation.start", {"duration_min": 5}))
    assert isinstance(error, InvalidRequest)
    error = await _refused(cloud.commands.request(token, "r", BORN, "ventilation.start", {"duration_min": 10}))
    assert isinstance(error, SpinRequired)
    await cloud.vehicles.record_status(BORN, status("max", at=START + 2))
    await clock.advance(300 * DAY)
    token = (await cloud.accounts.login("dan@example.com", "correct horse battery")).token
    error = await _refused(cloud.commands.request(token, "r", BORN, "aux_heating.start", HEAT))
    assert isinstance(error, LicenseExpired)


async def test_order_spin_before_rate_limit(registry: SqlRegistry, clock: VirtualClock) -> None:
    cloud = services(registry, clock, config=CloudConfig(rate_capacity=2, rate_refill_per_s=0.5))
    from cloud_testkit import FLEET

    await cloud.vehicles.import_vehicles(FLEET)
    token = await owner(cloud, "eve@example.com", LEON)
    await cloud.commands.request(token, "a", LEON, "honk_and_flash", HONK)
    await cloud.commands.request(token, "b", LEON, "honk_and_flash", HONK)
    limited = await _refused(cloud.commands.request(token, "c", LEON, "honk_and_flash", HONK))
    assert isinstance(limited, RateLimited)
    assert limited.retry_after_s == 2.0
    assert limited.to_app_error().retry_after_s == 2.0
    assert isinstance(await _refused(cloud.commands.request(token, "d", LEON, "lock")), SpinRequired)
    wrong = await _refused(cloud.commands.request(token, "d", LEON, "lock", spin="0815"))
    assert isinstance(wrong, SpinIncorrect)
    await clock.advance(2.0)
    await cloud.commands.request(token, "e", LEON, "lock", spin=SPIN)
    assert isinstance(await _refused(cloud.commands.request(token, "f", LEON, "lock", spin=SPIN)), RateLimited)


def test_token_bucket_refills_at_its_rate() -> None:
    bucket, wait = take_token(None, "k", 0.0, capacity=2, per_s=1.0)
    assert wait == 0.0
    bucket, wait = take_token(bucket, "k", 0.0, capacity=2, per_s=1.0)
    assert wait == 0.0
    bucket, wait = take_token(bucket, "k", 0.25, capacity=2, per_s=1.0)
    assert wait == pytest.approx(0.75)
    bucket, wait = take_token(bucket, "k", 1.0, capacity=2, per_s=1.0)
    assert wait == 0.0
    bucket, _ = take_token(bucket, "k", 100.0, capacity=2, per_s=1.0)
    assert bucket.tokens == 1.0  # never above capacity


# -- R10 at command time ---------------------------------------------------------------------------------------
async def test_r10_a_secondary_user_locks_with_their_own_spin(cloud: CloudServices) -> None:
    primary = await owner(cloud, "pia@example.com", LEON)
    sec = await new_user(cloud, "sec@example.com", spin="2580")
    await cloud.garage.invite_secondary(primary, LEON, "sec@example.com")
    assert isinstance(await _refused(cloud.commands.request(sec, "r", LEON, "unlock", spin=SPIN)), SpinIncorrect)
    assert (await cloud.commands.request(sec, "r2", LEON, "unlock", spin="2580")).created
    assert (await cloud.commands.request(sec, "r3", LEON, "aux_heating.start", HEAT, spin="2580")).created


# -- R11, R12, R13 ---------------------------------------------------------------------------------------------
async def test_r12_without_a_licence_no_remote_service_works(cloud: CloudServices, registry: SqlRegistry) -> None:
    future = generate_vin(__import__("random").Random(5))
    # Registered next month: its free year has not started, so it has no active licence yet.
    await cloud.vehicles.import_vehicles([VehicleRecord(future, "leon", "navigation", START + 30 * DAY, None)])
    token = await owner(cloud, "fay@example.com", future)
    every_op: list[tuple[str, dict[str, object]]] = [
        ("lock", {}), ("unlock", {}), ("honk_and_flash", HONK), ("aux_heating.start", HEAT), ("aux_heating.stop", {}),
        ("ventilation.start", {"duration_min": 10}), ("ventilation.stop", {}), ("status.refresh", {}),
    ]
    for op, params in every_op:
        error = await _refused(cloud.commands.request(token, f"r-{op}", future, op, params, spin=SPIN))
        assert isinstance(error, LicenseMissing), op
    assert isinstance(await _refused(cloud.vehicles.vehicle_status(token, future)), LicenseMissing)


async def test_r11_an_expired_licence_stops_services_and_a_renewal_restores_them(
    cloud: CloudServices, clock: VirtualClock
) -> None:
    await owner(cloud, "gil@example.com", LEON)
    await clock.advance(265 * DAY)  # registered 100 days before START: the free year ends now
    token = (await cloud.accounts.login("gil@example.com", "correct horse battery")).token
    assert isinstance(await _refused(cloud.commands.request(token, "a", LEON, "status.refresh")), LicenseExpired)
    await cloud.licences.renew(token, LEON, 1)
    assert (await cloud.commands.request(token, "b", LEON, "status.refresh")).created


async def test_r13_max_privacy_makes_services_unavailable(cloud: CloudServices) -> None:
    token = await owner(cloud, "hal@example.com", LEON)
    await cloud.vehicles.record_status(LEON, status("off"))
    assert await cloud.vehicles.vehicle_status(token, LEON) is not None
    await cloud.vehicles.record_privacy(LEON, "max", START + 10)  # announced in an event; no status in max privacy
    assert isinstance(await _refused(cloud.commands.request(token, "a", LEON, "status.refresh")), PrivacyModeOn)
    assert isinstance(await _refused(cloud.vehicles.vehicle_status(token, LEON)), PrivacyModeOn)
    # A late status from before the change does not turn privacy off again.
    assert not await cloud.vehicles.record_status(LEON, status("off", at=START + 5))
    assert isinstance(await _refused(cloud.commands.request(token, "b", LEON, "status.refresh")), PrivacyModeOn)
    await cloud.vehicles.record_status(LEON, status("no_position", at=START + 20))
    assert (await cloud.commands.request(token, "c", LEON, "status.refresh")).created


async def test_unsupported_functions_are_refused_per_model(cloud: CloudServices) -> None:
    token = await owner(cloud, "ida@example.com", ATECA_RADIO, BORN)
    for vin, op, params in [(ATECA_RADIO, "aux_heating.start", HEAT), (ATECA_RADIO, "ventilation.start", {}),
                            (ATECA_RADIO, "ventilation.stop", {}), (BORN, "aux_heating.stop", {})]:
        assert isinstance(await _refused(cloud.commands.request(token, "r", vin, op, params)), UnsupportedByVehicle)
    assert (await cloud.commands.request(token, "v", BORN, "ventilation.stop")).created


async def test_unknown_op_and_bad_params_are_invalid_and_spend_no_spin_try(cloud: CloudServices) -> None:
    token = await owner(cloud, "jo@example.com", LEON)
    assert isinstance(await _refused(cloud.commands.request(token, "r", LEON, "self_destruct")), InvalidRequest)
    bad = {"duration_min": 5, "target_temperature_c": 21.5}
    error = await _refused(cloud.commands.request(token, "r", LEON, "aux_heating.start", bad, spin="0815"))
    assert isinstance(error, InvalidRequest)
    me = await cloud.accounts.authenticate(token)
    assert (await cloud.registry.get_spin_state(me.user_id)).failures == 0


async def test_r17_an_idle_session_cannot_send_commands(cloud: CloudServices, clock: VirtualClock) -> None:
    token = await owner(cloud, "kim@example.com", LEON)
    await cloud.accounts.set_reauth_timeout(token, 5)
    await clock.advance(5 * 60 + 1)
    assert isinstance(await _refused(cloud.commands.request(token, "r", LEON, "status.refresh")), SessionExpired)


# -- VEHICLE_NOT_FOUND tells nothing ---------------------------------------------------------------------------
async def test_another_users_car_and_an_unknown_vin_get_byte_identical_replies(cloud: CloudServices) -> None:
    await owner(cloud, "owner@example.com", LEON)
    await new_user(cloud, "pending@example.com")
    pending = (await cloud.accounts.login("pending@example.com", "correct horse battery")).token
    await cloud.garage.add_vehicle(pending, ATECA_RADIO, accept_terms=True)
    snoop = await owner(cloud, "snoop@example.com", BORN)
    targets = {"someone else's": LEON, "unknown": UNKNOWN_VIN, "malformed": "VSS-NOT-A-VIN"}

    async def replies(vin: str) -> list[bytes]:
        calls = [
            cloud.commands.request(snoop, "req-1", vin, "unlock", {}, spin=SPIN),
            cloud.commands.request(snoop, "req-1", vin, "unlock", {}, spin="0815"),
            cloud.commands.request(snoop, "req-1", vin, "honk_and_flash", HONK),
            cloud.commands.request(snoop, "req-1", vin, "infotainment.notify", {"message": "x"}),
            cloud.vehicles.vehicle_status(snoop, vin),
            cloud.licences.status(snoop, vin),
            cloud.licences.renew(snoop, vin, 1),
            cloud.licences.cancel(snoop, vin),
            cloud.garage.invite_secondary(snoop, vin, "x@example.com"),
            cloud.garage.remove_secondary(snoop, vin, "x@example.com"),
            cloud.garage.remove_vehicle(snoop, vin),
            cloud.garage.list_users(snoop, vin),
        ]
        return [_reply("req-1", await _refused(call)) for call in calls]

    seen = {name: await replies(vin) for name, vin in targets.items()}
    reference = seen["unknown"]
    assert all(r == reference[0] for r in reference)
    assert seen["someone else's"] == reference
    assert seen["malformed"] == reference
    assert b"VEHICLE_NOT_FOUND" in reference[0]
    assert LEON.encode() not in reference[0]
    # A car whose enrolment is still pending is not in the garage yet either.
    pending_error = await _refused(cloud.commands.request(pending, "req-1", ATECA_RADIO, "lock", spin=SPIN))
    assert _reply("req-1", pending_error) == reference[0]
    # The wrong S-PIN against another user's car cost the snoop no try and the owner nothing.
    for email in ("snoop@example.com", "owner@example.com"):
        user = await cloud.registry.get_user_by_email(email)
        assert user is not None
        assert (await cloud.registry.get_spin_state(user.id)).failures == 0


# -- idempotency -----------------------------------------------------------------------------------------------
async def test_the_same_request_id_creates_one_command(cloud: CloudServices) -> None:
    token = await owner(cloud, "lou@example.com", LEON)
    first = await cloud.commands.request(token, "same", LEON, "lock", spin=SPIN)
    # A retry (even with a wrong S-PIN, or after the rate limit) returns the first command and checks nothing.
    again = await cloud.commands.request(token, "same", LEON, "lock", spin="0815")
    assert first.created
    assert not again.created
    assert again.command == first.command
    me = await cloud.accounts.authenticate(token)
    assert (await cloud.registry.get_spin_state(me.user_id)).failures == 0
    other = await owner(cloud, "mo@example.com", BORN)
    # Request ids are per user: another user's "same" is another command.
    assert (await cloud.commands.request(other, "same", BORN, "honk_and_flash", HONK)).created


async def test_concurrent_duplicates_on_two_instances_create_one_command(
    registry_url: str, clock: VirtualClock
) -> None:
    from cloud_testkit import FLEET

    async with open_registry(registry_url) as reg_a, open_registry(registry_url) as reg_b:
        cloud_a, cloud_b = services(reg_a, clock, seed=1), services(reg_b, clock, seed=2)
        await cloud_a.vehicles.import_vehicles(FLEET)
        token = await owner(cloud_a, "nia@example.com", LEON)
        results = await asyncio.gather(
            *(
                c.commands.request(token, "dup", LEON, "honk_and_flash", HONK)
                for _ in range(5)
                for c in (cloud_a, cloud_b)
            )
        )
        assert len({r.command.id for r in results}) == 1
        assert sum(r.created for r in results) == 1


# -- lifecycle -------------------------------------------------------------------------------------------------
async def test_lifecycle_forward_to_a_final_state_that_never_changes(cloud: CloudServices, clock: VirtualClock) -> None:
    token = await owner(cloud, "ola@example.com", LEON)
    c = (await cloud.commands.request(token, "r", LEON, "unlock", spin=SPIN)).command
    assert (await cloud.commands.mark_delivered(c.id)).applied
    await clock.advance(1)
    accepted = _result(command_id=c.id, state="accepted", at=clock.now())
    assert (await cloud.commands.apply_result(LEON, accepted)).command.state is CommandState.IN_PROGRESS  # type: ignore[union-attr]  # applied
    late_delivery = await cloud.commands.mark_delivered(c.id)
    assert not late_delivery.applied
    assert late_delivery.note == "command is in_progress; delivered would go back"
    done = _result(command_id=c.id, state="succeeded", at=clock.now())
    assert (await cloud.commands.apply_result(LEON, done)).applied
    failed = _result(command_id=c.id, state="failed", reason="door_open", at=clock.now())
    ignored = await cloud.commands.apply_result(LEON, failed)
    assert not ignored.applied
    assert ignored.note == "command is succeeded (final); failed ignored"
    assert ignored.command is not None
    assert ignored.command.state is CommandState.SUCCEEDED
    view = await cloud.commands.status(token, c.id)
    assert [s.state for s in view.history] == [
        CommandState.QUEUED, CommandState.DELIVERED, CommandState.IN_PROGRESS, CommandState.SUCCEEDED,
    ]
    assert await cloud.commands.expire_overdue(clock.now() + 3600) == []


async def test_failed_and_rejected_results_keep_their_reason(cloud: CloudServices) -> None:
    token = await owner(cloud, "pat@example.com", LEON)
    a = (await cloud.commands.request(token, "a", LEON, "lock", spin=SPIN)).command
    b = (await cloud.commands.request(token, "b", LEON, "unlock", spin=SPIN)).command
    failed = await cloud.commands.apply_result(
        LEON, _result(command_id=a.id, state="failed", reason="door_open", detail="front_left", at=START)
    )
    rejected = await cloud.commands.apply_result(
        LEON, _result(command_id=b.id, state="rejected", reason="expired", at=START)
    )
    assert failed.command is not None
    assert (failed.command.state, failed.command.reason, failed.command.detail) == (
        CommandState.FAILED, "door_open", "front_left"
    )
    assert rejected.command is not None
    assert (rejected.command.state, rejected.command.reason) == (CommandState.REJECTED, "expired")


async def test_a_result_from_another_car_is_ignored(cloud: CloudServices) -> None:
    token = await owner(cloud, "quinn@example.com", LEON)
    c = (await cloud.commands.request(token, "r", LEON, "unlock", spin=SPIN)).command
    spoofed = await cloud.commands.apply_result(BORN, _result(command_id=c.id, state="succeeded", at=START))
    assert not spoofed.applied
    assert (await cloud.commands.status(token, c.id)).command.state is CommandState.QUEUED
    unknown = await cloud.commands.apply_result(LEON, _result(command_id="cmd-nope", state="succeeded", at=START))
    assert not unknown.applied
    assert unknown.note == "unknown command"


async def test_ttl_overdue_commands_time_out_and_late_results_are_ignored(
    cloud: CloudServices, clock: VirtualClock
) -> None:
    token = await owner(cloud, "rae@example.com", LEON)
    queued = (await cloud.commands.request(token, "q", LEON, "honk_and_flash", HONK)).command
    delivered = (await cloud.commands.request(token, "d", LEON, "status.refresh")).command
    await cloud.commands.mark_delivered(delivered.id)
    await clock.advance(30)
    young = (await cloud.commands.request(token, "y", LEON, "status.refresh")).command
    await clock.advance(29.9)
    assert await cloud.commands.expire_overdue() == []
    await clock.advance(0.1)
    expired = await cloud.commands.expire_overdue()
    assert [c.id for c in expired] == [queued.id, delivered.id]
    assert all(c.state is CommandState.TIMED_OUT for c in expired)
    assert (await cloud.commands.status(token, young.id)).command.state is CommandState.QUEUED
    late = await cloud.commands.apply_result(LEON, _result(command_id=queued.id, state="succeeded", at=START))
    assert not late.applied
    assert late.note == "command is timed_out (final); succeeded ignored"
    await clock.advance(30)
    assert [c.id for c in await cloud.commands.expire_overdue()] == [young.id]
    assert await cloud.commands.expire_overdue() == []


async def test_a_users_command_status_is_private(cloud: CloudServices) -> None:
    token = await owner(cloud, "sol@example.com", LEON)
    other = await owner(cloud, "tam@example.com", BORN)
    c = (await cloud.commands.request(token, "r", LEON, "status.refresh")).command
    with pytest.raises(InvalidRequest):
        await cloud.commands.status(other, c.id)
    with pytest.raises(InvalidRequest):
        await cloud.commands.status(token, "cmd-unknown")


async def test_system_commands_are_signed_by_the_cloud_only(cloud: CloudServices) -> None:
    notice = cloud.commands.system_command(LEON, CommandOp.INFOTAINMENT_NOTIFY, {"message": "You are now primary."})
    assert notice.op == "infotainment.notify"
    assert notice.params == {"message": "You are now primary."}
    assert notice.expires_at - notice.created_at == 60
    assert await cloud.registry.get_command(notice.id) is None


async def test_spin_lockout_applies_to_commands(cloud: CloudServices, clock: VirtualClock) -> None:
    token = await owner(cloud, "uma@example.com", LEON)
    errors = [await _refused(cloud.commands.request(token, f"r{i}", LEON, "unlock", spin="0815")) for i in range(3)]
    assert [e.code for e in errors] == [ErrorCode.SPIN_INCORRECT] * 2 + [ErrorCode.SPIN_LOCKED]
    locked = await _refused(cloud.commands.request(token, "r4", LEON, "unlock", spin=SPIN))
    assert isinstance(locked, SpinLocked)
    await clock.advance(locked.locked_seconds)
    assert (await cloud.commands.request(token, "r5", LEON, "unlock", spin=SPIN)).created
