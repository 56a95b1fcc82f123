"""S-PIN lockout (R3): 3 wrong in a row lock it, each lock twice as long, every reply says tries left or seconds
locked, a correct S-PIN resets; counted per user across sessions, service instances and processes."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from cloud_testkit import SPIN, START, hammer_spin, new_user, services

from broker.cloud import (
    CloudConfig,
    CloudServices,
    SpinIncorrect,
    SpinLocked,
    SpinRequired,
    register_failure,
)
from broker.registry import SpinState, SqlRegistry, UserRecord, open_registry
from tcu_sim.clock import VirtualClock


async def _user(cloud: CloudServices, email: str = "sam@example.com") -> UserRecord:
    token = await new_user(cloud, email)
    return (await cloud.accounts.authenticate(token)).user


async def _wrong(cloud: CloudServices, user: UserRecord) -> SpinIncorrect | SpinLocked:
    with pytest.raises((SpinIncorrect, SpinLocked)) as info:
        await cloud.spin.verify(user, "0815")
    assert isinstance(info.value, SpinIncorrect | SpinLocked)
    return info.value


async def test_r3_three_wrong_spins_lock_and_every_reply_says_how_long(
    cloud: CloudServices, clock: VirtualClock
) -> None:
    user = await _user(cloud)
    lock_s = cloud.ctx.config.spin_lock_s
    first, second, third = [await _wrong(cloud, user) for _ in range(3)]
    assert isinstance(first, SpinIncorrect)
    assert first.remaining_tries == 2
    assert isinstance(second, SpinIncorrect)
    assert second.remaining_tries == 1
    assert isinstance(third, SpinLocked)
    assert third.locked_seconds == lock_s
    assert third.to_app_error().locked_seconds == lock_s

    await clock.advance(100)
    with pytest.raises(SpinLocked) as even_correct:  # while locked, the right S-PIN does not open it either
        await cloud.spin.verify(user, SPIN)
    assert even_correct.value.locked_seconds == lock_s - 100
    await clock.advance(lock_s - 100)
    await cloud.spin.verify(user, SPIN)


async def test_r3_each_new_lock_doubles_the_waiting_time(cloud: CloudServices, clock: VirtualClock) -> None:
    user = await _user(cloud)
    lock_s = cloud.ctx.config.spin_lock_s
    for n in range(4):
        for _ in range(2):
            assert isinstance(await _wrong(cloud, user), SpinIncorrect)
        locked = await _wrong(cloud, user)
        assert isinstance(locked, SpinLocked)
        assert locked.locked_seconds == lock_s * 2**n
        await clock.advance(locked.locked_seconds - 1)
        assert isinstance(await _wrong(cloud, user), SpinLocked)  # still locked; not counted
        await clock.advance(1)


async def test_r3_the_lock_is_capped(registry: SqlRegistry, clock: VirtualClock) -> None:
    cloud = services(registry, clock, config=CloudConfig(spin_lock_s=60, spin_lock_max_s=200))
    user = await _user(cloud)
    seen = []
    for _ in range(4):
        for _ in range(2):
            await _wrong(cloud, user)
        locked = await _wrong(cloud, user)
        assert isinstance(locked, SpinLocked)
        seen.append(locked.locked_seconds)
        await clock.advance(locked.locked_seconds)
    assert seen == [60, 120, 200, 200]


async def test_r3_a_correct_spin_resets_the_count(cloud: CloudServices) -> None:
    user = await _user(cloud)
    await _wrong(cloud, user)
    await _wrong(cloud, user)
    await cloud.spin.verify(user, SPIN)
    assert (await cloud.registry.get_spin_state(user.id)) == SpinState(user.id)
    again = await _wrong(cloud, user)
    assert isinstance(again, SpinIncorrect)
    assert again.remaining_tries == 2


async def test_r3_a_missing_spin_is_required_and_not_counted(cloud: CloudServices) -> None:
    user = await _user(cloud)
    for missing in (None, ""):
        with pytest.raises(SpinRequired):
            await cloud.spin.verify(user, missing)
    assert (await cloud.registry.get_spin_state(user.id)).failures == 0


async def test_r3_the_count_is_per_user(cloud: CloudServices) -> None:
    alice = await _user(cloud, "alice@example.com")
    bob = await _user(cloud, "bob@example.com")
    await _wrong(cloud, alice)
    await _wrong(cloud, alice)
    assert isinstance(await _wrong(cloud, alice), SpinLocked)
    bob_try = await _wrong(cloud, bob)
    assert isinstance(bob_try, SpinIncorrect)
    assert bob_try.remaining_tries == 2


async def test_r3_the_count_holds_across_service_instances_sharing_one_store(
    registry_url: str, clock: VirtualClock
) -> None:
    async with open_registry(registry_url) as reg_a, open_registry(registry_url) as reg_b:
        cloud_a, cloud_b = services(reg_a, clock, seed=1), services(reg_b, clock, seed=2)
        user = await _user(cloud_a)
        first = await _wrong(cloud_a, user)
        second = await _wrong(cloud_b, user)
        third = await _wrong(cloud_a, user)
        assert isinstance(first, SpinIncorrect)
        assert first.remaining_tries == 2
        assert isinstance(second, SpinIncorrect)
        assert second.remaining_tries == 1
        assert isinstance(third, SpinLocked)
        assert isinstance(await _wrong(cloud_b, user), SpinLocked)


async def test_r3_concurrent_wrong_spins_on_two_instances_all_count(registry_url: str, clock: VirtualClock) -> None:
    config = CloudConfig(spin_max_tries=10_000)
    async with open_registry(registry_url) as reg_a, open_registry(registry_url) as reg_b:
        cloud_a = services(reg_a, clock, config=config, seed=1)
        cloud_b = services(reg_b, clock, config=config, seed=2)
        user = await _user(cloud_a)
        results = await asyncio.gather(
            *(_wrong(cloud, user) for _ in range(20) for cloud in (cloud_a, cloud_b))
        )
        remaining = sorted(r.remaining_tries for r in results if isinstance(r, SpinIncorrect))
        # Every try counted once: the replies saw 1..40 failures, none twice (no lost update).
        assert remaining == sorted(10_000 - n for n in range(1, 41))
        assert (await reg_b.get_spin_state(user.id)).failures == 40


async def test_r3_concurrent_tries_lock_exactly_once(cloud: CloudServices) -> None:
    user = await _user(cloud)
    results = await asyncio.gather(*(_wrong(cloud, user) for _ in range(6)))
    assert sorted(type(r).__name__ for r in results) == ["SpinIncorrect"] * 2 + ["SpinLocked"] * 4
    state = await cloud.registry.get_spin_state(user.id)
    assert state.lock_count == 1
    assert state.failures == 0


async def test_r3_the_count_holds_across_processes(registry_url: str, clock: VirtualClock) -> None:
    async with open_registry(registry_url) as registry:
        cloud = services(registry, clock)
        user = await _user(cloud, "proc@example.com")
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        await asyncio.gather(
            *(loop.run_in_executor(pool, hammer_spin, registry_url, "proc@example.com", 15, seed) for seed in (7, 8))
        )
    async with open_registry(registry_url) as registry:
        assert (await registry.get_spin_state(user.id)).failures == 30


def test_register_failure_is_pure_and_ignores_tries_while_locked() -> None:
    state = SpinState("u")
    for _ in range(2):
        state = register_failure(state, START, max_tries=3, lock_s=10, max_lock_s=100)
    assert state == SpinState("u", failures=2)
    locked = register_failure(state, START, max_tries=3, lock_s=10, max_lock_s=100)
    assert locked == SpinState("u", failures=0, locked_until=START + 10, lock_count=1)
    assert register_failure(locked, START + 5, max_tries=3, lock_s=10, max_lock_s=100) == locked
    assert register_failure(locked, START + 10, max_tries=3, lock_s=10, max_lock_s=100).failures == 1
