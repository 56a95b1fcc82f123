"""The HTTP app API of the test cloud, served on a free loopback port, and a Server-Sent Events reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from broker.http import HttpApi, serve_http
from tcu_sim.testing import SimCloud


@dataclass(frozen=True)
class Served:
    api: HttpApi
    url: str


@pytest.fixture
async def http_api(cloud: SimCloud) -> AsyncIterator[Served]:
    api = HttpApi(cloud.handler)
    try:
        async with serve_http(api.app, "127.0.0.1", 0) as server:
            yield Served(api, server.url)
    finally:
        api.close()


@pytest.fixture
async def http(http_api: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=http_api.url, timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Sse:
    id: str | None
    event: str
    data: dict[str, Any]


class SseReader:
    """Reads `/api/v1/events` on a task into a queue; `next(pred)` awaits the first event matching."""

    def __init__(self, client: httpx.AsyncClient, token: str, last_event_id: str | None = None) -> None:
        self.client = client
        self.headers = bearer(token) | ({"Last-Event-ID": last_event_id} if last_event_id else {})
        self.queue: asyncio.Queue[Sse] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.status: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SseReader:
        self._task = asyncio.create_task(self._read(), name="test.sse")
        async with asyncio.timeout(10):
            await self.connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _read(self) -> None:
        async with self.client.stream("GET", "/api/v1/events", headers=self.headers, timeout=None) as response:
            self.status = response.status_code
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line.startswith(": connected"):
                    self.connected.set()
                elif line == "":
                    if "data" in fields:
                        await self.queue.put(Sse(fields.get("id"), fields.get("event", "message"),
                                                 json.loads(fields["data"])))
                    fields = {}
                elif not line.startswith(":") and ":" in line:
                    key, _, value = line.partition(":")
                    fields[key] = value.removeprefix(" ")
        self.connected.set()

    async def next(self, pred: Callable[[Sse], bool], timeout: float = 10) -> Sse:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.queue.get()
                if pred(event):
                    return event
