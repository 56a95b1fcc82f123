"""Messages from cars: verified, de-duplicated, then applied (SPEC §2.2, R18), in batches.

For `tcu/{vin}/status|events|results` the order is:
1. the signature, with the key pinned for `kid` = the VIN of the topic (one car's key cannot speak for
   another), then `typ`, `aud` = "cloud", `iss` = the VIN, `exp` / `iat` with the skew allowance;
2. the body against its model;
3. `seq` against the registry's anti-replay window for (VIN, kind) (`broker.registry.SeqMark`): a message seen
   before — a duplicate, a replay, or one another cloud process took first — is dropped; one that merely
   arrives after a newer one (within 64) is not;
4. only then is it applied.
Anything refused is logged with its reason, counted, and changes nothing. `tcu/{vin}/connection` carries the
plain-text `online` / `offline` (the broker publishes `offline` as the car's last will).

A worker hands over what waits in its queue as one batch (`handle_batch`). Its statuses — nearly all the
traffic — are applied in ONE registry transaction: every seq claimed and each car's newest status stored
together, or nothing at all (`Registry.apply_statuses`). Its events and results follow one by one, in the
order they came (a car's messages always reach the same worker): each one's seq is claimed, then it is
applied; if applying fails, the claim is released so that the message can be applied when it comes again.
Statuses and events of one car are independent: each carries its own time, which the registry compares.

Every message is *settled* (its MQTT delivery acknowledged, see `MqttLink`) only when it was applied or refused.
While the registry is unavailable (locked, connection lost) the work is retried for `store_retry_s`; after that
`StoreUnavailable` is raised with the messages not applied still unsettled, for the handler to reconnect and
have them delivered again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import structlog

from broker.cloud import CloudError, CloudServices, EnrolmentOutcome
from broker.registry import EnrolmentRecord, EnrolmentState, RegistryUnavailable, StatusWrite
from tcu_sim.events import AlertFired, CarConnection, CarMessageHandled, EventStream, RoadsideCaseOpened, Source
from tcu_sim.protocol import (
    CommandResult,
    ConnectionState,
    Event,
    EventType,
    MessageType,
    ParsedTopic,
    ProtocolError,
    PushEventType,
    RefusalReason,
    RejectReason,
    ResultState,
    StatusSnapshot,
    TopicKind,
    Verifier,
    parse_body,
)

from ._commands import CommandSender
from ._config import HandlerConfig
from ._mqtt import SETTLED, Delivery
from ._push import Pusher, describe_error
from ._stats import HandlerStats
from ._verifypool import VerifyPool

__all__ = ["CarMessage", "CarMessages", "StoreUnavailable", "seq_stream"]

log = structlog.get_logger("broker.handler.cars")
T = TypeVar("T")

_TYPES: Final = {
    TopicKind.STATUS: MessageType.STATUS,
    TopicKind.EVENTS: MessageType.EVENT,
    TopicKind.RESULTS: MessageType.RESULT,
}
#: What a seq seen before is, per kind (SPEC §2.2: a status or event seen before is a duplicate; a result is a
#: reply to a command and, like a command, replayed).
_SEEN: Final = {
    TopicKind.STATUS: RefusalReason.DUPLICATE,
    TopicKind.EVENTS: RefusalReason.DUPLICATE,
    TopicKind.RESULTS: RefusalReason.REPLAYED,
}
#: Verifying is CPU work with no wait in it: let the MQTT reader and other tasks in every so many messages.
_YIELD_EVERY: Final = 32
_RETRY_FIRST_S: Final = 0.05
_RETRY_MAX_S: Final = 1.0

# Events an app is told about as notifications; the other plain events are vehicle changes.
_NOTIFICATIONS: Final = frozenset(
    {
        EventType.ECALL,
        EventType.BATTERY_LOW,
        EventType.AUX_HEATING_STARTED,
        EventType.AUX_HEATING_FINISHED,
        EventType.VENTILATION_STARTED,
        EventType.VENTILATION_FINISHED,
        EventType.HEALTH_WARNING,
    }
)
_ENROLMENT_EVENTS: Final = frozenset(
    {
        EventType.PAIRING_CODE_ENTERED,
        EventType.TKOV_COMPLETED,
        EventType.INFOTAINMENT_LOGIN,
        EventType.FACTORY_RESET,
    }
)


#: Ids of the commands the cloud sends itself (`CommandService.system_command` makes them with this prefix).
SYSTEM_COMMAND_PREFIX: Final = "sys-"


def seq_stream(vin: str, kind: TopicKind) -> str:
    """The registry's seq stream of one car's messages of one kind."""
    return f"car:{vin}:{kind.value}"


class StoreUnavailable(Exception):
    """The registry stayed unavailable for `store_retry_s`: the messages not applied are left unsettled."""


@dataclass(slots=True)
class CarMessage:
    """A message from a car topic, with its MQTT delivery (settled once it is applied or refused)."""

    topic: ParsedTopic
    payload: bytes
    delivery: Delivery = SETTLED


@dataclass(slots=True)
class _Signed:
    message: CarMessage
    kind: TopicKind
    seq: int
    body: Event | CommandResult | ConnectionState


class CarMessages:
    """Verifies and applies what cars publish."""

    def __init__(
        self,
        *,
        services: CloudServices,
        verifier: Verifier,
        sender: CommandSender,
        pusher: Pusher,
        stats: HandlerStats,
        events: EventStream,
        config: HandlerConfig | None = None,
    ) -> None:
        self._services = services
        self._events = events
        self._registry = services.registry
        self.verifier = verifier
        self._sender = sender
        self._pusher = pusher
        self._stats = stats
        self._config = config or HandlerConfig()
        #: Worker processes verifying statuses (`HandlerConfig.verify_processes`); None: on the loop.
        self.pool: VerifyPool | None = None

    def __repr__(self) -> str:
        return f"CarMessages({self.verifier!r}, refused={sum(self._stats.refused.values())})"

    def _refuse(self, message: CarMessage, error: ProtocolError, seq: int | None = None) -> None:
        vin, kind = message.topic.key, message.topic.kind
        self._stats.refused[error.reason.value] += 1
        # A duplicate is what redelivery brings (after a reconnect, a car's outbox); anything else is a warning.
        level = log.info if error.reason is RefusalReason.DUPLICATE else log.warning
        level("car.refused", vin=vin, kind=kind.value, reason=error.reason.value, detail=error.detail)
        self._handled(message, applied=False, seq=seq, reason=error.reason.value)

    def _applied(self, message: CarMessage, seq: int | None) -> None:
        self._stats.applied[message.topic.kind.value] += 1
        self._handled(message, applied=True, seq=seq, reason=None)

    def _handled(self, message: CarMessage, *, applied: bool, seq: int | None, reason: str | None) -> None:
        self._events.publish(
            CarMessageHandled(
                at=self.verifier.clock.now(), source=Source.CLOUD, vin=message.topic.key,
                topic_kind=message.topic.kind.value, applied=applied, seq=seq, reason=reason, token=message.payload,
            )
        )

    async def handle(self, topic: ParsedTopic, payload: bytes) -> bool:
        """Verify and apply one message from a car topic (a batch of one); True when it was applied."""
        before = self._stats.applied[topic.kind.value]
        await self.handle_batch([CarMessage(topic, payload)])
        return self._stats.applied[topic.kind.value] > before

    async def handle_batch(self, batch: Sequence[CarMessage]) -> None:
        """Verify every message, apply the statuses in one registry transaction and the other messages in order,
        settling each message once it is applied or refused. `StoreUnavailable` when the registry stayed
        unavailable: what was not applied is not settled. Any other failure of one message (a bug) is counted
        and logged, and that message settled: it would fail again."""
        statuses: list[tuple[CarMessage, StatusWrite]] = []
        others: list[_Signed] = []
        pooled: list[CarMessage] = []
        pool = self.pool if self.pool is not None and self.pool.running else None
        for n, message in enumerate(batch):
            kind = message.topic.kind
            self._stats.received[kind.value] += 1
            if kind is TopicKind.STATUS and pool is not None:
                pooled.append(message)
                continue
            if n and n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            self._verify_one(message, statuses, others)
        if pooled:
            await self._verify_pooled(pooled, statuses)
        if statuses:
            await self._apply_statuses(statuses)
        for signed in others:
            structlog.contextvars.bind_contextvars(vin=signed.message.topic.key)
            try:
                await self._apply_one(signed)
            finally:
                structlog.contextvars.unbind_contextvars("vin")

    def _verify_one(
        self, message: CarMessage, statuses: list[tuple[CarMessage, StatusWrite]], others: list[_Signed]
    ) -> None:
        """Verify and parse one message on the loop; a refusal is counted, logged and settled here."""
        vin, kind = message.topic.key, message.topic.kind
        try:
            if kind is TopicKind.CONNECTION:
                others.append(_Signed(message, kind, 0, _connection_state(message.payload)))
                return
            verified = self.verifier.verify(message.payload, typ=_TYPES[kind], issuer=vin, kid=vin)
            if kind is TopicKind.STATUS:
                status = parse_body(StatusSnapshot, verified.body)
                write = StatusWrite(
                    seq_stream(vin, kind), verified.seq, vin, status.model_dump_json(), status.privacy_mode.value,
                    status.updated_at,
                )
                statuses.append((message, write))
            elif kind is TopicKind.EVENTS:
                others.append(_Signed(message, kind, verified.seq, parse_body(Event, verified.body)))
            else:
                others.append(_Signed(message, kind, verified.seq, parse_body(CommandResult, verified.body)))
        except ProtocolError as exc:
            self._refuse(message, exc)
            message.delivery.settle()

    async def _verify_pooled(self, pooled: list[CarMessage], statuses: list[tuple[CarMessage, StatusWrite]]) -> None:
        """Statuses verified by the worker processes (on the loop when the pool is gone)."""
        assert self.pool is not None  # only called with a pool
        checks = await self.pool.check([(m.topic.key, m.payload) for m in pooled], self.verifier.clock.now())
        if checks is None:
            for n, message in enumerate(pooled):
                if n and n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                self._verify_one(message, statuses, [])
            return
        for message, check in zip(pooled, checks, strict=True):
            vin = message.topic.key
            if check.refused is not None:
                self._refuse(message, ProtocolError(check.refused, check.detail))
                message.delivery.settle()
                continue
            stream = seq_stream(vin, TopicKind.STATUS)
            write = StatusWrite(stream, check.seq, vin, check.status_json, check.privacy_mode, check.updated_at)
            statuses.append((message, write))

    # -- the registry, with retries --------------------------------------------------------------------------
    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """`step()` until it works, while the registry is only unavailable (and for `store_retry_s` at most)."""
        cfg = self._config
        deadline = time.monotonic() + cfg.store_retry_s
        delay = _RETRY_FIRST_S
        while True:
            try:
                async with asyncio.timeout(cfg.message_timeout_s):
                    return await step()
            except (RegistryUnavailable, TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    log.error("car.store_unavailable", what=what, error=str(exc) or type(exc).__name__)
                    raise StoreUnavailable(what) from exc
                self._stats.store_retries += 1
                log.warning("car.store_retry", what=what, error=str(exc) or type(exc).__name__, retry_in_s=delay)
                # Network time, not the injected clock: a virtual clock standing still must not stop retries.
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def _apply_statuses(self, statuses: list[tuple[CarMessage, StatusWrite]]) -> None:
        writes = [write for _, write in statuses]
        try:
            accepted = await self._retrying("statuses", lambda: self._registry.apply_statuses(writes))
        except StoreUnavailable:
            raise
        except Exception as exc:
            # Not the store being away: one status the registry cannot take (a bug). Apply them one by one, so
            # that only that one is lost, not the batch.
            log.error("car.batch_failed", statuses=len(writes), **describe_error(exc))
            for item in statuses:
                await self._apply_statuses_one(item)
            return
        self._stats.status_batches += 1
        self._stats.status_batch_messages += len(writes)
        for (message, write), ok in zip(statuses, accepted, strict=True):
            if ok:
                self._applied(message, write.seq)
            else:
                self._refuse(message, _seen(TopicKind.STATUS, write.seq), write.seq)
            message.delivery.settle()

    async def _apply_statuses_one(self, item: tuple[CarMessage, StatusWrite]) -> None:
        message, write = item
        try:
            (ok,) = await self._retrying("status", lambda: self._registry.apply_statuses([write]))
        except StoreUnavailable:
            raise
        except Exception as exc:
            self._stats.handler_errors += 1
            log.error("car.failed", vin=write.vin, kind=TopicKind.STATUS.value, **describe_error(exc))
            message.delivery.settle()
            return
        if ok:
            self._applied(message, write.seq)
        else:
            self._refuse(message, _seen(TopicKind.STATUS, write.seq), write.seq)
        message.delivery.settle()

    async def _apply_one(self, signed: _Signed) -> None:
        """Claim the seq, apply, settle; a failed application releases the claim (see the module docstring)."""
        message, kind = signed.message, signed.kind
        vin = message.topic.key
        stream = seq_stream(vin, kind)
        held = False

        async def step() -> bool:
            nonlocal held
            if kind is TopicKind.CONNECTION:
                assert isinstance(signed.body, ConnectionState)  # made so above
                await self._connection(vin, signed.body)
                return True
            if not held:
                if not await self._registry.claim_seq(stream, signed.seq):
                    return False
                held = True
            if isinstance(signed.body, Event):
                await self._event(vin, signed.body)
            else:
                assert isinstance(signed.body, CommandResult)  # made so above
                await self._result(vin, signed.body)
            held = False
            return True

        try:
            applied = await self._retrying(kind.value, step)
        except StoreUnavailable:
            await self._release(stream, signed.seq, held)
            raise
        except Exception as exc:
            # A bug, or a store failure inside a domain step: count it, and let a redelivery try again.
            await self._release(stream, signed.seq, held)
            self._stats.handler_errors += 1
            log.error("car.failed", kind=kind.value, **describe_error(exc))
            message.delivery.settle()
            return
        seq = None if kind is TopicKind.CONNECTION else signed.seq
        if applied:
            self._applied(message, seq)
        else:
            self._refuse(message, _seen(kind, signed.seq), seq)
        message.delivery.settle()

    async def _release(self, stream: str, seq: int, held: bool) -> None:
        if not held:
            return
        try:
            await self._registry.release_seq(stream, seq)
        except Exception as exc:
            log.error("car.release_failed", stream=stream, seq=seq, **describe_error(exc))

    async def _connection(self, vin: str, state: ConnectionState) -> None:
        online = state is ConnectionState.ONLINE
        await self._services.vehicles.set_online(vin, online)
        log.info("car.connection", vin=vin, state=state.value)
        self._events.publish(CarConnection(at=self.verifier.clock.now(), source=Source.CLOUD, vin=vin, online=online))

    # -- results ---------------------------------------------------------------------------------------------
    async def _result(self, vin: str, result: CommandResult) -> None:
        if result.command_id.startswith(SYSTEM_COMMAND_PREFIX):
            # The cloud's own infotainment notices are not stored: nothing to move, nobody to tell. A car that
            # rejects one, though, says something is wrong with our signing (key, clock, seq) — unless it merely
            # came back online after the notice expired.
            if result.state is ResultState.REJECTED:
                reason = None if result.reason is None else result.reason.value
                level = log.info if result.reason is RejectReason.EXPIRED else log.warning
                level("car.rejected_system_command", vin=vin, command_id=result.command_id, reason=reason)
            return
        transition = await self._services.commands.apply_result(vin, result)
        if transition.applied and transition.command is not None:
            await self._pusher.command_progress(transition.command)
        else:
            log.info("car.result_not_applied", vin=vin, command_id=result.command_id, state=result.state.value,
                     note=transition.note)

    # -- events ----------------------------------------------------------------------------------------------
    async def _event(self, vin: str, event: Event) -> None:
        # Never log the event itself: an infotainment login carries a password, a pairing event its code.
        log.info("car.event", vin=vin, event_type=event.type.value)
        if event.type in _ENROLMENT_EVENTS:
            await self._enrolment(vin, event)
            return
        if event.type is EventType.PRIVACY_CHANGED and event.privacy_mode is not None:
            await self._services.vehicles.record_privacy(vin, event.privacy_mode.value, event.at)
        if event.type is EventType.NOTIFICATION_SHOWN:
            return  # the car confirming a message of ours: nothing to tell the app
        if event.type is EventType.TRIP:
            await self._trip(vin, event)
            return
        if event.type is EventType.BREAKDOWN_CALL:
            await self._breakdown_call(vin, event)
            return
        if event.type is EventType.HEALTH_WARNING and event.warning is not None:
            await self._services.services.health_warning(vin, event.warning)  # mails the primary user
        kind = PushEventType.NOTIFICATION if event.type in _NOTIFICATIONS else PushEventType.VEHICLE_CHANGED
        data: dict[str, object] = {"vin": vin, "event": event.type.value, "at": event.at}
        if event.door is not None:
            data["door"] = event.door.value
        if event.privacy_mode is not None:
            data["privacy_mode"] = event.privacy_mode.value
        if event.position is not None:
            data["position"] = event.position.model_dump(mode="json")
        if event.message is not None:
            data["message"] = event.message
        if event.warning is not None:
            data["warning"] = event.warning
        users = [e.user_id for e in await self._registry.list_vehicle_enrolments(vin)
                 if e.state is EnrolmentState.ACTIVE]
        await self._pusher.to_users(users, kind, data)

    async def _trip(self, vin: str, event: Event) -> None:
        """Driving data: keep the trip, check it against the car's alerts, push each alert that fired (mailed
        already) to its user, and tell the apps the car has a new trip."""
        assert event.trip is not None  # a trip event always carries one (the model requires it)
        services = self._services.services
        stored = await services.record_trip(vin, event.trip)
        if stored is None:
            return
        for alert in await services.check_trip(vin, event.trip):
            await self._pusher.to_users([alert.user_id], PushEventType.ALERT, alert.as_data())
            self._events.publish(
                AlertFired(
                    at=self.verifier.clock.now(), source=Source.CLOUD, vin=vin, user_id=alert.user_id,
                    alert=alert.kind, fired_at=alert.at, detail=_alert_words(alert.kind, alert.as_data()),
                )
            )
        users = [e.user_id for e in await self._registry.list_vehicle_enrolments(vin)
                 if e.state is EnrolmentState.ACTIVE]
        await self._pusher.to_users(
            users, PushEventType.VEHICLE_CHANGED,
            {"vin": vin, "event": EventType.TRIP.value, "at": event.at, "trip_id": stored.id,
             "distance_km": event.trip.distance_km},
        )

    async def _breakdown_call(self, vin: str, event: Event) -> None:
        """Online roadside assistance: a case for the primary user (pushed), or the car told why not."""
        case = await self._services.services.breakdown_call(vin, event.at, event.position, event.detail)
        await self._sender.notify(vin, case.notice)
        self._events.publish(
            RoadsideCaseOpened(
                at=self.verifier.clock.now(), source=Source.CLOUD, vin=vin,
                case_id=None if case.record is None else case.record.id,
                with_position=case.record is not None and case.record.position is not None,
            )
        )
        if case.record is not None and case.primary_user_id is not None:
            await self._pusher.to_users([case.primary_user_id], PushEventType.ROADSIDE, case.as_data())

    async def _enrolment(self, vin: str, event: Event) -> None:
        garage = self._services.garage
        try:
            if event.type is EventType.FACTORY_RESET:
                removed = await garage.factory_reset(vin)
                await self._tell_removed(vin, removed, "factory_reset")
                return
            if event.type is EventType.PAIRING_CODE_ENTERED:
                outcome = await garage.complete_by_pairing_code(vin, event.pairing_code or "")
            elif event.type is EventType.TKOV_COMPLETED:
                outcome = await garage.complete_by_tkov(vin, event.email)
            else:
                password = event.password.get_secret_value() if event.password is not None else ""
                outcome = await garage.complete_by_infotainment_login(vin, event.email or "", password)
        except CloudError as exc:
            # The person in the car sees why (the message never holds a secret).
            log.warning("car.enrolment_refused", vin=vin, event_type=event.type.value, code=exc.code.value)
            await self._sender.notify(vin, exc.message)
            return
        await self._enrolled(outcome)

    async def _enrolled(self, outcome: EnrolmentOutcome) -> None:
        log.info("car.enrolled", vin=outcome.vin, user_id=outcome.user_id, method=outcome.method,
                 replaced=outcome.previous_primary)
        await self._sender.notify(outcome.vin, outcome.confirmation)  # R8: shown in the infotainment
        await self._pusher.to_users(
            [outcome.user_id], PushEventType.VEHICLE_CHANGED,
            {"vin": outcome.vin, "event": "enrolled", "role": "primary", "method": outcome.method},
        )
        await self._tell_removed(outcome.vin, list(outcome.removed), "replaced")

    async def _tell_removed(self, vin: str, removed: list[EnrolmentRecord], why: str) -> None:
        await self._pusher.to_users(
            [e.user_id for e in removed], PushEventType.VEHICLE_CHANGED,
            {"vin": vin, "event": "removed", "reason": why},
        )


def _connection_state(payload: bytes) -> ConnectionState:
    try:
        return ConnectionState(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(RefusalReason.MALFORMED, "connection payload must be 'online' or 'offline'") from None


def _alert_words(kind: str, data: dict[str, object]) -> str:
    """An alert in an operator's words (no position)."""
    if kind == "speed":
        return f"{data.get('speed_kmh')} km/h > {data.get('max_speed_kmh')} km/h"
    return f"{data.get('crossing')} the area"


def _seen(kind: TopicKind, seq: int) -> ProtocolError:
    return ProtocolError(_SEEN[kind], f"seq {seq} was seen before on {kind.value}")
