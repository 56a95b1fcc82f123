"""The TCP fault proxy against a loopback echo server: each toxic, toggled live, and the route's controls."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import pytest
from faults_kit import WAIT, echo_server, tcp_server

from tcu_sim.faults import (
    BandwidthFault,
    BlackHoleFault,
    DataLimitFault,
    Direction,
    FaultKind,
    FaultProxy,
    LatencyFault,
    ProxyError,
    ProxyRoute,
    ResetFault,
    SlicerFault,
)


@contextlib.asynccontextmanager
async def proxied() -> AsyncIterator[ProxyRoute]:
    async with echo_server() as port, FaultProxy("127.0.0.1", port, rng=random.Random(5)) as proxy:
        yield await proxy.open_route("leon", group="leon")


@contextlib.asynccontextmanager
async def connect(route: ProxyRoute) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(route.host, route.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    async with asyncio.timeout(WAIT):
        return await reader.readexactly(len(data))


async def test_clean_route_passes_bytes_both_ways_and_counts_them() -> None:
    async with proxied() as route, connect(route) as (reader, writer):
        assert await echo(reader, writer, b"hello mqtt") == b"hello mqtt"
        assert route.stats.connections == 1
        assert route.stats.active == 1
        assert route.stats.bytes_up == 10
        assert route.stats.bytes_down == 10
        assert "links=1" in repr(route)


async def test_latency_delays_each_direction_and_keeps_the_order() -> None:
    async with proxied() as route, connect(route) as (reader, writer):
        route.add(LatencyFault(latency_ms=60))
        started = time.monotonic()
        assert await echo(reader, writer, b"ping") == b"ping"
        assert time.monotonic() - started >= 0.12  # 60 ms up and 60 ms down
        route.add(LatencyFault(latency_ms=20, jitter_ms=19))  # replaces the first one
        assert [t.kind for t in route.toxics] == [FaultKind.LATENCY]
        for i in range(30):  # jitter must never reorder a byte stream
            writer.write(bytes([i]))
            await writer.drain()
        async with asyncio.timeout(WAIT):
            assert await reader.readexactly(30) == bytes(range(30))


async def test_black_hole_toggled_live_swallows_data_until_removed() -> None:
    async with proxied() as route, connect(route) as (reader, writer):
        assert await echo(reader, writer, b"before") == b"before"
        route.add(BlackHoleFault())
        writer.write(b"lost")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):  # nothing comes back while the hole is there
                await reader.read(100)
        assert route.stats.dropped_bytes == 4
        assert route.remove(FaultKind.BLACK_HOLE)
        assert await echo(reader, writer, b"after") == b"after"  # the connection lived on; "lost" is gone


async def test_black_hole_can_close_connections_after_a_while() -> None:
    async with proxied() as route, connect(route) as (reader, _):
        route.add(BlackHoleFault(close_after_ms=50))
        async with asyncio.timeout(WAIT):
            assert await reader.read(100) == b""  # closed by the proxy


async def test_reset_sends_an_rst_to_open_and_new_connections() -> None:
    async with proxied() as route:
        async with connect(route) as (reader, writer):
            assert await echo(reader, writer, b"x") == b"x"
            route.add(ResetFault(after_ms=0))
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(WAIT):
                    await reader.read(100)
        async with connect(route) as (reader, _):
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(WAIT):
                    await reader.read(100)
        assert route.stats.resets == 2


async def test_data_limit_closes_the_connection_after_that_many_bytes() -> None:
    async with tcp_server() as (port, received), FaultProxy("127.0.0.1", port) as proxy:
        route = await proxy.open_route("leon")
        route.add(DataLimitFault(bytes=10, direction=Direction.UPSTREAM))
        async with connect(route) as (reader, writer):
            writer.write(b"0123456789abcdef")
            await writer.drain()
            async with asyncio.timeout(WAIT):
                assert await reader.read(100) == b""  # the proxy closed the car's side
                await received.closed.wait()  # and the broker's side
        assert received.data == b"0123456789"
        assert route.stats.closed_by_limit == 1


async def test_slicer_cuts_writes_into_pieces_that_still_add_up() -> None:
    async with tcp_server() as (port, received), FaultProxy("127.0.0.1", port, rng=random.Random(1)) as proxy:
        route = await proxy.open_route("leon")
        route.add(SlicerFault(average_size=4, size_variation=2, delay_us=2000))
        async with connect(route) as (_, writer):
            writer.write(bytes(range(64)))
            await writer.drain()
            assert await received.wait_for(64) == bytes(range(64))
    assert len(received.chunks) >= 8  # pieces of 2..6 bytes, 2 ms apart: the server reads them one by one


async def test_bandwidth_limits_the_rate() -> None:
    async with proxied() as route, connect(route) as (reader, writer):
        route.add(BandwidthFault(rate_kb_s=5, direction=Direction.UPSTREAM))
        started = time.monotonic()
        assert await echo(reader, writer, b"z" * 2000) == b"z" * 2000
        assert time.monotonic() - started >= 0.35  # 2000 bytes at 5000 bytes per second


async def test_a_disabled_route_closes_connections_and_refuses_new_ones() -> None:
    async with proxied() as route:
        async with connect(route) as (reader, writer):
            assert await echo(reader, writer, b"a") == b"a"
            route.disable()
            async with asyncio.timeout(WAIT):
                assert await reader.read(10) == b""
        async with connect(route) as (reader, _):
            async with asyncio.timeout(WAIT):
                assert await reader.read(10) == b""
        assert route.stats.refused == 1
        route.enable()
        async with connect(route) as (reader, writer):
            assert await echo(reader, writer, b"b") == b"b"


async def test_clear_removes_every_toxic() -> None:
    async with proxied() as route:
        route.add(LatencyFault(latency_ms=5))
        route.add(BlackHoleFault(direction=Direction.DOWNSTREAM))
        route.disable()
        route.clear()
        assert route.toxics == []
        assert route.enabled


async def test_unreachable_upstream_closes_the_car_side() -> None:
    async with echo_server() as port:
        pass  # the port is free again: nothing listens there
    async with FaultProxy("127.0.0.1", port) as proxy:
        route = await proxy.open_route("leon")
        async with connect(route) as (reader, _):
            async with asyncio.timeout(WAIT):
                assert await reader.read(10) == b""
        assert route.stats.upstream_failures == 1


async def test_routes_are_a_transport_backend() -> None:
    async with echo_server() as port, FaultProxy("127.0.0.1", port) as proxy:
        host, route_port = await proxy.route_for("city", "city", ("127.0.0.1", port))
        assert (host, route_port) == await proxy.listen_address("city")
        assert await proxy.route_for("city", "city", ("127.0.0.1", port)) == (host, route_port)  # idempotent
        await proxy.add_toxic("city", LatencyFault(latency_ms=1))
        await proxy.remove_toxic("city", FaultKind.LATENCY)
        await proxy.add_toxic("city", LatencyFault(latency_ms=1))
        await proxy.clear_route("city")
        assert proxy.route("city").toxics == []
        with pytest.raises(ProxyError, match="leads to"):
            await proxy.route_for("other", None, ("127.0.0.1", port + 1))
