"""The same transport faults through a Toxiproxy server's HTTP API (https://github.com/Shopify/toxiproxy).

    client = ToxiproxyClient("http://127.0.0.1:8474")
    host, port = await client.open_route("leon", upstream=("127.0.0.1", 8883))   # proxy "tcu-sim-leon"
    await client.add_toxic("leon", LatencyFault(latency_ms=300, jitter_ms=50))
    await client.remove_toxic("leon", FaultKind.LATENCY)

Toxics map one to one: latency → `latency` {latency, jitter}; bandwidth → `bandwidth` {rate, KB/s}; black hole
→ `timeout` {timeout: 0, or the close delay}; reset → `reset_peer` {timeout}; slicer → `slicer` {average_size,
size_variation, delay in µs}; data limit → `limit_data` {bytes}. A fault in both directions becomes two toxics,
`tcu-sim-<kind>-upstream` and `-downstream`. Toxiproxy's attributes are integers: values are rounded up so that
a non-zero fault never becomes zero.

The client speaks HTTP/1.1 itself over asyncio streams (JSON in, JSON out, one connection per request), so it
needs no HTTP library; every request has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from ._errors import ToxiproxyError
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

__all__ = ["ToxiproxyClient", "toxiproxy_toxics"]

_MAX_RESPONSE = 4 * 1024 * 1024
_STREAMS = {Direction.UPSTREAM: ("upstream",), Direction.DOWNSTREAM: ("downstream",),
            Direction.BOTH: ("upstream", "downstream")}


def _ceil(value: float) -> int:
    return math.ceil(value) if value > 0 else 0


def _type_and_attributes(toxic: Toxic) -> tuple[str, dict[str, int]]:
    match toxic:
        case LatencyFault():
            return "latency", {"latency": _ceil(toxic.latency_ms), "jitter": _ceil(toxic.jitter_ms)}
        case BandwidthFault():
            return "bandwidth", {"rate": max(1, _ceil(toxic.rate_kb_s))}
        case BlackHoleFault():
            return "timeout", {"timeout": _ceil(toxic.close_after_ms or 0)}
        case ResetFault():
            return "reset_peer", {"timeout": _ceil(toxic.after_ms)}
        case SlicerFault():
            return "slicer", {
                "average_size": toxic.average_size,
                "size_variation": toxic.size_variation,
                "delay": toxic.delay_us,
            }
        case DataLimitFault():
            return "limit_data", {"bytes": toxic.bytes}
    raise AssertionError(f"not a toxic: {toxic!r}")  # pragma: no cover - Toxic is a closed union


def _toxic_name(kind: FaultKind, stream: str) -> str:
    return f"tcu-sim-{kind.value}-{stream}"


def toxiproxy_toxics(toxic: Toxic) -> list[dict[str, Any]]:
    """The Toxiproxy toxic objects (`POST /proxies/{proxy}/toxics` bodies) that stand for `toxic`."""
    typ, attributes = _type_and_attributes(toxic)
    return [
        {"name": _toxic_name(toxic.kind, stream), "type": typ, "stream": stream, "toxicity": 1.0,
         "attributes": attributes}
        for stream in _STREAMS[toxic.direction]
    ]


class ToxiproxyClient:
    """A Toxiproxy server's HTTP API, as a transport backend for `FleetFaults` and for `tcu-sim fault`.

    Route names become proxy names with `prefix` in front (`tcu-sim-leon`), so several runs can share one
    Toxiproxy without touching each other's proxies.
    """

    def __init__(self, url: str = "http://127.0.0.1:8474", *, prefix: str = "tcu-sim-", timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ToxiproxyError(f"Toxiproxy URL must look like http://host:8474, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 8474
        self.prefix = prefix
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ToxiproxyClient({self.url!r}, prefix={self.prefix!r})"

    def proxy_name(self, route: str) -> str:
        """The Toxiproxy proxy that stands for route `route`."""
        return f"{self.prefix}{route}"

    # --- the API ------------------------------------------------------------------------------------------
    async def version(self) -> str:
        """The server's version (also a cheap "is it there" check)."""
        _, body = await self._request("GET", "/version")
        if isinstance(body, Mapping):
            return str(body.get("version", body))
        return str(body)

    async def proxies(self) -> dict[str, Any]:
        """Every proxy on the server, by name."""
        _, body = await self._request("GET", "/proxies")
        return dict(body) if isinstance(body, Mapping) else {}

    async def open_route(
        self, route: str, *, upstream: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> tuple[str, int]:
        """Make sure a proxy for `route` exists (listening on `listen`, port 0: the server picks one) towards
        `upstream`; its listen address."""
        name = self.proxy_name(route)
        wanted_upstream = f"{upstream[0]}:{upstream[1]}"
        body = {"name": name, "listen": f"{listen[0]}:{listen[1]}", "upstream": wanted_upstream, "enabled": True}
        status, proxy = await self._request("POST", "/proxies", body, accept=(201, 409))
        if status == 409:
            _, proxy = await self._request("GET", f"/proxies/{quote(name)}")
            if isinstance(proxy, Mapping) and proxy.get("upstream") != wanted_upstream:
                _, proxy = await self._request("POST", f"/proxies/{quote(name)}", {"upstream": wanted_upstream})
        if not isinstance(proxy, Mapping) or not isinstance(proxy.get("listen"), str):
            raise ToxiproxyError(f"proxy {name}: the server sent no listen address")
        host, _, port = str(proxy["listen"]).rpartition(":")
        return (host.strip("[]") or "127.0.0.1", int(port))

    async def route_for(self, name: str, group: str | None, upstream: tuple[str, int]) -> tuple[str, int]:
        """`open_route` as a `FleetFaults` transport backend."""
        return await self.open_route(name, upstream=upstream)

    async def listen_address(self, route: str) -> tuple[str, int]:
        """Where cars of `route` connect."""
        _, proxy = await self._request("GET", f"/proxies/{quote(self.proxy_name(route))}")
        host, _, port = str(proxy.get("listen", "")).rpartition(":") if isinstance(proxy, Mapping) else ("", "", "")
        if not port.isdigit():
            raise ToxiproxyError(f"proxy {self.proxy_name(route)}: no listen address")
        return (host.strip("[]") or "127.0.0.1", int(port))

    async def set_enabled(self, route: str, enabled: bool) -> None:
        """Take the proxy down (connections closed and refused) or bring it back (Toxiproxy's `down`)."""
        await self._request("POST", f"/proxies/{quote(self.proxy_name(route))}", {"enabled": enabled})

    async def add_toxic(self, route: str, toxic: Toxic) -> None:
        """Put `toxic` in force on the route's proxy (replacing the same kind in the same direction)."""
        base = f"/proxies/{quote(self.proxy_name(route))}/toxics"
        for body in toxiproxy_toxics(toxic):
            status, _ = await self._request("POST", base, body, accept=(200, 409))
            if status == 409:  # exists: update its attributes in place
                await self._request("POST", f"{base}/{quote(body['name'])}", {"attributes": body["attributes"]})

    async def remove_toxic(self, route: str, kind: FaultKind, direction: Direction | None = None) -> None:
        """Take the toxics of `kind` (in `direction`, or both) off the route's proxy."""
        base = f"/proxies/{quote(self.proxy_name(route))}/toxics"
        for stream in _STREAMS[direction or Direction.BOTH]:
            await self._request("DELETE", f"{base}/{quote(_toxic_name(kind, stream))}", accept=(204, 200, 404))

    async def clear_route(self, route: str) -> None:
        """Take every toxic off the route's proxy and enable it."""
        name = quote(self.proxy_name(route))
        _, toxics = await self._request("GET", f"/proxies/{name}/toxics")
        for toxic in toxics if isinstance(toxics, list) else []:
            if isinstance(toxic, Mapping) and isinstance(toxic.get("name"), str):
                await self._request("DELETE", f"/proxies/{name}/toxics/{quote(toxic['name'])}", accept=(204, 200, 404))
        await self.set_enabled(route, True)

    async def delete_route(self, route: str) -> None:
        """Delete the route's proxy."""
        await self._request("DELETE", f"/proxies/{quote(self.proxy_name(route))}", accept=(204, 200, 404))

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic on the server (all runs' ones)."""
        await self._request("POST", "/reset", accept=(204, 200))

    async def close(self) -> None:
        """Nothing to release (one connection per request); here so both backends close the same way."""

    # --- HTTP ------------------------------------------------------------------------------------------------
    async def _request(
        self, method: str, path: str, body: Any = None, *, accept: tuple[int, ...] = (200, 201, 204)
    ) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "User-Agent: tcu-sim",
            "Accept: application/json",
            "Connection: close",
            f"Content-Length: {len(payload)}",
        ]
        if body is not None:
            lines.append("Content-Type: application/json")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                try:
                    writer.write(request)
                    await writer.drain()
                    status, raw = await _read_response(reader)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError:
            raise ToxiproxyError(f"{method} {path}: no answer from {self.url} within {self.timeout:g} s") from None
        except OSError as exc:
            raise ToxiproxyError(f"{method} {path}: cannot reach {self.url}: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            data = raw.decode("utf-8", "replace")
        if status not in accept:
            message = data.get("error") if isinstance(data, Mapping) else data
            raise ToxiproxyError(f"{method} {path}: HTTP {status}: {message}", status=status)
        return status, data


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ToxiproxyError(f"not an HTTP response: {status_line[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readline()
            if len(body) > _MAX_RESPONSE:
                raise ToxiproxyError("response too large")
        return status, body
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > _MAX_RESPONSE:
            raise ToxiproxyError("response too large")
        return status, await reader.readexactly(length)
    return status, await reader.read(_MAX_RESPONSE)
