"""Which app client (MQTT client id) to push a user's or a command's news to.

The topic an app request came on names the app's client id, which only routes replies (the user comes from the
session token). Push events need the reverse: the client that asked for a command, and the clients a user
logged in from. The registry keeps neither yet, so this process remembers them, bounded (least recently used
forgotten first): after a restart, or in another process of a scaled-out cloud, a push finds no client until
the user logs in or sends a command again.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["ClientDirectory"]


class ClientDirectory:
    """Bounded maps command id → client id and user id → the client ids the user used lately."""

    def __init__(self, *, max_commands: int = 100_000, max_users: int = 100_000, clients_per_user: int = 8) -> None:
        self._commands: OrderedDict[str, str] = OrderedDict()
        self._users: OrderedDict[str, list[str]] = OrderedDict()
        self.max_commands = max_commands
        self.max_users = max_users
        self.clients_per_user = clients_per_user

    def __repr__(self) -> str:
        return f"ClientDirectory(commands={len(self._commands)}, users={len(self._users)})"

    def bind_user(self, user_id: str, client_id: str) -> None:
        """The user sent a request from `client_id` (most recent first)."""
        clients = self._users.pop(user_id, [])
        if client_id in clients:
            clients.remove(client_id)
        clients.insert(0, client_id)
        del clients[self.clients_per_user :]
        self._users[user_id] = clients
        while len(self._users) > self.max_users:
            self._users.popitem(last=False)

    def bind_command(self, command_id: str, client_id: str) -> None:
        """The command was asked for from `client_id`."""
        self._commands[command_id] = client_id
        self._commands.move_to_end(command_id)
        while len(self._commands) > self.max_commands:
            self._commands.popitem(last=False)

    def clients_for_user(self, user_id: str) -> list[str]:
        """The clients the user used lately, most recent first."""
        return list(self._users.get(user_id, ()))

    def clients_for_command(self, command_id: str, user_id: str) -> list[str]:
        """The client that asked for the command, or else the user's recent clients."""
        client = self._commands.get(command_id)
        return [client] if client is not None else self.clients_for_user(user_id)

    def forget_command(self, command_id: str) -> None:
        """The command is final: nothing more will be pushed about it."""
        self._commands.pop(command_id, None)
