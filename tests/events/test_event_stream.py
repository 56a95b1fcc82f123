"""tcu_sim.events: the stream itself, without a broker — filtering by type, order, waiting with a timeout, a full
buffer that drops for its own subscriber only, close, and publishing from another thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tcu_sim.events import CarConnection, CommandChanged, Event, EventStream, Source, Subscription

WAIT = 5.0


def step(n: int, state: str = "queued") -> CommandChanged:
    return CommandChanged(
        at=float(n), source=Source.CLOUD, command_id=f"cmd-{n}", vin="VSSZZZKL7TN000001", op="lock", state=state,
        user_id="user-1",
    )


def connection(n: int, *, online: bool = True) -> CarConnection:
    return CarConnection(at=float(n), source=Source.FLEET, vin=f"VSSZZZKL7TN{n:06d}", online=online)


async def test_a_subscription_gets_the_types_it_asked_for() -> None:
    stream = EventStream("unit")
    everything: Subscription[Event] = stream.subscribe()  # no type given: every event
    with (
        stream.subscribe(CommandChanged) as commands,
        stream.subscribe(CarConnection) as connections,
        stream.subscribe(CommandChanged, CarConnection) as both,
        everything,
    ):
        published: list[Event] = [step(1), connection(2), step(3), connection(4)]
        for event in published:
            stream.publish(event)
        assert commands.drain() == [step(1), step(3)]
        assert connections.drain() == [connection(2), connection(4)]
        assert both.drain() == published
        assert everything.drain() == published
    assert stream.published == 4
    assert stream.subscribers == 0


async def test_events_arrive_in_the_order_they_were_published() -> None:
    stream = EventStream("unit")
    async with stream.subscribe(CommandChanged) as commands:
        for n in range(200):
            stream.publish(step(n))
        received = [(await commands.get(timeout=WAIT)).command_id for _ in range(200)]
    assert received == [f"cmd-{n}" for n in range(200)]
    assert commands.get_nowait() is None


async def test_wait_for_returns_the_first_match_and_times_out_without_one() -> None:
    stream = EventStream("unit")
    with stream.subscribe(CommandChanged) as commands:
        for n, state in enumerate(["queued", "delivered", "in_progress", "succeeded", "queued"]):
            stream.publish(step(n, state))
        found = await commands.wait_for(lambda e: e.state == "in_progress", timeout=WAIT)
        assert found == step(2, "in_progress")
        assert commands.pending == 2  # those before the match are consumed, those after it are not
        with pytest.raises(TimeoutError):
            await commands.wait_for(lambda e: e.state == "timed_out", timeout=0.05)
        assert commands.pending == 0


async def test_a_full_buffer_drops_for_its_own_subscriber_only() -> None:
    stream = EventStream("unit")
    small: Subscription[Event] = stream.subscribe(buffer=2, name="small")
    large: Subscription[Event] = stream.subscribe(name="large")
    with large:
        for n in range(10):
            stream.publish(step(n))
        assert (small.received, small.dropped, small.pending) == (2, 8, 2)
        assert small.drain() == [step(0), step(1)]  # the oldest are kept: a stalled reader misses the newest
        assert (large.received, large.dropped) == (10, 0)
        assert large.drain() == [step(n) for n in range(10)]
        assert stream.dropped == 8
        assert "dropped=8" in repr(small)
        assert "dropped=8" in repr(stream)
        small.close()
        assert stream.dropped == 8  # the count outlives the subscription
        stream.publish(step(10))
        assert (small.received, small.pending) == (2, 0)  # a closed subscription takes nothing more
        assert large.drain() == [step(10)]


async def test_close_ends_an_async_for() -> None:
    stream = EventStream("unit")
    commands: Subscription[CommandChanged] = stream.subscribe(CommandChanged)
    first = asyncio.Event()

    async def read() -> list[str]:
        seen = []
        async for event in commands:
            seen.append(event.command_id)
            first.set()
        return seen

    reader = asyncio.create_task(read())
    stream.publish(step(1))
    async with asyncio.timeout(WAIT):
        await first.wait()
    commands.close()  # the reader is waiting for the next event: it ends instead
    async with asyncio.timeout(WAIT):
        assert await reader == ["cmd-1"]
    assert commands.closed
    with pytest.raises(EOFError):
        await commands.get(timeout=WAIT)


async def test_an_event_from_another_thread_arrives_on_the_readers_loop() -> None:
    stream = EventStream("unit")
    commands = stream.subscribe(CommandChanged)

    async def read() -> list[str]:
        return [(await commands.get(timeout=WAIT)).command_id for _ in range(100)]

    def publish() -> None:
        for n in range(100):
            stream.publish(step(n))

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)  # a yield, not a wait: the reader is now parked in get()
    publisher = threading.Thread(target=publish, name="publisher")
    publisher.start()
    publisher.join(WAIT)  # blocking the loop on purpose: nothing may be taken before it runs again
    assert not publisher.is_alive()
    assert (commands.received, commands.pending) == (0, 0)  # not taken on the publisher's thread
    async with asyncio.timeout(WAIT):
        received = await reader  # handed over with call_soon_threadsafe, and the parked reader woken
    assert received == [f"cmd-{n}" for n in range(100)]
    assert commands.received == 100
