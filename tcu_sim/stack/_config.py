"""Configuration of a local stack: one validated object (what `tcu-sim up` builds from its options)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from broker.cloud import CloudConfig
from broker.launch import BrokerChoice

__all__ = ["DEFAULT_APP_PORT", "DEFAULT_DEVICE_PORT", "BrokerChoice", "StackConfig"]

DEFAULT_DEVICE_PORT = 8883
DEFAULT_APP_PORT = 8884  # what `tcu-sim app` connects to when given no --broker


class StackConfig(BaseModel):
    """How `LocalStack` runs a fleet file: where its state lives, which broker, which ports, how fast time goes.

    `port` is the device listener (cars, cloud: mutual TLS) of a broker the stack starts, `app_port` its app
    listener (username + password); 0 picks free ports. With `port_fallback`, a busy default port is replaced
    by a free one instead of failing (the printed instructions always carry the ports in use).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: Path
    broker: BrokerChoice = BrokerChoice.AUTO
    #: `mqtts://HOST:PORT` (mutual TLS with the state's fleet PKI) or `mqtt://HOST:PORT`; only with EXTERNAL.
    broker_url: str | None = None
    #: Where apps connect, with their login: `mqtts://USER:PASSWORD@HOST:PORT`. Default: the app listener of the
    #: broker the stack started; for an external `mqtt://` broker, that broker (no login).
    app_broker_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_DEVICE_PORT, ge=0, le=65535)
    app_port: int | None = Field(default=None, ge=0, le=65535, description="None: port + 1 (free when port is 0)")
    port_fallback: bool = True
    #: Simulated seconds per real second, for cars and cloud alike.
    time_scale: float = Field(default=1.0, gt=0)
    command_ttl_s: float = Field(default=60.0, gt=0)
    #: Registry URL; None: `sqlite://<state>/cloud/registry.db`.
    db_url: str | None = None
    #: Create the fleet file's users and enrol their cars (idempotent across runs).
    enrol_users: bool = True
    #: Seconds the broker, the cloud and the enrolment may each take before the start fails.
    start_timeout_s: float = Field(default=20.0, gt=0)
    #: Seconds every car may take to come online before the start fails (P5 wants 5 for the demo).
    online_timeout_s: float = Field(default=30.0, gt=0)
    #: Cars reach the broker through the in-process TCP fault proxy (one route per group), so fleet transport
    #: faults (`tcu-sim fault --group city latency 300ms`, the dashboard's latency and black hole) can be injected.
    fault_proxy: bool = True
    #: Settings of the cloud's rules that differ from the product's (`broker.cloud.CloudConfig` fields, e.g.
    #: `{"spin_max_tries": 2}`): what `tcu-sim replay --cloud-config` uses to try a changed rule.
    cloud_overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _external_needs_url(self) -> StackConfig:
        if (self.broker is BrokerChoice.EXTERNAL) != (self.broker_url is not None):
            raise ValueError("broker_url is given exactly when broker is 'external'")
        return self

    @model_validator(mode="after")
    def _cloud_overrides_valid(self) -> StackConfig:
        try:
            _ = self.cloud_config  # built once here, so a bad override fails before anything starts
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"cloud_overrides: {problems}") from None
        return self

    @property
    def cloud_config(self) -> CloudConfig:
        """The cloud's rules: the product's, with `command_ttl_s` and `cloud_overrides` applied."""
        return CloudConfig.model_validate({"command_ttl_s": self.command_ttl_s, **self.cloud_overrides})

    @property
    def registry_url(self) -> str:
        """The registry URL in use."""
        return self.db_url or f"sqlite://{(self.state_dir / 'cloud' / 'registry.db').absolute()}"
