"""Small asyncio helpers shared by the long-lived components."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, timeout: float) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` and wait until they are done, for at most `timeout` seconds; return those still running.

    A task is cancelled again every second while it runs: Python 3.11's `asyncio.wait_for` (used inside aiomqtt)
    can swallow a cancellation that races a completing operation, and the task then carries on as if it had
    never been asked to stop. A single `cancel()` followed by an unbounded wait hung shutdowns that way.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {t for t in tasks if not t.done()}
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(1.0, remaining))
    return pending
