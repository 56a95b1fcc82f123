"""A car worker's batch (issue 11): registry steps no longer leave the event loop, so a worker with nothing more in
its queue gives the loop a few turns to bring in what the socket already holds. A stream of messages arriving one
per loop turn goes into one batch; a lone message is applied after two empty turns, without waiting for time."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from handler_kit import Stack

from broker.handler import CarMessage


async def _stream(queue: asyncio.Queue[Any], count: int) -> None:
    for n in range(count):
        await asyncio.sleep(0)  # one message per loop turn, as reads bring them in under load
        queue.put_nowait(n)


async def test_a_stream_arriving_turn_by_turn_goes_into_one_batch(stack: Stack) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    feeder = asyncio.create_task(_stream(queue, 100))
    batch = [cast(CarMessage, await queue.get())]
    async with asyncio.timeout(10):
        await stack.handler._fill(cast(asyncio.Queue[CarMessage], queue), batch)
    await feeder
    assert [cast(Any, m) for m in batch] == list(range(100))


async def test_a_lone_message_is_not_held_back(stack: Stack) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    batch = [cast(CarMessage, "only")]
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count_turns())
    try:
        async with asyncio.timeout(10):
            await stack.handler._fill(cast(asyncio.Queue[CarMessage], queue), batch)
    finally:
        counter.cancel()
    assert [cast(Any, m) for m in batch] == ["only"]
    assert turns <= 3  # two empty turns, not the sixteen a stream gets


async def test_the_batch_limit_holds_for_a_stream(stack: Stack) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    limit = stack.handler.config.car_batch_max
    for n in range(limit + 10):
        queue.put_nowait(n)
    batch = [cast(CarMessage, await queue.get())]
    await stack.handler._fill(cast(asyncio.Queue[CarMessage], queue), batch)
    assert len(batch) == limit
    assert queue.qsize() == 10
