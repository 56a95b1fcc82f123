"""Socket options every MQTT connection of the project gets, in one place.

MQTT traffic here is small packets in request/response pairs (a command, its PUBACK, the car's result): with
Nagle's algorithm a packet waits for the previous one's ACK, which added ~40 ms to every hop of a command's
round trip. So every connection the project opens — cloud, app, car, operator, observer, fault proxy, bench —
sets TCP_NODELAY, through `SOCKET_OPTIONS` (for `aiomqtt.Client(socket_options=...)`) or `set_nodelay(sock)`.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any, Final

__all__ = ["SOCKET_OPTIONS", "set_nodelay"]

#: For `aiomqtt.Client(socket_options=SOCKET_OPTIONS)` (paho sets them on the socket it opens).
SOCKET_OPTIONS: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def set_nodelay(sock: Any) -> None:
    """Set TCP_NODELAY on a connected TCP socket (or an SSL socket over one); anything else is left alone."""
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
