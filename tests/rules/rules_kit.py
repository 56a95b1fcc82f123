"""Helpers of the rule tests: the fleet and handler settings they run with, and awaits (each with a timeout) for
what a car shows, what an app is told and what the cloud has done."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import pytest

from broker.cloud import CloudServices, PasswordHasher
from broker.handler import CloudHandler, HandlerConfig, HandlerStats
from broker.registry import EnrolmentState, open_registry
from tcu_sim.app import AppClient, AppRequestError
from tcu_sim.protocol import ControlMessage, decode_json, encode_json
from tcu_sim.testing import Sandbox, SimBroker, SimCar, SimClock, SimCloud, SimUser

T = TypeVar("T")

DAY: Final = 86_400.0
HOUR: Final = 3_600.0
WAIT: Final = 10.0  # real seconds any one wait of these tests may take before it fails

#: A Leon (two-key verification, heater, ventilation) and a radio Ateca (pairing code, no heater, no
#: ventilation), both registered on 2025-03-01: their free licence year (R14) ends 2026-03-01 00:00 UTC,
#: 59 days after the clock starts (2026-01-01 00:00 UTC). One status a day keeps the cars' timers few when a
#: test moves the clock by weeks.
RULES_FLEET: Final[dict[str, Any]] = {
    "name": "rules",
    "seed": 7,
    "defaults": {
        "status_interval_s": "1d",
        "home_area": {"center": {"lat": 41.3874, "lon": 2.1686}, "radius_km": 2},
    },
    "groups": [
        {"name": "leon", "count": 1, "model": "leon", "equipment": "media_system", "registered_at": "2025-03-01"},
        {"name": "ateca", "count": 1, "model": "ateca", "equipment": "radio", "registered_at": "2025-03-01"},
    ],
}
FREE_YEAR_ENDS: Final = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()


def fleet_of(*groups: dict[str, Any], name: str = "rules") -> dict[str, Any]:
    """A fleet like `RULES_FLEET` with other groups (`{"name", "count", "model", "equipment", ...}`)."""
    return {**RULES_FLEET, "name": name, "groups": list(groups)}


#: The sandbox's handler settings: the product's workers, a clean MQTT session and quick reconnects (as the
#: plugin's cloud), and periodic jobs that suit jumps of weeks: the expiry job and the reminders hourly (the
#: `SimClock` makes the cloud expire overdue commands after every `advance` anyway).
RULES_HANDLER: Final = HandlerConfig(
    session_expiry_s=0,
    reconnect_base_s=0.05,
    reconnect_cap_s=1.0,
    expiry_interval_s=HOUR,
    reminder_interval_s=HOUR,
)


# --- time -------------------------------------------------------------------------------------------------------


async def advance_to(clock: SimClock, when: float) -> None:
    """Move the shared virtual clock forward to `when`: every timer of the cloud and the cars fires on the way."""
    assert when >= clock.now(), f"{when} is in the clock's past ({clock.now()})"
    await clock.advance(when - clock.now())


async def jump_to(clock: SimClock, when: float) -> None:
    """Move the shared virtual clock's wall time to `when` in one jump (months at once: the cars are parked and
    their timers do not fire on the way), then let an hour pass with every timer running."""
    assert when >= clock.now(), f"{when} is in the clock's past ({clock.now()})"
    clock.set_time(when - HOUR)
    await clock.advance(HOUR)


# --- the app ----------------------------------------------------------------------------------------------------


async def relogin(user: SimUser) -> None:
    """Log the user's app in again (sessions older than 30 days end, whatever their activity)."""
    await user.app.login(user.email, user.password)


async def next_push(
    app: AppClient, kind: str, match: Callable[[dict[str, Any]], bool] = lambda _: True, timeout: float = WAIT
) -> dict[str, Any]:
    """The data of the next push event of `kind` whose data matches (other events before it are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            event = await app.next_event(timeout)
            if event.type == kind and match(event.data):
                return event.data


async def refusal(call: Awaitable[object]) -> tuple[str, str]:
    """The (code, message) of the error the cloud answers to `call`; fails the test if it succeeds."""
    try:
        await call
    except AppRequestError as exc:
        return str(exc.code), exc.message
    raise AssertionError("the cloud accepted a request it should have refused")


async def garage(user: SimUser) -> dict[str, tuple[str, str]]:
    """The user's garage as the app lists it: VIN -> (role, state)."""
    return {v["vin"]: (v["role"], v["state"]) for v in await user.app.list_vehicles()}


# --- the car ----------------------------------------------------------------------------------------------------


async def wait_notification(car: SimCar, text: str, *, count: int = 1, timeout: float = WAIT) -> str:
    """The latest message shown in the car's infotainment that contains `text`, once the car shows `count` such
    messages (its infotainment keeps the latest 20), waiting until it does."""
    session = car.session
    try:
        async with asyncio.timeout(timeout):
            while True:
                shown = [message for message in car.vehicle.notifications if text in message]
                if len(shown) >= count:
                    return shown[-1]
                await session.wait_for_change()
    except TimeoutError:
        raise AssertionError(
            f"car {car.vin}: not {count} message(s) containing {text!r} within {timeout:g} s; it shows "
            f"{car.vehicle.notifications}"
        ) from None


async def operator_control(broker: SimBroker, car: SimCar, action: str, **params: Any) -> None:
    """What a person does in or at the car, published by the operator on `sim/{vin}/control` (the broker lets only
    the operator identity write there); the car's TCU applies it when the message arrives."""
    message = ControlMessage.model_validate({"action": action, "params": params})
    topic = car.session.config.topics.control(car.vin)
    async with broker.client("operator", identifier=f"operator-{action}") as operator:
        await operator.publish(topic, encode_json(message.model_dump(mode="json")), qos=1)


def claims_of(token: bytes) -> dict[str, Any]:
    """The claims of a JWS compact token, read without verifying it (to look at what a car received)."""
    parts = token.split(b".")
    if len(parts) != 3:
        return {}
    payload = base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4))
    claims = decode_json(payload)
    return claims if isinstance(claims, dict) else {}


@dataclass
class CommandRecorder:
    """Every payload the car received on its command topic, in order (recorded before the car handles it)."""

    payloads: list[bytes] = field(default_factory=list)

    def ops(self) -> list[str]:
        """The `op` of every recorded command that has one."""
        return [str(claims_of(p).get("body", {}).get("op")) for p in self.payloads]


def record_commands(car: SimCar, monkeypatch: pytest.MonkeyPatch) -> CommandRecorder:
    """Record what reaches the car's TCU on `tcu/{vin}/commands` from now on; the TCU handles it as before."""
    recorder = CommandRecorder()
    session = car.session
    handle = session.handle_command

    def recording(payload: bytes) -> None:
        recorder.payloads.append(bytes(payload))
        handle(payload)

    monkeypatch.setattr(session, "handle_command", recording)
    return recorder


# --- the cloud --------------------------------------------------------------------------------------------------


async def cloud_handled(
    cloud: SimCloud | CloudHandler, done: Callable[[HandlerStats], bool], timeout: float = WAIT
) -> None:
    """Wait until the cloud's handler counters satisfy `done` (checked after every message it handles)."""
    handler = cloud.handler if isinstance(cloud, SimCloud) else cloud
    try:
        await handler.wait_for(done, timeout)
    except TimeoutError:
        raise AssertionError(f"the cloud did not get there within {timeout:g} s: {handler.stats.as_dict()}") from None


async def wait_enrolment(cloud: SimCloud, vin: str, user: SimUser, state: EnrolmentState) -> None:
    """Wait until the cloud holds `user`'s enrolment of `vin` in `state`."""
    user_id = await user.user_id()

    async def reached() -> bool | None:
        enrolment = await cloud.registry.get_enrolment(vin, user_id)
        return True if enrolment is not None and enrolment.state is state else None

    async def what() -> str:
        enrolment = await cloud.registry.get_enrolment(vin, user_id)
        now = "none" if enrolment is None else enrolment.state.value
        return f"{user.email}: enrolment of {vin} not {state.value} within {WAIT:g} s (it is {now})"

    await cloud.wait_until(reached, timeout=WAIT, what=what)


@contextlib.asynccontextmanager
async def second_cloud(sandbox: Sandbox, registry_url: str, config: HandlerConfig) -> AsyncIterator[CloudHandler]:
    """Another cloud process beside the sandbox's: its own MQTT client, domain services and workers, the same
    registry, server secret, signing key and fleet keys (what a scaled-out cloud shares), and a certificate of its
    own (`cloud-2`, ...: the client id is the certificate's CN, SPEC §7)."""
    with sandbox.broker.lease_cloud() as identity:
        async with _cloud_handler(sandbox, registry_url, config, identity) as handler:
            yield handler


@contextlib.asynccontextmanager
async def _cloud_handler(
    sandbox: Sandbox, registry_url: str, config: HandlerConfig, identity: str
) -> AsyncIterator[CloudHandler]:
    first = sandbox.cloud
    async with open_registry(registry_url, pool_size=2) as registry:
        services = CloudServices(
            registry,
            sandbox.clock,
            first.services.ctx.secret,
            config=first.services.ctx.config,
            rng=random.Random(2),
            passwords=PasswordHasher.for_tests(),
        )
        handler = CloudHandler(
            config.model_copy(update={"client_id": identity, "topic_prefix": first.topic_prefix}),
            services,
            sandbox.clock,
            host=sandbox.broker.host,
            port=sandbox.broker.port,
            cloud_key=first.cloud_key,
            fleet_keys=first.fleet_keys,
            tls_context=sandbox.broker.device_tls(identity),
            rng=random.Random(3),
        )
        async with handler:
            await handler.wait_ready(WAIT)
            yield handler


def spy(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> list[tuple[Any, ...]]:
    """Record the arguments of every call of `target.name` (which still runs)."""
    calls: list[tuple[Any, ...]] = []
    original = getattr(target, name)

    def recording(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(target, name, recording)
    return calls


def values_in(data: Any) -> Iterator[Any]:
    """Every key and leaf value of a JSON document."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield key
            yield from values_in(value)
    elif isinstance(data, list):
        for value in data:
            yield from values_in(value)
    else:
        yield data
