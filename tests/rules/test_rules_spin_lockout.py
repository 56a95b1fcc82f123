"""R3 over MQTT: the S-PIN lockout, counted per user across sessions, app clients and two cloud processes sharing
the registry, its waiting time running (and doubling) on the virtual clock."""

from __future__ import annotations

import pytest
from rules_kit import RULES_HANDLER, second_cloud

from broker.handler import HandlerConfig
from tcu_sim.app import AppClient, SpinIncorrect, SpinLocked
from tcu_sim.testing import AppUserFactory, Sandbox, SimClock, SimFleet

WRONG = "9371"


@pytest.fixture
def rules_handler_config() -> HandlerConfig:
    """Both cloud processes of this module share the app requests (MQTT 5 shared subscriptions)."""
    return RULES_HANDLER.model_copy(update={"shared_subscriptions": True})


async def _wrong(app: AppClient, vin: str) -> SpinIncorrect | SpinLocked:
    with pytest.raises((SpinIncorrect, SpinLocked)) as refused:
        await app.unlock(vin, WRONG)
    assert isinstance(refused.value, SpinIncorrect | SpinLocked)
    return refused.value


def _tries(error: SpinIncorrect | SpinLocked) -> int | None:
    return error.remaining_tries if isinstance(error, SpinIncorrect) else None


def _locked(error: SpinIncorrect | SpinLocked) -> int | None:
    return error.locked_seconds if isinstance(error, SpinLocked) else None


async def test_r03_three_wrong_spins_lock_it_with_a_doubling_wait_counted_per_user_across_sessions_and_clouds(
    tcu_sandbox: Sandbox,
    registry_url: str,
    rules_handler_config: HandlerConfig,
    fleet: SimFleet,
    clock: SimClock,
    app_user_factory: AppUserFactory,
) -> None:
    car = fleet.car("leon")
    owner = await app_user_factory("owner@example.com")
    await owner.enrol(car)
    async with (
        second_cloud(tcu_sandbox, registry_url, rules_handler_config) as other_cloud,
        await owner.new_app() as second_phone,
    ):
        await second_phone.login(owner.email, owner.password)  # another session, on another app client
        phones = [owner.app, second_phone]
        first_cloud = tcu_sandbox.cloud.handler
        before = [first_cloud.stats.requests["command"], other_cloud.stats.requests["command"]]

        # Three wrong S-PINs in a row, from two sessions: every reply says the tries left, then the time locked.
        replies = [await _wrong(phones[n % 2], car.vin) for n in range(3)]
        assert [_tries(r) for r in replies] == [2, 1, None]
        assert _locked(replies[2]) == 300
        # While locked even the right S-PIN is refused, with the seconds that are left.
        with pytest.raises(SpinLocked) as locked:
            await second_phone.unlock(car.vin, owner.spin)
        assert locked.value.locked_seconds == 300
        await clock.advance(120)
        with pytest.raises(SpinLocked) as locked:
            await owner.app.unlock(car.vin, owner.spin)
        assert locked.value.locked_seconds == 180

        # The wait ends on the clock; three more wrong S-PINs lock it again, for twice as long.
        await clock.advance(181)
        replies = [await _wrong(phones[(n + 1) % 2], car.vin) for n in range(3)]
        assert [_tries(r) for r in replies] == [2, 1, None]
        assert _locked(replies[2]) == 600
        await clock.advance(599)
        with pytest.raises(SpinLocked) as locked:
            await owner.app.unlock(car.vin, owner.spin)
        assert locked.value.locked_seconds == 1

        # Once the lock is over, the right S-PIN works (the car unlocks) and resets the count and the doubling.
        await clock.advance(2)
        assert await owner.command(car, "unlock", expect="succeeded") == "succeeded"
        await car.wait_for(locked=False)
        replies = [await _wrong(phones[n % 2], car.vin) for n in range(3)]
        assert [_tries(r) for r in replies] == [2, 1, None]
        assert _locked(replies[2]) == 300

        # Both cloud processes answered some of these S-PIN checks: the count lives in the shared registry.
        after = [first_cloud.stats.requests["command"], other_cloud.stats.requests["command"]]
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
        assert sum(after) - sum(before) == 13  # each request answered by exactly one of them
