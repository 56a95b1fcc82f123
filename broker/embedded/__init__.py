"""The embedded MQTT broker (amqtt, pure Python): what `tcu-sim up` runs when no broker is given.

See `EmbeddedBroker` for its open and secured modes and for what amqtt cannot enforce compared to Mosquitto.
"""

from __future__ import annotations

from ._broker import EmbeddedBroker
from ._plugins import AclTopicPlugin, IdentityAuthPlugin, SecurityState

__all__ = ["AclTopicPlugin", "EmbeddedBroker", "IdentityAuthPlugin", "SecurityState"]
