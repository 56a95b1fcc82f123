"""The Toxiproxy adapter, against an in-process server speaking Toxiproxy's HTTP API (faults_toxiproxy_fake: no
toxiproxy binary is installable here). The fake applies the toxics for real, so these tests also show that a
fault sent through the adapter acts on the traffic."""

from __future__ import annotations

import asyncio
import time

import pytest
from faults_kit import WAIT, echo_server
from faults_toxiproxy_fake import FakeToxiproxy

from tcu_sim.faults import (
    BlackHoleFault,
    Direction,
    FaultKind,
    LatencyFault,
    ToxiproxyClient,
    ToxiproxyError,
)


async def _round_trip(host: str, port: int, data: bytes = b"ping") -> float:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        started = time.monotonic()
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            assert await reader.readexactly(len(data)) == data
        return time.monotonic() - started
    finally:
        writer.close()


async def test_routes_and_toxics_through_the_http_api() -> None:
    fake = FakeToxiproxy()
    async with echo_server() as upstream, fake.running() as url:
        client = ToxiproxyClient(url)
        assert await client.version() == "2.9.0-fake"
        host, port = await client.open_route("leon", upstream=("127.0.0.1", upstream))
        assert await client.open_route("leon", upstream=("127.0.0.1", upstream)) == (host, port)  # exists: 409
        assert await client.listen_address("leon") == (host, port)
        assert "tcu-sim-leon" in await client.proxies()

        await client.add_toxic("leon", LatencyFault(latency_ms=80))
        assert sorted(fake.toxics["tcu-sim-leon"]) == ["tcu-sim-latency-downstream", "tcu-sim-latency-upstream"]
        assert await _round_trip(host, port) >= 0.16  # the proxy really holds the bytes, both ways

        await client.add_toxic("leon", LatencyFault(latency_ms=5, jitter_ms=1))  # same kind again: updated
        assert fake.toxics["tcu-sim-leon"]["tcu-sim-latency-upstream"]["attributes"] == {"latency": 5, "jitter": 1}

        await client.remove_toxic("leon", FaultKind.LATENCY, Direction.UPSTREAM)
        assert list(fake.toxics["tcu-sim-leon"]) == ["tcu-sim-latency-downstream"]
        await client.remove_toxic("leon", FaultKind.BLACK_HOLE)  # none there: fine

        await client.add_toxic("leon", BlackHoleFault(direction=Direction.DOWNSTREAM))
        await client.set_enabled("leon", False)
        await client.clear_route("leon")
        assert fake.toxics["tcu-sim-leon"] == {}
        assert fake.proxies["tcu-sim-leon"]["enabled"] is True
        assert await _round_trip(host, port) < 2.0

        await client.reset()
        await client.delete_route("leon")
        assert fake.proxies == {}


async def test_changed_upstream_is_updated_and_route_for_is_open_route() -> None:
    fake = FakeToxiproxy()
    async with echo_server() as first, echo_server() as second, fake.running() as url:
        client = ToxiproxyClient(url, prefix="run7-")
        await client.route_for("city", "city", ("127.0.0.1", first))
        host, port = await client.route_for("city", "city", ("127.0.0.1", second))
        assert fake.proxies["run7-city"]["upstream"] == f"127.0.0.1:{second}"
        assert await _round_trip(host, port) < 2.0


async def test_errors_carry_the_status_and_the_servers_message() -> None:
    fake = FakeToxiproxy()
    async with fake.running() as url:
        client = ToxiproxyClient(url)
        with pytest.raises(ToxiproxyError, match="HTTP 404: proxy not found") as info:
            await client.add_toxic("nowhere", LatencyFault(latency_ms=1))
        assert info.value.status == 404
    with pytest.raises(ToxiproxyError, match="cannot reach"):
        await ToxiproxyClient(url, timeout=2).version()  # the server is gone
    with pytest.raises(ToxiproxyError, match="http://host:8474"):
        ToxiproxyClient("https://toxiproxy.example")
    assert repr(ToxiproxyClient(url)) == f"ToxiproxyClient({url!r}, prefix='tcu-sim-')"
