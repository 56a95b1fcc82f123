"""Which app clients (MQTT client ids) to push a user's or a command's news to — kept in the registry, so that
any cloud process finds them, also one started after a restart or another one of a scaled-out cloud.

The topic an app request came on names the app's client id, which only routes replies (the user comes from the
session token). Push events need the reverse:
- the client that asked for a command: stored with the command itself (`CommandRecord.client_id`);
- the clients a user was seen on lately (login, commands): the registry's user → client table, the newest
  `clients_per_user` kept.

Every request that binds a user would otherwise write the same row again: a binding this process wrote less than
`rebind_after_s` ago (on the injected clock) is not written again.
"""

from __future__ import annotations

from collections import OrderedDict

from broker.registry import CommandRecord, Registry
from tcu_sim.clock import Clock

__all__ = ["ClientDirectory"]


class ClientDirectory:
    """The app clients of users and commands, in the registry."""

    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        *,
        clients_per_user: int = 8,
        rebind_after_s: float = 60.0,
        memo_size: int = 100_000,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self.clients_per_user = clients_per_user
        self.rebind_after_s = rebind_after_s
        self._memo_size = memo_size
        self._written: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __repr__(self) -> str:
        return f"ClientDirectory({self._registry!r}, clients_per_user={self.clients_per_user})"

    async def bind_user(self, user_id: str, client_id: str) -> None:
        """The user sent a request from `client_id` (it becomes their most recent client)."""
        now = self._clock.now()
        key = (user_id, client_id)
        written = self._written.get(key)
        if written is not None and 0 <= now - written < self.rebind_after_s:
            return
        await self._registry.bind_client(user_id, client_id, now, keep=self.clients_per_user)
        self._written[key] = now
        self._written.move_to_end(key)
        while len(self._written) > self._memo_size:
            self._written.popitem(last=False)

    async def clients_for_user(self, user_id: str) -> list[str]:
        """The clients the user was seen on lately, most recent first."""
        return await self._registry.list_clients(user_id, limit=self.clients_per_user)

    async def clients_for_command(self, command: CommandRecord) -> list[str]:
        """The client that asked for the command, or else (a command stored without one) the user's clients."""
        if command.client_id is not None:
            return [command.client_id]
        return await self.clients_for_user(command.user_id)
