"""Push events to apps on `app/{client_id}/events` (SPEC §2.5): command progress, vehicle changes,
notifications, and mail (the subject of each mail the simulated mailbox receives, never its body).

Apps that are not on MQTT (the HTTP API's, `broker.http`) get the same events through `listeners`: each is
called with the user an event is for and the event itself, at the same place the MQTT push is made. Their
client ids start with `LOCAL_CLIENT_PREFIX`, and nothing is published on MQTT for them."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import structlog

from broker.registry import CommandRecord, MailRecord
from tcu_sim.clock import Clock
from tcu_sim.events import CommandChanged, EventStream, Source
from tcu_sim.protocol import ProtocolError, PushEvent, PushEventType, Topics, encode_json

from ._directory import ClientDirectory
from ._mqtt import MqttLink, PublishFailed
from ._stats import HandlerStats

__all__ = [
    "LOCAL_CLIENT_PREFIX",
    "PushListener",
    "Pusher",
    "command_changed",
    "command_progress_data",
    "describe_error",
]

#: The client ids of apps served in-process (HTTP): their pushes go to the listeners, never to MQTT.
LOCAL_CLIENT_PREFIX: Final = "local~"

#: Called with `(user_id, event)` for every push event meant for a user's apps; must not block.
PushListener = Callable[[str, PushEvent], None]

log = structlog.get_logger("broker.handler.push")


def describe_error(exc: BaseException) -> dict[str, str]:
    """What to log about an unexpected exception: its type and where it was raised — never its message or
    the frame's variables, which may hold a password, an S-PIN or a token."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
    return {"error_type": type(exc).__name__, "error_at": where}


def command_progress_data(command: CommandRecord) -> dict[str, Any]:
    """The `data` of a `command_progress` push event (and the core of a command's status)."""
    data: dict[str, Any] = {
        "command_id": command.id,
        "vin": command.vin,
        "op": command.op,
        "state": command.state.value,
        "created_at": command.created_at,
        "updated_at": command.updated_at,
        "expires_at": command.expires_at,
    }
    if command.reason is not None:
        data["reason"] = command.reason
    if command.detail is not None:
        data["detail"] = command.detail
    return data


def command_changed(command: CommandRecord, at: float) -> CommandChanged:
    """The event-stream event of a command in its current state."""
    return CommandChanged(
        at=at, source=Source.CLOUD, command_id=command.id, vin=command.vin, op=command.op,
        state=command.state.value, user_id=command.user_id, reason=command.reason, detail=command.detail,
        created_at=command.created_at, expires_at=command.expires_at,
    )


class Pusher:
    """Publishes push events to app clients; a push that cannot be delivered is logged and counted. Every
    command step it tells an app about also goes to the event stream (`CommandChanged`)."""

    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        clock: Clock,
        directory: ClientDirectory,
        stats: HandlerStats,
        events: EventStream,
    ) -> None:
        self._link = link
        self._topics = topics
        self._clock = clock
        self.directory = directory
        self._stats = stats
        self._events = events
        #: In-process receivers of every user's push events (the HTTP API's event log): add, never replace.
        self.listeners: list[PushListener] = []

    def __repr__(self) -> str:
        return f"Pusher({self.directory!r}, listeners={len(self.listeners)})"

    def _tell_listeners(self, user_ids: Iterable[str], event: PushEvent) -> None:
        for user_id in user_ids:
            for listener in list(self.listeners):
                try:
                    listener(user_id, event)
                except Exception as exc:  # a listener's bug must not stop the MQTT push
                    self._stats.push_failures += 1
                    log.error("push.listener_failed", **describe_error(exc))

    async def push(self, client_ids: Iterable[str], kind: PushEventType, data: Mapping[str, Any]) -> int:
        """Send one event to each client; how many were handed to the broker."""
        clients = [c for c in dict.fromkeys(client_ids) if not c.startswith(LOCAL_CLIENT_PREFIX)]
        if not clients:
            return 0
        payload = encode_json(PushEvent(type=kind, at=self._clock.now(), data=dict(data)).model_dump(mode="json"))
        sent = 0
        for client_id in clients:
            try:
                await self._link.publish(self._topics.app_events(client_id), payload, qos=1)
            except (PublishFailed, ProtocolError) as exc:
                self._stats.push_failures += 1
                log.warning("push.failed", client_id=client_id, kind=kind.value, error=str(exc))
                continue
            self._stats.pushes += 1
            sent += 1
        return sent

    async def command_progress(self, command: CommandRecord) -> None:
        """Tell the app that asked for the command where it is now (and the event stream)."""
        self._events.publish(command_changed(command, self._clock.now()))
        data = command_progress_data(command)
        if self.listeners:
            self._tell_listeners([command.user_id], PushEvent(type=PushEventType.COMMAND_PROGRESS,
                                                              at=self._clock.now(), data=data))
        clients = await self.directory.clients_for_command(command)
        await self.push(clients, PushEventType.COMMAND_PROGRESS, data)

    async def to_users(self, user_ids: Iterable[str], kind: PushEventType, data: Mapping[str, Any]) -> None:
        """Send one event to every client the users were seen on lately (and to the listeners)."""
        if self.listeners:
            self._tell_listeners(dict.fromkeys(user_ids), PushEvent(type=kind, at=self._clock.now(), data=dict(data)))
        clients = [c for u in dict.fromkeys(user_ids) for c in await self.directory.clients_for_user(u)]
        await self.push(clients, kind, data)

    async def mail(self, mail: MailRecord) -> None:
        """A mail reached the user's simulated mailbox: tell their apps its subject (a `MailListener`). The body
        stays in the mailbox: it may hold a verification link."""
        if mail.user_id is None:
            return  # an address without a CUPRA ID: no app to tell
        data: dict[str, Any] = {"subject": mail.subject, "at": mail.at}
        if mail.id is not None:
            data["mail_id"] = mail.id
        await self.to_users([mail.user_id], PushEventType.MAIL, data)
