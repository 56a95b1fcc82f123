"""Command round trip as the cloud sends it: signed commands to random cars, timed until the signed result.

The driver holds the cloud's signing key (from the state directory), signs each command for one car (`aud` =
VIN, a `seq` above anything that car accepted before), publishes it on `tcu/{vin}/commands` at a fixed rate,
and stops the clock when the car's `succeeded` result, verified with the fleet JWKS, arrives on
`tcu/{vin}/results`. There is no cloud handler in this path: it measures broker, car and signing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiomqtt

from broker.mosquitto import MosquittoBroker
from tcu_sim.clock import SystemClock
from tcu_sim.fleet import StateDir
from tcu_sim.protocol import (
    CLOUD,
    Command,
    CommandOp,
    CommandResult,
    MessageType,
    ProtocolError,
    ResultState,
    Signer,
    TopicKind,
    Topics,
    Verifier,
    parse_body,
)

__all__ = ["RoundTrips", "drive_commands"]

_FINAL = {ResultState.SUCCEEDED, ResultState.FAILED, ResultState.REJECTED}


@dataclass(slots=True)
class RoundTrips:
    """What a command run measured: round trips of commands that succeeded, and how the others ended."""

    sent: int = 0
    rtts_s: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    bad_results: int = 0
    send_s: float = 0.0
    #: Where the time goes (seconds, by the host clock the car stamps its results with): "to_car" from sending
    #: until the car's `accepted`, "in_car" from `accepted` to `succeeded`, "back" from `succeeded` until here.
    phases: dict[str, list[float]] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return len(self.rtts_s)


async def drive_commands(
    broker: MosquittoBroker,
    state: StateDir,
    vins: Sequence[str],
    *,
    rate_per_s: float,
    count: int,
    rng: random.Random,
    result_timeout_s: float = 10.0,
    client_id: str = "bench-driver",
    topics: Topics | None = None,
) -> RoundTrips:
    """Send `count` signed `honk_and_flash` (flash) commands at `rate_per_s` to random cars of `vins`; time each
    until its verified `succeeded` result. Commands without a final result after `result_timeout_s` are lost."""
    topics = topics or Topics()
    clock = SystemClock()
    signer = Signer(state.load_cloud_signing_key(), issuer=CLOUD, clock=clock)
    verifier = Verifier(state.load_fleet_keys(), audience=CLOUD, clock=clock)
    # Each car keeps the highest command seq it accepted (on disk): microseconds since the epoch are above any
    # seq an earlier run of this state directory used, and grow with every command.
    seq_base = time.time_ns() // 1000
    pending: dict[str, tuple[float, asyncio.Future[float | None]]] = {}
    sent_wall: dict[str, float] = {}
    accepted_at: dict[str, float] = {}
    out = RoundTrips()
    loop = asyncio.get_running_loop()

    def on_result(vin: str, payload: bytes) -> None:
        try:
            verified = verifier.verify(payload, typ=MessageType.RESULT, issuer=vin, kid=vin)
            result = parse_body(CommandResult, verified.body)
        except ProtocolError:
            out.bad_results += 1
            return
        if result.state is ResultState.ACCEPTED:
            accepted_at[result.command_id] = result.at
            return
        if result.state not in _FINAL:
            return
        entry = pending.get(result.command_id)
        if entry is None or entry[1].done():
            return
        sent_at, future = entry
        out.outcomes[str(result.state)] += 1
        accepted = accepted_at.pop(result.command_id, None)
        sent = sent_wall.pop(result.command_id, None)
        if accepted is not None and sent is not None:
            out.phases.setdefault("to_car", []).append(accepted - sent)
            out.phases.setdefault("in_car", []).append(result.at - accepted)
            out.phases.setdefault("back", []).append(time.time() - result.at)
        future.set_result(time.perf_counter() - sent_at if result.state is ResultState.SUCCEEDED else None)

    async with broker.client(
        client_id, protocol=aiomqtt.ProtocolVersion.V311, clean_session=True, timeout=10,  # its own certificate
        # Nagle's algorithm would hold a command back until the broker acknowledged the previous packet.
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    ) as client:
        await client.subscribe(topics.all_tcu(TopicKind.RESULTS), qos=1)

        async def read() -> None:
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes):
                    with contextlib.suppress(ProtocolError):
                        on_result(topics.parse(str(message.topic)).key, payload)

        reader = asyncio.create_task(read(), name="bench.driver.results")
        try:
            started = time.perf_counter()
            for i in range(count):
                # Absolute schedule: a slow publish does not shift every later command.
                delay = started + i / rate_per_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                vin = rng.choice(vins)
                command_id = f"bench-{seq_base}-{i}"
                body = Command(command_id=command_id, op=CommandOp.HONK_AND_FLASH,
                               params={"mode": "flash", "duration_s": 1})
                token = signer.sign(MessageType.COMMAND, aud=vin, seq=seq_base + i, body=body)
                pending[command_id] = (time.perf_counter(), loop.create_future())
                sent_wall[command_id] = time.time()
                await client.publish(topics.commands(vin), token.encode(), qos=1)
                out.sent += 1
            out.send_s = time.perf_counter() - started
            futures = [future for _, future in pending.values()]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(result_timeout_s):
                    await asyncio.gather(*futures)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
    for _, future in pending.values():
        if not future.done():
            out.lost += 1
        elif (rtt := future.result()) is not None:
            out.rtts_s.append(rtt)
    return out
