"""A TCP fault proxy between cars and the broker (asyncio, in-process), with Toxiproxy's toxics.

    async with FaultProxy("127.0.0.1", broker_port, rng=random.Random(7)) as proxy:
        route = await proxy.open_route("leon")            # a listener; cars of group leon connect to route.port
        route.add(LatencyFault(latency_ms=300, jitter_ms=50))
        route.add(BlackHoleFault())                        # toggled live: existing connections are affected
        route.remove(FaultKind.BLACK_HOLE)

Each route is one listener (per car or per group). A connection accepted on it is joined to a new upstream
connection, and each direction runs two tasks: a reader that applies the chunk-level toxics (black hole, data
limit, latency with jitter — order is always kept) and puts the chunk on a bounded queue, and a writer that
waits for the chunk's delivery time and writes it, sliced and rate-limited as the current toxics say. TLS passes
through untouched: the car's handshake is with the broker.

Proxy time is network time (`asyncio` loop time), not the simulation clock: a 300 ms latency is 300 real
milliseconds whatever the time scale of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import structlog

from ._errors import ProxyError
from ._spec import (
    BandwidthFault,
    BlackHoleFault,
    DataLimitFault,
    Direction,
    FaultKind,
    LatencyFault,
    ResetFault,
    SlicerFault,
    Toxic,
)

__all__ = ["FaultProxy", "ProxyRoute", "RouteStats"]

log = structlog.get_logger("tcu_sim.faults.proxy")

_CHUNK = 65_536
_QUEUE = 64  # chunks in flight per direction; a full queue stops reading (back-pressure to the sender)
_CONNECT_TIMEOUT_S = 10.0


@dataclass(slots=True)
class RouteStats:
    """What went through one route."""

    connections: int = 0
    active: int = 0
    refused: int = 0
    upstream_failures: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    dropped_bytes: int = 0
    resets: int = 0
    closed_by_limit: int = 0


class ProxyRoute:
    """One listener of the proxy and the toxics on it (keyed by kind and direction, so adding one replaces the
    same kind in the same direction)."""

    def __init__(self, proxy: FaultProxy, name: str, group: str | None) -> None:
        self.proxy = proxy
        self.name = name
        self.group = group
        self.host = proxy.host
        self.port = 0
        self.enabled = True
        self.stats = RouteStats()
        self._toxics: dict[tuple[FaultKind, Direction], Toxic] = {}
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()

    def __repr__(self) -> str:
        toxics = ", ".join(f"{k.value}/{d.value}" for k, d in self._toxics) or "none"
        return f"ProxyRoute({self.name!r}, {self.host}:{self.port}, links={len(self._links)}, toxics=[{toxics}])"

    @property
    def toxics(self) -> list[Toxic]:
        """The toxics in force, in the order they were added."""
        return list(self._toxics.values())

    # --- control ------------------------------------------------------------------------------------------
    def add(self, toxic: Toxic) -> None:
        """Put a toxic in force (replacing one of the same kind and direction); it acts on open connections too."""
        self._toxics[(toxic.kind, toxic.direction)] = toxic
        if isinstance(toxic, ResetFault):
            for link in list(self._links):
                link.schedule_reset(toxic.after_ms)
        elif isinstance(toxic, BlackHoleFault) and toxic.close_after_ms is not None:
            for link in list(self._links):
                link.schedule_close(toxic.close_after_ms)

    def remove(self, kind: FaultKind, direction: Direction | None = None) -> bool:
        """Take toxics of `kind` (in `direction`, or any) out of force; whether one was."""
        keys = [key for key in self._toxics if key[0] is kind and (direction is None or key[1] is direction)]
        for key in keys:
            del self._toxics[key]
        return bool(keys)

    def clear(self) -> None:
        """Take every toxic out of force and enable the route."""
        self._toxics.clear()
        self.enabled = True

    def disable(self) -> None:
        """Take the route down: open connections are closed, new ones closed at once (Toxiproxy's `enabled`)."""
        self.enabled = False
        for link in list(self._links):
            link.close()

    def enable(self) -> None:
        """Bring the route back up."""
        self.enabled = True

    def active(self, upstream: bool) -> list[Toxic]:
        """The toxics acting on data flowing upstream (car → broker) or downstream."""
        return [t for t in self._toxics.values() if t.direction.covers(upstream)]

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def start(self, port: int = 0) -> None:
        try:
            self._server = await asyncio.start_server(self._accept, self.host, port)
        except OSError as exc:
            raise ProxyError(f"route {self.name!r}: cannot listen on {self.host}:{port}: {exc}") from exc
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every connection."""
        for link in list(self._links):
            link.close()
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await server.wait_closed()
        for link in list(self._links):
            await link.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.enabled:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                up_reader, up_writer = await asyncio.open_connection(*self.proxy.upstream)
        except (OSError, TimeoutError) as exc:
            self.stats.upstream_failures += 1
            log.info("proxy upstream unreachable", route=self.name, error=str(exc) or type(exc).__name__)
            writer.transport.abort()
            return
        _nodelay(writer)
        _nodelay(up_writer)
        link = _Link(self, reader, writer, up_reader, up_writer)
        self._links.add(link)
        self.stats.connections += 1
        self.stats.active += 1
        link.start()
        for toxic in self._toxics.values():
            if isinstance(toxic, ResetFault):
                link.schedule_reset(toxic.after_ms)
            elif isinstance(toxic, BlackHoleFault) and toxic.close_after_ms is not None:
                link.schedule_close(toxic.close_after_ms)

    def _forget(self, link: _Link) -> None:
        if link in self._links:
            self._links.discard(link)
            self.stats.active -= 1


class _Link:
    """One proxied connection: car side and broker side, a pipe each way."""

    def __init__(
        self,
        route: ProxyRoute,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        self.route = route
        self._writers = (writer, up_writer)
        self._pipes = (_Pipe(self, reader, up_writer, upstream=True), _Pipe(self, up_reader, writer, upstream=False))
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._closed = asyncio.Event()

    def start(self) -> None:
        name = self.route.name
        for pipe in self._pipes:
            way = "up" if pipe.upstream else "down"
            self._tasks.append(asyncio.create_task(pipe.read_loop(), name=f"proxy[{name}].{way}.read"))
            self._tasks.append(asyncio.create_task(pipe.write_loop(), name=f"proxy[{name}].{way}.write"))

    def schedule_reset(self, after_ms: float) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(after_ms / 1000, self.reset))

    def schedule_close(self, after_ms: float) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(after_ms / 1000, self.close))

    def reset(self) -> None:
        """Close both sides with a TCP RST (SO_LINGER 0), as `reset_peer` does."""
        if self._closed.is_set():
            return
        self.route.stats.resets += 1
        for writer in self._writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._finish()

    def close(self) -> None:
        """Close both sides (FIN)."""
        if self._closed.is_set():
            return
        for writer in self._writers:
            writer.transport.close()
        self._finish()

    def _finish(self) -> None:
        self._closed.set()
        for timer in self._timers:
            timer.cancel()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self.route._forget(self)

    async def wait_closed(self) -> None:
        await self._closed.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _Pipe:
    """One direction of a link: read, apply the chunk toxics, queue; deliver on time, sliced and rate-limited."""

    def __init__(
        self, link: _Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        self.link = link
        self.source = source
        self.sink = sink
        self.upstream = upstream
        self.passed = 0  # bytes forwarded, for the data limit
        self._queue: asyncio.Queue[tuple[float, bytes, bool]] = asyncio.Queue(_QUEUE)
        self._last_delivery = 0.0

    async def read_loop(self) -> None:
        route = self.link.route
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self.source.read(_CHUNK)
                if not data:
                    break  # EOF from this side: MQTT never half-closes, so the link ends
                toxics = route.active(self.upstream)
                if any(isinstance(t, BlackHoleFault) for t in toxics):
                    route.stats.dropped_bytes += len(data)
                    continue
                last = False
                limit = next((t for t in toxics if isinstance(t, DataLimitFault)), None)
                if limit is not None and self.passed + len(data) >= limit.bytes:
                    data = data[: max(0, limit.bytes - self.passed)]
                    last = True
                self.passed += len(data)
                delay = 0.0
                latency = next((t for t in toxics if isinstance(t, LatencyFault)), None)
                if latency is not None:
                    jitter = route.proxy.rng.uniform(-latency.jitter_ms, latency.jitter_ms)
                    delay = max(0.0, latency.latency_ms + jitter) / 1000
                # Never deliver before the previous chunk: a byte stream keeps its order.
                deliver_at = max(self._last_delivery, loop.time() + delay)
                self._last_delivery = deliver_at
                await self._queue.put((deliver_at, data, last))
                if last:
                    route.stats.closed_by_limit += 1
                    return
        except (ConnectionError, OSError):
            pass
        await self._queue.put((self._last_delivery, b"", True))

    async def write_loop(self) -> None:
        route = self.link.route
        loop = asyncio.get_running_loop()
        try:
            while True:
                deliver_at, data, last = await self._queue.get()
                wait = deliver_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data:
                    await self._write(data)
                    if self.upstream:
                        route.stats.bytes_up += len(data)
                    else:
                        route.stats.bytes_down += len(data)
                if last:
                    break
        except (ConnectionError, OSError):
            pass
        self.link.close()

    async def _write(self, data: bytes) -> None:
        toxics = self.link.route.active(self.upstream)
        slicer = next((t for t in toxics if isinstance(t, SlicerFault)), None)
        bandwidth = next((t for t in toxics if isinstance(t, BandwidthFault)), None)
        pieces = [data] if slicer is None else _slices(data, slicer, self.link.route.proxy.rng)
        for i, piece in enumerate(pieces):
            if i and slicer is not None and slicer.delay_us:
                await asyncio.sleep(slicer.delay_us / 1_000_000)
            if bandwidth is not None:  # the piece takes this long to get through the narrow link
                await asyncio.sleep(len(piece) / (bandwidth.rate_kb_s * 1000))
            self.sink.write(piece)
            await self.sink.drain()


def _slices(data: bytes, slicer: SlicerFault, rng: random.Random) -> list[bytes]:
    pieces = []
    pos = 0
    while pos < len(data):
        low = max(1, slicer.average_size - slicer.size_variation)
        size = rng.randint(low, slicer.average_size + slicer.size_variation)
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FaultProxy:
    """The in-process fault proxy: named routes (listeners) to one upstream, each with its own toxics.

    Also a transport backend for `FleetFaults` (`open_route`, `add_toxic`, `remove_toxic`, `clear_route`,
    `close`), like `ToxiproxyClient`.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", rng: random.Random | None = None
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        # Jitter and slice sizes come from a seeded stream, so a run with the same seed draws the same values.
        self.rng = rng or random.Random(0)
        self.routes: dict[str, ProxyRoute] = {}

    def __repr__(self) -> str:
        return f"FaultProxy(upstream={self.upstream[0]}:{self.upstream[1]}, routes={len(self.routes)})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open_route(self, name: str, *, group: str | None = None, port: int = 0) -> ProxyRoute:
        """A new listening route called `name` (or the existing one)."""
        route = self.routes.get(name)
        if route is None:
            route = ProxyRoute(self, name, group)
            await route.start(port)
            self.routes[name] = route
        return route

    def route(self, name: str) -> ProxyRoute:
        """The route called `name` (KeyError if none)."""
        return self.routes[name]

    # --- transport backend (see FleetFaults) ----------------------------------------------------------------
    async def route_for(self, name: str, group: str | None, upstream: tuple[str, int]) -> tuple[str, int]:
        """Make sure route `name` exists (the proxy has one upstream; `upstream` must be it)."""
        if upstream != self.upstream:
            raise ProxyError(f"route {name!r}: this proxy leads to {self.upstream}, not {upstream}")
        route = await self.open_route(name, group=group)
        return route.host, route.port

    async def listen_address(self, name: str) -> tuple[str, int]:
        """Where cars of route `name` connect."""
        route = self.routes[name]
        return route.host, route.port

    async def add_toxic(self, name: str, toxic: Toxic) -> None:
        """Put `toxic` in force on route `name`."""
        self.routes[name].add(toxic)

    async def remove_toxic(self, name: str, kind: FaultKind, direction: Direction | None = None) -> None:
        """Take toxics of `kind` off route `name`."""
        self.routes[name].remove(kind, direction)

    async def clear_route(self, name: str) -> None:
        """Take every toxic off route `name`."""
        self.routes[name].clear()

    async def close(self) -> None:
        """Close every route."""
        routes = list(self.routes.values())
        self.routes.clear()
        for route in routes:
            await route.close()
