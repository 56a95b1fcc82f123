"""The cloud's MQTT handler (issue 4): verifies and applies what cars publish, answers the app API, and sends
cars signed commands, on top of the domain services of `broker.cloud`.

    async with CloudHandler(HandlerConfig(), services, clock, host=..., port=..., cloud_key=...,
                            fleet_keys=...) as cloud:
        await cloud.wait_ready(10)
"""

from __future__ import annotations

from ._apps import AppRequests, Reply
from ._cars import CarMessage, CarMessages, StoreUnavailable, seq_stream
from ._commands import COMMAND_SEQ_COUNTER, CommandSender
from ._config import HandlerConfig
from ._directory import ClientDirectory
from ._handler import CloudHandler, quiet_sql_debug_logs
from ._mqtt import AckLedger, Delivery, MqttLink, PublishFailed, Subscription
from ._push import LOCAL_CLIENT_PREFIX, Pusher, PushListener, command_progress_data, describe_error
from ._stats import HandlerStats

__all__ = [
    "COMMAND_SEQ_COUNTER",
    "LOCAL_CLIENT_PREFIX",
    "AckLedger",
    "AppRequests",
    "CarMessage",
    "CarMessages",
    "ClientDirectory",
    "CloudHandler",
    "CommandSender",
    "Delivery",
    "HandlerConfig",
    "HandlerStats",
    "MqttLink",
    "PublishFailed",
    "PushListener",
    "Pusher",
    "Reply",
    "StoreUnavailable",
    "Subscription",
    "command_progress_data",
    "describe_error",
    "quiet_sql_debug_logs",
    "seq_stream",
]
