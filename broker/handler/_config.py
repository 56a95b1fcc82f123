"""Configuration of the cloud's MQTT handler: one validated object."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["HandlerConfig"]


class HandlerConfig(BaseModel):
    """How the handler talks to the broker and how hard it works.

    Time rules (command TTL, S-PIN lockout, licences) are the domain services' `CloudConfig`; the intervals
    here are on the injected clock, so a virtual clock drives them in tests.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Topic prefix in front of every topic (SPEC §2.1), e.g. a per-test one.
    topic_prefix: str = ""
    #: MQTT client id of this cloud process; give each process of a scaled-out cloud its own.
    client_id: str = Field(default="cloud", min_length=1, max_length=128)
    #: MQTT 5 shared subscriptions (`$share/{share_group}/...`), so that several cloud processes split the
    #: car and app traffic. `tcu/+/connection` is always subscribed unshared (every process keeps every car's
    #: connection state, and gets the retained ones, which a shared subscription never delivers).
    shared_subscriptions: bool = False
    share_group: str = Field(default="cloud", min_length=1, max_length=64)
    #: Take app requests over MQTT (`app/+/request`). On a broker without shared subscriptions (the NATS
    #: cluster) every cloud process would receive and answer every request — an S-PIN checked twice counts two
    #: failures — so there exactly one process takes them and the others run with False (the HTTP app API, if
    #: served, still answers: an HTTP request reaches one process).
    mqtt_apps: bool = True
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    publish_timeout_s: float = Field(default=10.0, gt=0)
    #: Broker-side session kept while the cloud is away (messages for it are queued); 0: a clean session.
    session_expiry_s: int = Field(default=3600, ge=0)
    #: Reconnect backoff: full jitter over `base * 2**attempt`, capped.
    reconnect_base_s: float = Field(default=0.5, gt=0)
    reconnect_cap_s: float = Field(default=30.0, gt=0)
    #: Workers per kind of traffic; a car (or an app client) always goes to the same worker, so its
    #: messages are applied in the order they arrived.
    car_workers: int = Field(default=4, ge=1, le=256)
    app_workers: int = Field(default=4, ge=1, le=256)
    #: Each worker's queue; a full queue holds back the reader (back-pressure to the client's own queue).
    worker_queue_size: int = Field(default=1000, ge=1)
    #: A car worker applies what waits in its queue as one batch of at most this many messages, in ONE registry
    #: transaction for the statuses (seq claims and last statuses together).
    car_batch_max: int = Field(default=256, ge=1, le=10_000)
    #: How long a worker may wait for more messages before it applies a batch that is not full (0: no timed wait;
    #: the worker only gives the loop a few turns to bring in what already arrived, see `CloudHandler._fill`).
    car_batch_wait_s: float = Field(default=0.0, ge=0, le=1.0)
    #: PUBACK a message only once the cloud is done with it — a car message applied (committed) or refused, an
    #: app request answered — in the order the messages came (MQTT 5.0 §4.6). With a kept session the broker
    #: delivers again whatever was not acknowledged when the cloud fell over or lost its connection; the seq
    #: windows drop what had been applied already. False: acknowledged on receipt (what the cloud holds in
    #: memory is lost with it).
    ack_after_apply: bool = True
    #: MQTT 5 Receive Maximum: how many unacknowledged messages the broker may send this process at once (with
    #: MQTT 3.1.1 the broker's `max_inflight_messages` decides). Bounds what the cloud holds unacknowledged.
    receive_maximum: int = Field(default=2000, ge=1, le=65_535)
    #: Worker processes that verify car statuses (signature, claims, body) beside the event loop, which then only
    #: moves messages and writes the registry (see `broker.handler._verifypool`); 0: verify on the event loop.
    #: Verification is most of a status's CPU and CPython runs one thread at a time: this is how one cloud
    #: process uses more than one core for it.
    verify_processes: int = Field(default=0, ge=0, le=64)
    #: How long a batch is retried while the registry is unavailable (locked, connection lost, deadlock); after
    #: that the cloud reconnects without acknowledging it, so the broker delivers it again.
    store_retry_s: float = Field(default=30.0, gt=0)
    #: The MQTT client's incoming queue; what does not fit is dropped, logged and counted.
    incoming_queue_limit: int = Field(default=50_000, ge=1)
    max_message_bytes: int = Field(default=65_536, ge=1024)
    #: Longest a worker may spend on one message or request (store calls included) before it gives up on it.
    message_timeout_s: float = Field(default=30.0, gt=0)
    #: Longest one run of a periodic task (expiry, reminders) may take.
    job_timeout_s: float = Field(default=120.0, gt=0)
    #: Clock skew allowed on car messages' `exp` / `iat`.
    clock_skew_s: float = Field(default=30.0, ge=0)
    #: Also accept car messages signed as `alg: EdDSA` (RFC 8037, deprecated by RFC 9864) from legacy cars.
    legacy_eddsa: bool = False
    #: A command is reported `timed_out` this long after its TTL: the car accepts a command up to its own
    #: clock-skew allowance past `exp`, so the cloud waits as long before it calls it lost.
    expiry_grace_s: float = Field(default=30.0, ge=0)
    #: How often overdue commands are looked for (clock seconds).
    expiry_interval_s: float = Field(default=1.0, gt=0)
    #: How often licence reminders are looked for (clock seconds); R14's stages are days apart.
    reminder_interval_s: float = Field(default=3600.0, gt=0)
    #: Send licence reminders to the car's infotainment too (besides the e-mail).
    notify_reminders_in_car: bool = True

    @model_validator(mode="after")
    def _shared_needs_v5(self) -> HandlerConfig:
        if self.shared_subscriptions and self.protocol != "5":
            raise ValueError("shared subscriptions need MQTT 5 (protocol='5')")
        if self.ack_after_apply and self.receive_maximum > self.incoming_queue_limit:
            # Unacknowledged messages must fit the client's queue: one it had to drop would never be acknowledged.
            raise ValueError("receive_maximum must not exceed incoming_queue_limit")
        return self
