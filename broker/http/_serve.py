"""Serving an ASGI app with uvicorn inside the caller's event loop (the cloud's, or `tcu-sim up`'s).

The listening socket is bound before `serve_http` returns, so its URL (also with port 0: a free port) is known
and connections queue from then on. uvicorn's signal handling is left out: the process's own Ctrl-C handling
(the CLI's) stops the server by leaving the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import structlog
import uvicorn
from starlette.types import ASGIApp

from tcu_sim._aio import cancel_and_wait

__all__ = ["HttpServer", "is_loopback", "serve_http"]

log = structlog.get_logger("broker.http")


def is_loopback(host: str) -> bool:
    """True for a loopback address or `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class HttpServer:
    """Where a server listens."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """`http://HOST:PORT` (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the embedding process handles its signals


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def serve_http(app: ASGIApp, host: str, port: int, *, name: str = "http") -> AsyncIterator[HttpServer]:
    """Serve `app` on `host:port` (0: a free port) until exit; OSError when the address cannot be bound."""
    sock = _bind(host, port)
    bound = HttpServer(host, sock.getsockname()[1])
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", server_header=False,
        timeout_keep_alive=5, timeout_graceful_shutdown=1, limit_concurrency=1000,
        h11_max_incomplete_event_size=16_384,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{name}[{bound.port}]")
    log.info("http.listening", url=bound.url)
    try:
        yield bound
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(task)
        except Exception as exc:  # stuck or failed: it is cancelled below; the stop goes on
            log.warning("http.stop_failed", error_type=type(exc).__name__)
        finally:
            if not task.done():
                await cancel_and_wait([task], timeout=2)
            sock.close()
        log.info("http.stopped", url=bound.url)
