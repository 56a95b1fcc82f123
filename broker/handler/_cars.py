"""Messages from cars: verified, de-duplicated, then applied (SPEC §2.2, R18).

For `tcu/{vin}/status|events|results` the order is:
1. the signature, with the key pinned for `kid` = the VIN of the topic (one car's key cannot speak for
   another), then `typ`, `aud` = "cloud", `iss` = the VIN, `exp` / `iat` with the skew allowance;
2. the body against its model;
3. `seq` against the registry's high-water mark for (VIN, kind), raised atomically (`advance_seq`): a message
   seen before — a duplicate, a replay, or one another cloud process took first — is dropped;
4. only then is it applied.
Anything refused is logged with its reason, counted, and changes nothing. `tcu/{vin}/connection` carries the
plain-text `online` / `offline` (the broker publishes `offline` as the car's last will).
"""

from __future__ import annotations

from typing import Final

import structlog

from broker.cloud import CloudError, CloudServices, EnrolmentOutcome
from broker.registry import EnrolmentRecord, EnrolmentState
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
from ._push import Pusher
from ._stats import HandlerStats

__all__ = ["CarMessages", "seq_stream"]

log = structlog.get_logger("broker.handler.cars")

_TYPES: Final = {
    TopicKind.STATUS: MessageType.STATUS,
    TopicKind.EVENTS: MessageType.EVENT,
    TopicKind.RESULTS: MessageType.RESULT,
}

# Events an app is told about as notifications; the other plain events are vehicle changes.
_NOTIFICATIONS: Final = frozenset(
    {
        EventType.ECALL,
        EventType.BATTERY_LOW,
        EventType.AUX_HEATING_STARTED,
        EventType.AUX_HEATING_FINISHED,
        EventType.VENTILATION_STARTED,
        EventType.VENTILATION_FINISHED,
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
    ) -> None:
        self._services = services
        self._registry = services.registry
        self.verifier = verifier
        self._sender = sender
        self._pusher = pusher
        self._stats = stats

    def __repr__(self) -> str:
        return f"CarMessages({self.verifier!r}, refused={sum(self._stats.refused.values())})"

    def _refuse(self, vin: str, kind: TopicKind, error: ProtocolError) -> None:
        self._stats.refused[error.reason.value] += 1
        log.warning("car.refused", vin=vin, kind=kind.value, reason=error.reason.value, detail=error.detail)

    async def handle(self, topic: ParsedTopic, payload: bytes) -> bool:
        """Verify and apply one message from a car topic; True when it was applied."""
        vin, kind = topic.key, topic.kind
        self._stats.received[kind.value] += 1
        try:
            if kind is TopicKind.CONNECTION:
                applied = await self._connection(vin, payload)
            else:
                applied = await self._signed(vin, kind, payload)
        except ProtocolError as exc:
            self._refuse(vin, kind, exc)
            return False
        if applied:
            self._stats.applied[kind.value] += 1
        return applied

    async def _connection(self, vin: str, payload: bytes) -> bool:
        try:
            state = ConnectionState(payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise ProtocolError(RefusalReason.MALFORMED, "connection payload must be 'online' or 'offline'") from None
        await self._services.vehicles.set_online(vin, state is ConnectionState.ONLINE)
        log.info("car.connection", vin=vin, state=state.value)
        return True

    async def _signed(self, vin: str, kind: TopicKind, payload: bytes) -> bool:
        verified = self.verifier.verify(payload, typ=_TYPES[kind], issuer=vin, kid=vin)
        if kind is TopicKind.STATUS:
            status = parse_body(StatusSnapshot, verified.body)
            await self._advance(vin, kind, verified.seq, RefusalReason.DUPLICATE)
            await self._services.vehicles.record_status(vin, status)
            return True
        if kind is TopicKind.EVENTS:
            event = parse_body(Event, verified.body)
            await self._advance(vin, kind, verified.seq, RefusalReason.DUPLICATE)
            await self._event(vin, event)
            return True
        result = parse_body(CommandResult, verified.body)
        await self._advance(vin, kind, verified.seq, RefusalReason.REPLAYED)
        await self._result(vin, result)
        return True

    async def _advance(self, vin: str, kind: TopicKind, seq: int, reason: RefusalReason) -> None:
        if not await self._registry.advance_seq(seq_stream(vin, kind), seq):
            raise ProtocolError(reason, f"seq {seq} was seen before on {kind.value}")

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
        users = [e.user_id for e in await self._registry.list_vehicle_enrolments(vin)
                 if e.state is EnrolmentState.ACTIVE]
        await self._pusher.to_users(users, kind, data)

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
