"""Recording a `LocalStack` from inside its process (`tcu-sim up --record OUT`, tests): the recorder identity's
certificate from the stack's PKI, the stack's own clock for the virtual times, the fleet file in the header."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from broker.pki import RECORDER
from tcu_sim._version import __version__
from tcu_sim.record._format import Header, RecordingWriter
from tcu_sim.record._recorder import Recorder
from tcu_sim.record._redact import UserSecrets
from tcu_sim.stack import LocalStack

__all__ = ["record_stack"]


@contextlib.asynccontextmanager
async def record_stack(
    stack: LocalStack, path: Path, *, fleet_file: Path | None, timeout: float = 10.0
) -> AsyncIterator[Recorder]:
    """Record the running `stack` to `path` until exit (subscribed when this is entered)."""
    pki = stack.pki
    await asyncio.to_thread(pki.ensure_identity, RECORDER)
    device = stack.broker.device
    fleet = stack.fleet_config
    header = Header(
        fleet=str(fleet_file) if fleet_file is not None else None, seed=fleet.seed,
        started_at=time.time(), virtual_started_at=stack.clock.now(), fleet_name=fleet.name,
        topic_prefix=fleet.topic_prefix, tool=f"tcu-sim {__version__}",
    )
    users = [UserSecrets(u.email, u.password.get_secret_value(), u.spin.get_secret_value()) for u in fleet.users]
    writer = RecordingWriter(path, header)
    try:
        async with Recorder(
            device, pki.client_ssl_context(RECORDER) if device.tls else None, sink=writer, clock=stack.clock,
            users=users, topic_prefix=fleet.topic_prefix,
        ) as recorder:
            await recorder.wait_ready(timeout)
            yield recorder
    finally:
        writer.close()
