"""`Flag` behaves as `asyncio.Event` (the session's four events per car are Flags, to save memory)."""

from __future__ import annotations

import asyncio

import pytest

from tcu_sim.transport._flag import Flag


async def test_wait_returns_at_once_when_set_and_blocks_after_clear() -> None:
    flag = Flag()
    flag.set()
    assert flag.is_set()
    assert await asyncio.wait_for(flag.wait(), 1) is True
    flag.clear()
    assert not flag.is_set()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(flag.wait(), 0.05)
    assert repr(flag) == "Flag(unset, waiters=0)"  # the timed-out waiter left no trace


async def test_set_wakes_every_waiter_even_if_cleared_right_after() -> None:
    flag = Flag()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert repr(flag) == "Flag(unset, waiters=3)"
    flag.set()
    flag.clear()  # as asyncio.Event: those already waiting are woken anyway
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert repr(flag) == "Flag(unset, waiters=0)"


async def test_a_cancelled_waiter_does_not_stop_the_others() -> None:
    flag = Flag()
    cancelled = asyncio.create_task(flag.wait())
    other = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    flag.set()
    assert await asyncio.wait_for(other, 1) is True
    assert cancelled.cancelled()
