"""The operator's side of live faults: `fault` controls published on `sim/{vin}/control`.

    async with broker.client("operator", identifier="tcu-sim-fault") as client:
        operator = FaultOperator(client)
        await operator.send([vin], OfflineFault(duration_s=30))

Only the `operator` identity may write `sim/#` (broker ACL). Every fault gets an `id` (one id for all the cars
of one call), so a copy the broker delivers twice is applied once, and a group fault sent to every car of a
group is put on a shared group route once.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import aiomqtt

from tcu_sim.protocol import Topics, encode_json

from ._spec import CarFault

__all__ = ["FaultOperator", "control_payload", "fault_payload"]


def control_payload(action: str, params: Mapping[str, Any] | None = None) -> bytes:
    """The JSON of a simulator control message (`sim/{vin}/control`)."""
    return encode_json({"action": action, "params": dict(params or {})})


def fault_payload(fault: CarFault) -> bytes:
    """The control message carrying `fault`."""
    return control_payload("fault", fault.model_dump(mode="json", exclude_none=True))


class FaultOperator:
    """Publishes faults and controls to cars as the operator (over an aiomqtt client with its certificate)."""

    def __init__(self, client: aiomqtt.Client, topics: Topics | None = None) -> None:
        self.client = client
        self.topics = topics or Topics()
        self.sent = 0

    def __repr__(self) -> str:
        return f"FaultOperator(sent={self.sent})"

    async def send(self, vins: Iterable[str], fault: CarFault) -> str:
        """Publish `fault` to each car (QoS 1); the fault's id."""
        if fault.id is None:
            fault = fault.model_copy(update={"id": f"op-{secrets.token_hex(6)}"})
        assert fault.id is not None  # just set
        payload = fault_payload(fault)
        for vin in vins:
            await self.client.publish(self.topics.control(vin), payload, qos=1)
            self.sent += 1
        return fault.id

    async def control(self, vins: Iterable[str], action: str, params: Mapping[str, Any] | None = None) -> None:
        """Publish a plain control (what a person at the car does) to each car."""
        payload = control_payload(action, params)
        for vin in vins:
            await self.client.publish(self.topics.control(vin), payload, qos=1)
            self.sent += 1
