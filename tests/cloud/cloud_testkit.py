"""Helpers for the cloud domain tests: a tiny fleet, users that register, verify and log in, enrolment."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import asyncpg

from broker.cloud import (
    CloudConfig,
    CloudServices,
    EnrolmentOutcome,
    PasswordHasher,
    ServerSecret,
)
from broker.registry import MailRecord, VehicleRecord, open_registry
from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import ErrorCode, StatusSnapshot, generate_vin
from tcu_sim.vehicle import EnrolmentMethod

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the virtual clock's start
DAY = 86_400.0
SECRET = ServerSecret(b"tcu-sim test secret, 32 bytes..")
PASSWORDS = PasswordHasher.for_tests()
PASSWORD = "correct horse battery"
SPIN = "4711"

_vins = random.Random(20260101)
LEON = generate_vin(_vins)  # tkov, aux heater, ventilation
ATECA_RADIO = generate_vin(_vins)  # pairing code, no heater, no ventilation, no in-car login
BORN = generate_vin(_vins)  # tkov, electric: ventilation but no aux heater
FORMENTOR = generate_vin(_vins)
UNKNOWN_VIN = generate_vin(_vins)  # valid syntax, never imported

FLEET = [
    VehicleRecord(LEON, "leon", "media_system", START - 100 * DAY, "test"),
    VehicleRecord(ATECA_RADIO, "ateca", "radio", START - 100 * DAY, "test"),
    VehicleRecord(BORN, "born", "navigation", START - 100 * DAY, "test"),
    VehicleRecord(FORMENTOR, "formentor", "navigation", START - 100 * DAY, "test"),
]


#: Every table but schema_version, children before parents (test_cloud_registry checks the list is complete).
TABLES = (
    "trips", "alerts", "bookings", "roadside_cases",
    "user_clients", "command_history", "commands", "audit", "mails", "reminders", "purchases", "licences",
    "rate_buckets", "spin_state", "pairing_codes", "enrolments", "vehicle_state", "vehicles", "sessions",
    "email_codes", "users", "counters", "seq_marks",
)


def execute_sql(dsn: str, statement: str) -> None:
    """Run one statement on its own connection, in a thread of its own: fixtures that need it may be set up
    while the test's event loop is running."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()



def services(
    registry: object, clock: VirtualClock, *, config: CloudConfig | None = None, seed: int = 1
) -> CloudServices:
    """Cloud services with cheap password hashing and seeded identifiers."""
    return CloudServices(
        registry,  # type: ignore[arg-type]  # the SqlRegistry fixture satisfies the Registry protocol
        clock, SECRET, config=config, rng=random.Random(seed), passwords=PASSWORDS,
    )


def verification_code(mails: Sequence[MailRecord]) -> str:
    """The code of the newest verification mail."""
    for mail in reversed(mails):
        match = re.search(r"verify\?code=([A-Za-z0-9_-]+)", mail.body)
        if match:
            return match.group(1)
    raise AssertionError(f"no verification mail among {[m.subject for m in mails]}")


async def new_user(
    cloud: CloudServices, email: str, *, password: str = PASSWORD, spin: str = SPIN, verify: bool = True
) -> str:
    """Register (and verify) a user and log in; the session token."""
    await cloud.accounts.register(email, password, spin)
    if verify:
        await cloud.accounts.verify_email(verification_code(await cloud.accounts.mailbox_for(email)))
    return (await cloud.accounts.login(email, password)).token


async def enrol(cloud: CloudServices, token: str, vin: str) -> EnrolmentOutcome:
    """Add a car in the app and complete the in-car step its method needs."""
    added = await cloud.garage.add_vehicle(token, vin, accept_terms=True)
    if added.method is EnrolmentMethod.PAIRING_CODE:
        assert added.pairing_code is not None
        return await cloud.garage.complete_by_pairing_code(vin, added.pairing_code)
    me = await cloud.accounts.authenticate(token)
    return await cloud.garage.complete_by_tkov(vin, me.user.email)


async def owner(cloud: CloudServices, email: str, *vins: str) -> str:
    """A verified, logged-in user who is the primary user of `vins`; the token."""
    token = await new_user(cloud, email)
    for vin in vins:
        await enrol(cloud, token, vin)
    return token


def codes(errors: Sequence[BaseException]) -> list[ErrorCode]:
    """The app error codes of a list of CloudErrors."""
    return [e.code for e in errors]  # type: ignore[attr-defined]  # CloudError carries the code


def hammer_spin(url: str, email: str, attempts: int, seed: int) -> None:
    """Enter a wrong S-PIN `attempts` times, 5 at a time, through its own registry connection (run in another
    process by the cross-process S-PIN test). Uses a config without lockout, so that every try counts."""
    from broker.cloud import SpinIncorrect

    async def run() -> None:
        async with open_registry(url) as registry:
            cloud = services(registry, VirtualClock(START), config=CloudConfig(spin_max_tries=10_000), seed=seed)
            user = await registry.get_user_by_email(email)
            assert user is not None

            async def one() -> None:
                try:
                    await cloud.spin.verify(user, "0815")
                except SpinIncorrect:
                    return
                raise AssertionError("a wrong S-PIN was accepted")

            for start in range(0, attempts, 5):
                await asyncio.gather(*(one() for _ in range(min(5, attempts - start))))

    asyncio.run(run())


def status(privacy: str = "off", *, at: float = START) -> StatusSnapshot:
    """A parked, locked car's status snapshot in the given privacy mode."""
    closed = {"open": False, "locked": True}
    return StatusSnapshot.model_validate(
        {
            "updated_at": at,
            "connection": {"online": True, "signal_pct": 80},
            "privacy_mode": privacy,
            "ignition": "off",
            "moving": False,
            "locked": True,
            "doors": {d: closed for d in ("front_left", "front_right", "rear_left", "rear_right", "trunk", "hood")},
            "windows": {w: "closed" for w in ("front_left", "front_right", "rear_left", "rear_right")},
            "lights": "off",
            "parking_position": None if privacy != "off" else {"lat": 41.39, "lon": 2.17, "parked_at": at - 60},
            "aux_heating": {"state": "off", "remaining_min": 0, "target_temperature_c": None},
            "battery_12v_v": 12.6,
            "fuel_level_pct": 60.0,
            "range_km": 500.0,
            "odometer_km": 12000.0,
            "health": {"warnings": [], "inspection_due_days": 200, "oil_service_due_km": 9000},
        }
    )
