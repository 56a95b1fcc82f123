"""Every MQTT connection the project opens has TCP_NODELAY (`tcu_sim._net`): the cloud's, an app's, a car's."""

from __future__ import annotations

import socket
from typing import Any

from tcu_sim._net import SOCKET_OPTIONS, set_nodelay
from tcu_sim.testing import SimCar, SimCloud, SimUser


def _nodelay(sock: Any) -> int:
    assert sock is not None, "no socket: not connected"
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_set_nodelay_sets_the_option_and_ignores_what_is_not_a_socket() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as client:
        assert _nodelay(client) == 0
        set_nodelay(client)
        assert _nodelay(client) == 1
    set_nodelay(None)
    set_nodelay(object())
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in SOCKET_OPTIONS


async def test_the_cloud_the_app_and_the_car_connect_with_nodelay(
    car: SimCar, app_user: SimUser, cloud: SimCloud
) -> None:
    await app_user.enrol(car)  # the app is connected, the car online, the cloud subscribed
    cloud_client = cloud.handler.link._client  # the aiomqtt client of the running connection
    assert cloud_client is not None
    assert _nodelay(cloud_client._client.socket()) == 1
    app_client = app_user.app._client
    assert app_client is not None
    assert _nodelay(app_client._client.socket()) == 1
    link = car.session._link
    assert link is not None
    assert _nodelay(link._sock) == 1
