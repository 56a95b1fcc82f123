"""Sending commands to cars: signed by the cloud, numbered per car, never retained (SPEC §2.2, §2.3, R18).

A command is signed as a `tcu-command+jwt` with the cloud's key: `iss` "cloud", `aud` the VIN, `exp` the
command's expiry (its time to live), and a `seq` from a counter per car kept in the registry, so that it only
grows across restarts and cloud processes. Taking the number and publishing happen under a lock per car (striped),
so that this process never publishes a lower number after a higher one (the car would refuse it as a replay).
The command is `delivered` when the broker acknowledged it (PUBACK); the app hears every step as a push event.
"""

from __future__ import annotations

import asyncio
import zlib

import structlog

from broker.cloud import CloudServices
from broker.registry import CommandRecord
from tcu_sim.clock import Clock
from tcu_sim.protocol import Command, CommandOp, MessageType, Signer, Topics

from ._config import HandlerConfig
from ._mqtt import MqttLink, PublishFailed
from ._push import Pusher
from ._stats import HandlerStats

__all__ = ["COMMAND_SEQ_COUNTER", "CommandSender"]

log = structlog.get_logger("broker.handler.commands")

#: Registry counter name of the cloud's command `seq` for a car.
COMMAND_SEQ_COUNTER = "command-seq:{vin}"
_LOCK_STRIPES = 64


class CommandSender:
    """Signs, numbers and publishes commands; expires overdue ones."""

    def __init__(
        self,
        *,
        config: HandlerConfig,
        services: CloudServices,
        signer: Signer,
        link: MqttLink,
        topics: Topics,
        pusher: Pusher,
        clock: Clock,
        stats: HandlerStats,
    ) -> None:
        self._config = config
        self._services = services
        self._signer = signer
        self._link = link
        self._topics = topics
        self._pusher = pusher
        self._clock = clock
        self._stats = stats
        self._locks = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]

    def __repr__(self) -> str:
        return f"CommandSender(kid={self._signer.key.kid!r}, sent={self._stats.commands_sent})"

    def _lock(self, vin: str) -> asyncio.Lock:
        return self._locks[zlib.crc32(vin.encode()) % _LOCK_STRIPES]

    async def publish_signed(self, command: CommandRecord) -> bool:
        """Sign and publish `command` to `tcu/{vin}/commands` (QoS 1, not retained); True once the broker has
        acknowledged it, False when it could not be handed over before the command expired."""
        body = Command(command_id=command.id, op=CommandOp(command.op), params=dict(command.params))
        topic = self._topics.commands(command.vin)
        async with self._lock(command.vin):
            seq = await self._services.registry.next_counter(COMMAND_SEQ_COUNTER.format(vin=command.vin))
            token = self._signer.sign(MessageType.COMMAND, aud=command.vin, seq=seq, body=body, exp=command.expires_at)
            # Try until the command expires (the car would refuse it after that anyway), at most the publish timeout.
            remaining = command.expires_at - self._clock.now()
            timeout = max(0.1, min(self._config.publish_timeout_s, remaining))
            try:
                await self._link.publish(topic, token.encode("ascii"), qos=1, retain=False, timeout=timeout)
            except PublishFailed as exc:
                self._stats.command_send_failures += 1
                log.warning("command.send_failed", command_id=command.id, vin=command.vin, error=str(exc))
                return False
        self._stats.commands_sent += 1
        log.info("command.sent", command_id=command.id, vin=command.vin, op=command.op, seq=seq)
        return True

    async def send(self, command: CommandRecord) -> None:
        """Publish an app's stored command and move it to `delivered` on PUBACK, telling the app. A command that
        could not be published stays `queued` and times out."""
        if not await self.publish_signed(command):
            return
        transition = await self._services.commands.mark_delivered(command.id)
        if transition.applied and transition.command is not None:
            await self._pusher.command_progress(transition.command)

    async def notify(self, vin: str, message: str) -> None:
        """Show `message` in the car's infotainment (`infotainment.notify`, a command only the cloud sends:
        primary-user confirmation R8, licence notices R14). Not stored; its result is ignored."""
        command = self._services.commands.system_command(vin, CommandOp.INFOTAINMENT_NOTIFY, {"message": message})
        await self.publish_signed(command)

    async def expire_overdue(self) -> list[CommandRecord]:
        """Move every command whose TTL (plus the car's skew allowance) has passed to `timed_out`, and tell the
        apps; the commands moved."""
        expired = await self._services.commands.expire_overdue(self._clock.now() - self._config.expiry_grace_s)
        for command in expired:
            await self._pusher.command_progress(command)
        return expired
