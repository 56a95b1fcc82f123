"""A car's telematics unit on the network: its MQTT session, signed messages, command handling and outbox.

Lifecycle of one `TcuSession`:
- connect with client id = VIN, a retained last will `offline` on `tcu/{vin}/connection`, and a persistent session
  (so commands sent while the car is offline wait at the broker); on CONNACK publish retained `online`, subscribe to
  `tcu/{vin}/commands` and `sim/{vin}/control`, send a fresh status and then everything in the outbox;
- while connected, publish a status on every change and every `status_interval_s`, and an event for every change
  the vehicle reports;
- verify every command (pinned cloud key, `aud` = own VIN, `exp` by the car's own clock, `seq` above the last
  accepted one, persisted) and answer with signed results: `accepted` then `succeeded` / `failed`, or `rejected`
  with the reason — a refused command changes nothing;
- on a lost connection, keep what could not be sent in the outbox and reconnect with capped exponential backoff and
  full jitter.

The decisions (what a command does to the car) are the pure `tcu_sim.vehicle.Vehicle`; this module only moves
signed bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel

from tcu_sim.clock import Clock
from tcu_sim.events import CarCommandHandled, CarConnectFailed, CarConnection, CarControlHandled, EventStream, Source
from tcu_sim.protocol import (
    CLOUD,
    DEFAULT_ALGORITHMS,
    LEGACY_ALGORITHMS,
    Command,
    CommandResult,
    ControlAction,
    ControlMessage,
    ControlResult,
    Event,
    KeySet,
    MessageType,
    ProtocolError,
    RefusalReason,
    RejectReason,
    ResultState,
    Signer,
    SigningKey,
    Topics,
    Verifier,
    command_params,
    decode_json,
    encode_json,
    parse_body,
)
from tcu_sim.transport._backoff import Backoff
from tcu_sim.transport._flag import Flag
from tcu_sim.transport._link import BrokerAddress, ClientCertificate, LinkCallbacks, LinkPool, MqttLink
from tcu_sim.transport._outbox import Outbox, OutboxEntry
from tcu_sim.transport._seqstore import SeqStore
from tcu_sim.vehicle import Vehicle, VehicleError

__all__ = ["UNKNOWN_COMMAND_ID", "FaultHandler", "SessionStats", "TcuConfig", "TcuSession"]

UNKNOWN_COMMAND_ID = "unknown"  # in a `rejected` result when the refused command carried no readable id

log = structlog.get_logger("tcu_sim.tcu")

#: A status loop sleeping longer than this wakes early when a command or control changes the car.
_WAKEABLE_AFTER_S = 60.0

#: Takes a car's `fault` controls (`sim/{vin}/control`, action `fault`) with their params: the fleet's fault layer.
#: Returns None when it takes the fault, else why it refuses it (the car's reply on `sim/{vin}/control/results`).
FaultHandler = Callable[["TcuSession", dict[str, Any]], str | None]

_REJECT_REASONS: dict[RefusalReason, RejectReason] = {
    RefusalReason.BAD_SIGNATURE: RejectReason.BAD_SIGNATURE,
    RefusalReason.UNKNOWN_KEY: RejectReason.UNKNOWN_KEY,
    RefusalReason.WRONG_AUDIENCE: RejectReason.WRONG_AUDIENCE,
    RefusalReason.EXPIRED: RejectReason.EXPIRED,
    RefusalReason.REPLAYED: RejectReason.REPLAYED,
}


@dataclass(frozen=True, slots=True)
class TcuConfig:
    """How one car's TCU behaves on the network."""

    status_interval_s: float = 60.0
    clock_skew_allowance_s: float = 30.0
    #: Also accept commands signed as `alg: EdDSA` (RFC 8037, deprecated by RFC 9864) from a legacy cloud.
    legacy_eddsa: bool = False
    message_ttl_s: float = 300.0
    outbox_limit: int = 1000
    backoff: Backoff = field(default_factory=Backoff)
    topics: Topics = field(default_factory=Topics)


@dataclass(slots=True)
class SessionStats:
    """Counters a test, the live view or the benchmark can read."""

    connects: int = 0
    disconnects: int = 0
    #: Connection attempts that failed: no TCP/TLS connection, no CONNACK in time, or refused by the broker.
    connect_failures: int = 0
    published: int = 0
    commands_accepted: int = 0
    commands_rejected: int = 0
    controls_refused: int = 0
    last_disconnect_reason: str = ""
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


class TcuSession:
    """One simulated car's TCU: owns its vehicle model, keys, sequence numbers, outbox and MQTT link."""

    def __init__(
        self,
        vehicle: Vehicle,
        *,
        signing_key: SigningKey,
        cloud_keys: KeySet,
        clock: Clock,
        rng: random.Random,
        seq_store: SeqStore,
        config: TcuConfig | None = None,
        tls: ssl.SSLContext | ClientCertificate | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        events: EventStream | None = None,
        fault_handler: FaultHandler | None = None,
    ) -> None:
        self.vehicle = vehicle
        #: Where the car reports connects, disconnects, commands and controls (shared by a fleet's cars).
        self.events = events
        self.vin: str = vehicle.vin
        self.clock = clock
        self.rng = rng
        self.config = config or TcuConfig()
        self.seq = seq_store
        self.outbox = Outbox(self.config.outbox_limit)
        self.stats = SessionStats()
        self._signer = Signer(signing_key, issuer=self.vin, clock=clock, ttl_s=self.config.message_ttl_s)
        self._verifier = Verifier(
            cloud_keys,
            audience=self.vin,
            clock=clock,
            skew_s=self.config.clock_skew_allowance_s,
            algorithms=LEGACY_ALGORITHMS if self.config.legacy_eddsa else DEFAULT_ALGORITHMS,
        )
        self._tls = tls
        self._on_event = on_event
        self._link: MqttLink | None = None
        # Flags, not asyncio.Events: four per car, and an Event's idle waiter deque alone is 0.8 KiB.
        self._connected = Flag()
        self._disconnected = Flag()
        self._wake = Flag()
        self._change = Flag()
        self._last_sent_revision = -1
        self.signal_pct = 80
        self._subscribe_mid: int | None = None
        self._offline_until: float | None = None
        # Who takes `fault` controls before the vehicle would see them (a fleet's fault layer, given by the fleet
        # runner); without one, a `fault` control is refused like any control the car cannot do.
        self._fault_handler = fault_handler
        t = self.config.topics
        self._topic_status = t.status(self.vin)
        self._topic_events = t.events(self.vin)
        self._topic_results = t.results(self.vin)
        self._topic_connection = t.connection(self.vin)
        self._topic_commands = t.commands(self.vin)
        self._topic_control = t.control(self.vin)
        self._topic_control_results = t.control_results(self.vin)
        self._log = log.bind(vin=self.vin)

    def __repr__(self) -> str:
        state = "online" if self.online else "offline"
        return f"TcuSession(vin={self.vin!r}, {state}, outbox={len(self.outbox)}, next_seq={self.seq!r})"

    @property
    def online(self) -> bool:
        return self._link is not None and self._link.connected

    # --- running -------------------------------------------------------------------------------------------------

    async def run(self, pool: LinkPool, address: BrokerAddress | Sequence[BrokerAddress]) -> None:
        """Connect, keep connected, and tick the vehicle until cancelled. Given several addresses (the nodes of a
        broker cluster), the car connects to the first and moves on to the next whenever a connection attempt
        fails or its connection is lost (failover, with the same backoff and jitter)."""
        addresses = (address,) if isinstance(address, BrokerAddress) else tuple(address)
        if not addresses:
            raise ValueError("a car needs at least one broker address")
        self._link = pool.link(
            self.vin,
            LinkCallbacks(
                on_connected=self._on_connected,
                on_disconnected=self._on_disconnected,
                on_message=self._on_message,
                on_published=self._on_published,
                on_subscribed=self._on_subscribed,
            ),
            clean_session=False,
            will=(self._topic_connection, b"offline"),
            tls=self._tls,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._connection_loop(addresses), name=f"tcu[{self.vin}].connection")
                tg.create_task(self._status_loop(), name=f"tcu[{self.vin}].status_loop")
        finally:
            link = self._link
            if link is not None:
                link.disconnect()
                pool.forget(link)

    async def wait_online(self, timeout: float) -> None:
        """Wait until the car is connected (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def wait_offline(self, timeout: float) -> None:
        """Wait until the car has lost its connection (returns at once if it is offline; raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            while self.online:
                await self._disconnected.wait()

    def go_offline(self, seconds: float | None = None, *, hard: bool = True) -> None:
        """Lose the network for `seconds` (None: until `go_online`). A hard drop makes the broker fire the will."""
        self._offline_until = float("inf") if seconds is None else self.clock.monotonic() + seconds
        link = self._link
        if link is not None and link.connected:
            if hard:
                link.drop()
            else:
                link.disconnect()
                self._on_disconnected("went offline")

    def go_online(self, after_s: float = 0.0) -> None:
        """Signal is back: reconnect at once, or once `after_s` clock seconds have passed (a jittered return)."""
        self._offline_until = self.clock.monotonic() + after_s if after_s > 0 else None
        self._wake.set()

    def set_message_clock(self, clock: Clock) -> None:
        """Stamp (`iat`, `exp`) and judge (`exp` of commands) messages by `clock` from now on: a car whose own
        clock is off (`SkewedClock`). The vehicle's physics keep running on the session clock."""
        self._signer.clock = clock
        self._verifier.clock = clock

    async def _connection_loop(self, addresses: tuple[BrokerAddress, ...]) -> None:
        attempt = 0
        link = self._link
        assert link is not None
        index = 0
        while True:
            address = addresses[index]
            await self._wait_for_signal()
            self._disconnected.clear()
            error = "closed by the broker before it confirmed the connection"
            try:
                # The first status after connecting would create the seq file on the event loop, among thousands
                # of handshakes: the handshake thread writes it first.
                await link.connect(address, prepare=self.seq.reserve if self.seq.needs_reserve else None)
                async with asyncio.timeout(address.connect_timeout_s):
                    # Either the broker confirms (CONNACK, SUBACK) or it closes the connection (refused).
                    await _wait_any(self._connected, self._disconnected)
            except (OSError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
                self._log.info("connect failed", attempt=attempt, error=error)
                link.drop()
            if self._connected.is_set():
                attempt = 0
                await self._disconnected.wait()
            else:
                self.stats.connect_failures += 1
                if self.events is not None:
                    self.events.publish(
                        CarConnectFailed(at=self.clock.now(), source=Source.FLEET, vin=self.vin, error=error,
                                         attempt=attempt)
                    )
            index = (index + 1) % len(addresses)  # failed or lost: the next node of the cluster, if there is one
            # Full jitter: every car picks its own delay, so a fleet never comes back in one wave.
            delay = self.config.backoff.delay(attempt, self.rng)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()

    async def _wait_for_signal(self) -> None:
        """While a connectivity fault holds the car offline, wait until it ends (or `go_online` is called)."""
        while self._offline_until is not None:
            remaining = self._offline_until - self.clock.monotonic()
            if remaining <= 0:
                self._offline_until = None
                return
            waiter = asyncio.ensure_future(self._wake.wait())
            sleeper = asyncio.ensure_future(self.clock.sleep(remaining)) if remaining != float("inf") else None
            try:
                await asyncio.wait([f for f in (waiter, sleeper) if f is not None],
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                if sleeper is not None:
                    sleeper.cancel()
            self._wake.clear()

    async def _status_loop(self) -> None:
        interval = self.config.status_interval_s
        # Spread the fleet's periodic statuses over the interval instead of sending them all at once.
        await self._tick_until(self.clock.now() + self.rng.uniform(0, interval))
        while True:
            self.tick()
            self.send_status(force=True)
            await self._tick_until(self.clock.now() + interval)

    async def _tick_until(self, deadline: float) -> None:
        """Tick whenever the vehicle's time has something to show, until `deadline` (clock time)."""
        while (left := deadline - self.clock.now()) > 0:
            await self._sleep_until_change(min(left, self.vehicle.next_tick_s(self.clock.now())))
            self.tick()

    async def _sleep_until_change(self, seconds: float) -> None:
        """Sleep on the clock, cut short when a command or control changes the car (a trip starts, the heater
        goes on): its next tick is then worked out again, so a trip is driven kilometre by kilometre. Sleeps up to
        `_WAKEABLE_AFTER_S` are plain: a fleet sending statuses that often pays no extra task per sleep, and its
        cars notice a change at their next status anyway (the vehicle model is exact whenever it is asked)."""
        if seconds <= _WAKEABLE_AFTER_S:
            await self.clock.sleep(seconds)
            return
        changed = asyncio.ensure_future(self._change.wait())
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait((changed, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            sleeper.cancel()

    def tick(self) -> None:
        """Let the vehicle's time run (heater timers, trips) and report what changed."""
        self._send_events(self.vehicle.advance(self.clock.now()))
        self.send_status()

    # --- outgoing ------------------------------------------------------------------------------------------------

    async def wait_for_change(self) -> None:
        """Wait until the car next handles a command, a control or a tick (callers loop with a timeout)."""
        await self._change.wait()

    def _notify_change(self) -> None:
        self._change.set()
        self._change = Flag()

    def send_status(self, *, force: bool = False) -> None:
        """Publish a status snapshot if the vehicle changed since the last one (or always with `force`)."""
        self._notify_change()
        if not force and self.vehicle.revision == self._last_sent_revision:
            return
        if not self.vehicle.sends_status():
            return  # maximum privacy: the car sends nothing but what the law requires
        self._last_sent_revision = self.vehicle.revision
        snapshot = self.vehicle.snapshot(self.clock.now(), online=self.online, signal_pct=self.signal_pct)
        self._publish_signed(self._topic_status, MessageType.STATUS, snapshot, retain=True)

    def _send_events(self, events: Iterable[Event]) -> None:
        for event in events:
            if self.vehicle.sends_event(event.type):  # in maximum privacy only what the law requires (eCall)
                self._publish_signed(self._topic_events, MessageType.EVENT, event, retain=False)

    def _publish_signed(self, topic: str, typ: MessageType, body: BaseModel, *, retain: bool) -> None:
        seq = self.seq.next_seq()
        token = self._signer.sign(typ, aud=CLOUD, seq=seq, body=body)
        self.outbox.put(OutboxEntry(topic, token.encode(), retain, seq))
        self._flush()

    def _flush(self) -> None:
        link = self._link
        if link is None or not link.connected:
            return
        while (entry := self.outbox.peek()) is not None:
            if link.publish(entry.topic, entry.payload, qos=1, retain=entry.retain) is None:
                return  # connection went away; the entry stays for the next connect
            self.outbox.pop()
            self.stats.published += 1

    def _result(self, command_id: str, state: ResultState, reason: Any = None, detail: str | None = None) -> None:
        result = CommandResult(command_id=command_id, state=state, reason=reason, detail=detail, at=self.clock.now())
        self._publish_signed(self._topic_results, MessageType.RESULT, result, retain=False)

    # --- link callbacks ------------------------------------------------------------------------------------------

    def _on_connected(self, session_present: bool) -> None:
        link = self._link
        assert link is not None
        if self._offline_until is not None and self.clock.monotonic() < self._offline_until:
            # A connectivity fault began while this connection was being set up: no signal, no session.
            link.drop()
            return
        self.stats.connects += 1
        self._disconnected.clear()
        if self.events is not None:
            self.events.publish(CarConnection(at=self.clock.now(), source=Source.FLEET, vin=self.vin, online=True))
        self._log.debug("connected", session_present=session_present)
        # Online (for waiters) only once the broker confirmed the subscriptions: a command sent right after
        # must not race the SUBSCRIBE.
        self._subscribe_mid = link.subscribe([self._topic_commands, self._topic_control], qos=1)
        link.publish(self._topic_connection, b"online", qos=1, retain=True)
        self._flush()
        self.send_status(force=True)

    def _on_subscribed(self, mid: int) -> None:
        if mid == self._subscribe_mid and self.online:
            self._connected.set()

    def _on_disconnected(self, reason: str) -> None:
        if self._connected.is_set():
            self.stats.disconnects += 1
            self.stats.last_disconnect_reason = reason
            self._log.info("disconnected", reason=reason)
            if self.events is not None:
                self.events.publish(
                    CarConnection(at=self.clock.now(), source=Source.FLEET, vin=self.vin, online=False, reason=reason)
                )
        self._connected.clear()
        self._disconnected.set()

    def _on_published(self, mid: int) -> None:
        pass  # paho retransmits unacknowledged QoS 1 messages itself after a reconnect

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            if topic == self._topic_commands:
                self.handle_command(payload)
            elif topic == self._topic_control:
                self.handle_control(payload)
        except Exception:  # a bad message must never take the car down
            self._log.exception("message handling failed", topic=topic)

    # --- incoming ------------------------------------------------------------------------------------------------

    def handle_command(self, payload: bytes) -> None:
        """Verify a signed command, answer it, and execute it if it passes every check."""
        try:
            verified = self._verifier.verify(payload, typ=MessageType.COMMAND, issuer=CLOUD)
            if verified.seq <= self.seq.last_command_seq:
                raise ProtocolError(
                    RefusalReason.REPLAYED, f"seq {verified.seq} is not above {self.seq.last_command_seq}"
                )
            command = parse_body(Command, verified.body)
            params = command_params(command.op, command.params)
        except ProtocolError as exc:
            self._reject(payload, exc)
            return
        self.seq.accept_command(verified.seq)
        self.stats.commands_accepted += 1
        log_cmd = self._log.bind(command_id=command.command_id, op=str(command.op))
        self._result(command.command_id, ResultState.ACCEPTED)
        outcome = self.vehicle.execute(command.op, params, self.clock.now())
        self._send_events(outcome.events)
        if outcome.succeeded:
            log_cmd.info("command succeeded")
            self._result(command.command_id, ResultState.SUCCEEDED)
        else:
            log_cmd.info("command failed", reason=str(outcome.reason))
            self._result(command.command_id, ResultState.FAILED, outcome.reason, outcome.detail)
        self.send_status(force=command.op == "status.refresh")
        if self._on_event is not None:
            self._on_event("command", {"command_id": command.command_id, "op": str(command.op),
                                       "succeeded": outcome.succeeded})
        if self.events is not None:
            self.events.publish(
                CarCommandHandled(
                    at=self.clock.now(), source=Source.FLEET, vin=self.vin, command_id=command.command_id,
                    op=str(command.op), outcome="succeeded" if outcome.succeeded else "failed",
                    reason=None if outcome.reason is None else str(outcome.reason),
                )
            )

    def _reject(self, payload: bytes, exc: ProtocolError) -> None:
        reason = _REJECT_REASONS.get(exc.reason, RejectReason.MALFORMED)
        self.stats.commands_rejected += 1
        self.stats.rejected_by_reason[str(reason)] = self.stats.rejected_by_reason.get(str(reason), 0) + 1
        command_id = _untrusted_command_id(payload)
        self._log.warning("command rejected", reason=str(reason), detail=exc.detail, command_id=command_id)
        self._result(command_id, ResultState.REJECTED, reason, exc.detail)
        if self._on_event is not None:
            self._on_event("rejected", {"command_id": command_id, "reason": str(reason)})
        if self.events is not None:
            self.events.publish(
                CarCommandHandled(
                    at=self.clock.now(), source=Source.FLEET, vin=self.vin, command_id=command_id, op=None,
                    outcome="rejected", reason=str(reason),
                )
            )

    def handle_control(self, payload: bytes) -> None:
        """Apply what a person does at the car (simulator control; unsigned, operator-only by broker ACL)."""
        try:
            message = parse_body(ControlMessage, decode_json(payload))
        except ProtocolError as exc:
            self.stats.controls_refused += 1
            self._log.warning("control refused", reason=str(exc.reason), detail=exc.detail)
            self._control_handled("?", f"{exc.reason}: {exc.detail}", _untrusted_control_id(payload))
            return
        if message.action is ControlAction.FAULT and self._fault_handler is not None:
            # The fault layer logs and counts what it refuses; the reply says whether it took the fault.
            refused = self._fault_handler(self, dict(message.params))
            if refused is not None:
                self.stats.controls_refused += 1
            self._control_handled(str(message.action), refused, message.id)
            return
        try:
            events = self.vehicle.control(message.action, dict(message.params), self.clock.now())
        except VehicleError as exc:
            self.stats.controls_refused += 1
            self._log.warning("control refused", action=str(message.action), detail=str(exc))
            self._control_handled(str(message.action), str(exc), message.id)
            return
        self._send_events(events)
        self.send_status()
        self._control_handled(str(message.action), None, message.id)

    def _control_handled(self, action: str, error: str | None, control_id: str | None) -> None:
        """Report a control applied or refused: the event, and the reply to an operator that gave an `id`
        (QoS 1, not retained; lost with the connection like any answer to a request)."""
        if control_id is not None and self._link is not None:
            reply = ControlResult(id=control_id, ok=error is None, error=None if error is None else error[:1000])
            self._link.publish(self._topic_control_results, encode_json(reply.model_dump(mode="json")), qos=1)
        if self.events is not None:
            self.events.publish(
                CarControlHandled(
                    at=self.clock.now(), source=Source.FLEET, vin=self.vin, action=action, ok=error is None,
                    error=error, control_id=control_id,
                )
            )


async def _wait_any(*events: Flag) -> None:
    """Wait until any of `events` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _untrusted_control_id(payload: bytes) -> str | None:
    """The `id` of a control the car could not parse, only to address the refusal to whoever sent it."""
    try:
        data = decode_json(payload)
    except ProtocolError:
        return None
    control_id = data.get("id") if isinstance(data, dict) else None
    return control_id if isinstance(control_id, str) and 0 < len(control_id) <= 128 else None


def _untrusted_command_id(payload: bytes) -> str:
    """Best-effort command id of a refused command, only to correlate the `rejected` result; never trusted."""
    try:
        parts = payload.split(b".")
        if len(parts) != 3:
            return UNKNOWN_COMMAND_ID
        raw = base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4))
        claims = decode_json(raw)
        body = claims.get("body") if isinstance(claims, dict) else None
        command_id = body.get("command_id") if isinstance(body, dict) else None
        if isinstance(command_id, str) and 0 < len(command_id) <= 64:
            return command_id
    except (ProtocolError, ValueError):
        pass
    return UNKNOWN_COMMAND_ID

