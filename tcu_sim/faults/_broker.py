"""Broker faults from outside the run: a local control socket beside the broker a run started.

A run that starts its own broker (`tcu-sim scenario run`, `tcu-sim up`) can open a `BrokerControl` on a Unix
socket in its state directory; `tcu-sim fault broker stop|kill|restart --state DIR` talks to it. A socket, not
MQTT: the broker it controls may be down.

    async with BrokerControl(mosquitto, state / "broker.sock"):
        ...                                    # meanwhile, in a shell: tcu-sim fault broker kill --state DIR

Protocol: one JSON line in (`{"action": "kill"}`), one JSON line out (`{"ok": true, "running": false}` or
`{"ok": false, "error": "..."}`). The socket file is created 0600: only its owner may break the broker.

Given the run's event stream, each stop, kill, start or restart done is published there as a `BrokerAction`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from tcu_sim.clock import Clock, SystemClock
from tcu_sim.events import BrokerAction, EventStream, Source

from ._errors import BrokerControlError
from ._fleet import ControllableBroker

__all__ = ["BROKER_ACTIONS", "BrokerControl", "broker_control"]

log = structlog.get_logger("tcu_sim.faults.broker")

BROKER_ACTIONS = ("stop", "kill", "start", "restart", "status")
_MAX_REQUEST = 4096


class BrokerControl:
    """Serves broker stop/kill/start/restart/status on a Unix socket (an async context manager)."""

    def __init__(
        self,
        broker: ControllableBroker,
        path: str | os.PathLike[str],
        *,
        on_action: Callable[[str], None] | None = None,
        events: EventStream | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.broker = broker
        self.path = Path(path)
        self.on_action = on_action
        self.events = events
        self._clock = clock or SystemClock()
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = "serving" if self._server is not None else "closed"
        return f"BrokerControl({str(self.path)!r}, {state}, requests={self.requests})"

    async def __aenter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a run that was killed
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readline()
            reply = await self.handle(line[:_MAX_REQUEST])
        except (TimeoutError, ConnectionError):
            reply = {"ok": False, "error": "no request"}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(self, line: bytes) -> dict[str, Any]:
        """Do what one request line asks; the reply."""
        try:
            request = json.loads(line)
            action = request["action"] if isinstance(request, dict) else None
        except (ValueError, KeyError):
            action = None
        if action not in BROKER_ACTIONS:
            return {"ok": False, "error": f"action must be one of {', '.join(BROKER_ACTIONS)}"}
        self.requests += 1
        async with self._lock:  # one broker action at a time: a restart must not race a kill
            try:
                if action != "status":
                    log.info("broker fault", action=action)
                    if self.on_action is not None:
                        self.on_action(action)
                    await getattr(self.broker, action)()
                    if self.events is not None:
                        self.events.publish(
                            BrokerAction(at=self._clock.now(), source=Source.FAULTS, action=action, detail="control")
                        )
            except Exception as exc:  # the broker's own error (e.g. start while running) goes back to the caller
                return {"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        return {"ok": True, "action": action, "running": bool(getattr(self.broker, "running", False))}


async def broker_control(path: str | os.PathLike[str], action: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """Ask the run behind the control socket at `path` to `action` its broker; BrokerControlError if it cannot."""
    if action not in BROKER_ACTIONS:
        raise BrokerControlError(f"action must be one of {', '.join(BROKER_ACTIONS)}, not {action!r}")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                writer.write(json.dumps({"action": action}).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except FileNotFoundError:
        raise BrokerControlError(
            f"{path}: no broker control socket (is a run that started its own broker using this state?)"
        ) from None
    except (ConnectionError, OSError) as exc:
        raise BrokerControlError(f"{path}: cannot reach the run: {exc.strerror or exc}") from None
    except TimeoutError:
        raise BrokerControlError(f"{path}: no answer within {timeout:g} s") from None
    try:
        reply = json.loads(line)
    except ValueError:
        raise BrokerControlError(f"{path}: unreadable answer") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else reply
        raise BrokerControlError(f"{path}: {action} failed: {error}")
    return reply
