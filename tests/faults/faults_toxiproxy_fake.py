"""A small in-process stand-in for a Toxiproxy server (no toxiproxy binary is packaged for this system: not in
Debian's archive, not on PyPI). It speaks the subset of Toxiproxy's HTTP API that `ToxiproxyClient` uses, with
the same status codes, and really applies the toxics: every proxy is a route of a `FaultProxy`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from tcu_sim.faults import (
    BandwidthFault,
    BlackHoleFault,
    DataLimitFault,
    Direction,
    FaultProxy,
    LatencyFault,
    ResetFault,
    SlicerFault,
    Toxic,
)


def _toxic(body: dict[str, Any]) -> Toxic:
    """The fault proxy toxic for a Toxiproxy toxic object."""
    a = body.get("attributes", {})
    direction = Direction(body.get("stream", "downstream"))
    typ = body["type"]
    if typ == "latency":
        return LatencyFault(latency_ms=a.get("latency", 0), jitter_ms=a.get("jitter", 0), direction=direction)
    if typ == "bandwidth":
        return BandwidthFault(rate_kb_s=a["rate"], direction=direction)
    if typ == "timeout":
        return BlackHoleFault(close_after_ms=a.get("timeout") or None, direction=direction)
    if typ == "reset_peer":
        return ResetFault(after_ms=a.get("timeout", 0), direction=direction)
    if typ == "slicer":
        return SlicerFault(average_size=a["average_size"], size_variation=a.get("size_variation", 0),
                           delay_us=a.get("delay", 0), direction=direction)
    if typ == "limit_data":
        return DataLimitFault(bytes=a["bytes"], direction=direction)
    raise ValueError(f"unknown toxic type {typ}")


class FakeToxiproxy:
    """Proxies by name, each a one-route `FaultProxy`; `requests` records every call (method, path)."""

    def __init__(self) -> None:
        self.proxies: dict[str, dict[str, Any]] = {}
        self.toxics: dict[str, dict[str, dict[str, Any]]] = {}
        self._backends: dict[str, FaultProxy] = {}
        self.requests: list[tuple[str, str]] = []
        self.port = 0

    async def _open(self, name: str, upstream: str, listen: str) -> None:
        host, _, port = upstream.rpartition(":")
        backend = FaultProxy(host, int(port), host=listen.rpartition(":")[0] or "127.0.0.1", rng=random.Random(0))
        route = await backend.open_route(name, port=int(listen.rpartition(":")[2] or 0))
        self._backends[name] = backend
        self.proxies[name] = {"name": name, "listen": f"{route.host}:{route.port}", "upstream": upstream,
                              "enabled": True}
        self.toxics[name] = {}

    def _apply(self, name: str) -> None:
        route = self._backends[name].route(name)
        route._toxics.clear()  # the fake rebuilds the route's toxics from its toxic objects
        for body in self.toxics[name].values():
            route.add(_toxic(body))
        if self.proxies[name]["enabled"]:
            route.enable()
        else:
            route.disable()

    async def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path))
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts == ["version"]:
            return 200, {"version": "2.9.0-fake"}
        if parts == ["reset"] and method == "POST":
            for name in self.proxies:
                self.toxics[name] = {}
                self.proxies[name]["enabled"] = True
                self._apply(name)
            return 204, None
        if parts == ["proxies"]:
            if method == "GET":
                return 200, {n: {**p, "toxics": list(self.toxics[n].values())} for n, p in self.proxies.items()}
            if body["name"] in self.proxies:
                return 409, {"error": "proxy already exists", "status": 409}
            await self._open(body["name"], body["upstream"], body.get("listen", "127.0.0.1:0"))
            return 201, self.proxies[body["name"]]
        if len(parts) < 2 or parts[0] != "proxies" or parts[1] not in self.proxies:
            return 404, {"error": "proxy not found", "status": 404}
        name = parts[1]
        if len(parts) == 2:
            if method == "GET":
                return 200, {**self.proxies[name], "toxics": list(self.toxics[name].values())}
            if method == "DELETE":
                await self._backends.pop(name).close()
                del self.proxies[name], self.toxics[name]
                return 204, None
            if "upstream" in body and body["upstream"] != self.proxies[name]["upstream"]:
                await self._backends.pop(name).close()
                await self._open(name, body["upstream"], self.proxies[name]["listen"])
            if "enabled" in body:
                self.proxies[name]["enabled"] = bool(body["enabled"])
            self._apply(name)
            return 200, self.proxies[name]
        toxics = self.toxics[name]
        if len(parts) == 3 and parts[2] == "toxics":
            if method == "GET":
                return 200, list(toxics.values())
            toxic_name = body.get("name") or f"{body['type']}_{body.get('stream', 'downstream')}"
            if toxic_name in toxics:
                return 409, {"error": "toxic already exists", "status": 409}
            toxics[toxic_name] = {**body, "name": toxic_name}
            self._apply(name)
            return 200, toxics[toxic_name]
        if len(parts) == 4 and parts[2] == "toxics":
            toxic_name = parts[3]
            if toxic_name not in toxics:
                return 404, {"error": "toxic not found", "status": 404}
            if method == "DELETE":
                del toxics[toxic_name]
                self._apply(name)
                return 204, None
            if method == "POST":
                toxics[toxic_name]["attributes"] = {**toxics[toxic_name]["attributes"], **body["attributes"]}
                self._apply(name)
                return 200, toxics[toxic_name]
            return 200, toxics[toxic_name]
        return 404, {"error": "not found", "status": 404}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await reader.readline()).decode().split()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            status, reply = await self.handle(request[0], request[1], json.loads(raw) if raw else {})
            payload = b"" if reply is None else json.dumps(reply).encode()
            head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + payload)
            await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve the API on a free loopback port; yields its URL."""
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            server.close()
            await server.wait_closed()
            await self.close()
