"""Transport limits of the HTTP server, as plain ASGI middleware (streaming responses pass untouched):

- `BodyLimit`: a request body larger than `max_bytes` is answered 413 before the application sees it;
- `RateLimit`: each client address has a token bucket on the given clock; an empty bucket is answered 429
  `RATE_LIMITED` with `retry_after_s`. The cloud's own per-user command limit (SPEC §2.5) applies on top.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tcu_sim.clock import Clock

__all__ = ["BodyLimit", "RateLimit"]

_PROBLEM = b"application/problem+json"


async def _send_problem(send: Send, status: int, code: str, detail: str, **extra: Any) -> None:
    body = json.dumps(
        {"type": f"urn:tcu-sim:error:{code}", "title": code, "status": status, "detail": detail, "code": code, **extra}
    ).encode()
    headers = [(b"content-type", _PROBLEM), (b"content-length", str(len(body)).encode())]
    if "retry_after_s" in extra:
        headers.append((b"retry-after", str(max(1, math.ceil(extra["retry_after_s"]))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over `max_bytes` (by Content-Length, or as they arrive)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._too_large(send)
                return
        # Read the body here (it is small by now) and hand it on whole.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _send_problem(send, 413, "INVALID_REQUEST", f"The request body is larger than {self.max_bytes} bytes.")


class RateLimit:
    """A token bucket per client address (the newest `max_clients` kept)."""

    def __init__(
        self, app: ASGIApp, *, clock: Clock, capacity: float, per_s: float, max_clients: int = 10_000
    ) -> None:
        self.app = app
        self.clock = clock
        self.capacity = capacity
        self.per_s = per_s
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)
        self.limited = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "?"
        wait = self._take(address)
        if wait > 0:
            self.limited += 1
            await _send_problem(send, 429, "RATE_LIMITED", "Too many requests. Please wait a moment.",
                                retry_after_s=round(wait, 3))
            return
        await self.app(scope, receive, send)

    def _take(self, address: str) -> float:
        """Take a token for `address`; 0 when there was one, else the seconds until there is."""
        now = self.clock.monotonic()
        tokens, at = self._buckets.pop(address, (self.capacity, now))
        tokens = min(self.capacity, tokens + max(0.0, now - at) * self.per_s)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.per_s
        self._buckets[address] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
