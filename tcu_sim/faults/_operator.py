"""The operator's side of live faults: `fault` controls published on `sim/{vin}/control`.

    async with broker.client("operator", identifier="tcu-sim-fault") as client:
        operator = FaultOperator(client)
        await operator.send([vin], OfflineFault(duration_s=30))

Only the `operator` identity may write `sim/#` (broker ACL). Every fault gets an `id` (one id for all the cars
of one call), so a copy the broker delivers twice is applied once, and a group fault sent to every car of a
group is put on a shared group route once. The control carries the same `id`, and each car answers it on
`sim/{vin}/control/results` (`ControlResult`: applied, or refused and why); `ControlReplies` collects them:

    replies = ControlReplies(client, topics)
    await replies.subscribe(vins)                      # before sending: a reply is not retained
    fault_id = await operator.send(vins, fault)
    answers = await replies.wait(fault_id, vins, timeout=10)   # VIN -> ControlResult, for those that answered
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import aiomqtt

from tcu_sim.protocol import ControlResult, ProtocolError, Topics, decode_json, encode_json, parse_body

from ._spec import CarFault

__all__ = ["ControlReplies", "FaultOperator", "control_payload", "fault_payload", "new_control_id"]


def new_control_id() -> str:
    """A fresh id for a control (and the fault it carries)."""
    return f"op-{secrets.token_hex(6)}"


def control_payload(action: str, params: Mapping[str, Any] | None = None, control_id: str | None = None) -> bytes:
    """The JSON of a simulator control message (`sim/{vin}/control`); with `control_id`, the car replies."""
    message: dict[str, Any] = {"action": action, "params": dict(params or {})}
    if control_id is not None:
        message["id"] = control_id
    return encode_json(message)


def fault_payload(fault: CarFault) -> bytes:
    """The control message carrying `fault` (and its id, so the car replies)."""
    return control_payload("fault", fault.model_dump(mode="json", exclude_none=True), fault.id)


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
            fault = fault.model_copy(update={"id": new_control_id()})
        assert fault.id is not None  # just set
        payload = fault_payload(fault)
        for vin in vins:
            await self.client.publish(self.topics.control(vin), payload, qos=1)
            self.sent += 1
        return fault.id

    async def control(
        self,
        vins: Iterable[str],
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        control_id: str | None = None,
    ) -> None:
        """Publish a plain control (what a person at the car does) to each car; with `control_id`, they reply."""
        payload = control_payload(action, params, control_id)
        for vin in vins:
            await self.client.publish(self.topics.control(vin), payload, qos=1)
            self.sent += 1


class ControlReplies:
    """The cars' answers on `sim/{vin}/control/results` (read by the operator, over its aiomqtt client)."""

    def __init__(self, client: aiomqtt.Client, topics: Topics | None = None) -> None:
        self.client = client
        self.topics = topics or Topics()
        self._topics: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"ControlReplies(cars={len(self._topics)})"

    async def subscribe(self, vins: Iterable[str]) -> None:
        """Subscribe to these cars' replies (before sending: replies are not retained)."""
        for vin in vins:
            topic = self.topics.control_results(vin)
            self._topics[topic] = vin
            await self.client.subscribe(topic, qos=1)

    async def wait(self, control_id: str, vins: Iterable[str], *, timeout: float) -> dict[str, ControlResult]:
        """The replies to `control_id` of `vins` that came within `timeout` seconds (a car that did not answer in
        time is missing from the result). Replies to other ids and unreadable ones are ignored."""
        wanted = set(vins)
        answers: dict[str, ControlResult] = {}
        if not wanted:
            return answers
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async for message in self.client.messages:
                    vin = self._topics.get(str(message.topic))
                    if vin is None or vin not in wanted or not isinstance(message.payload, bytes | bytearray):
                        continue
                    try:
                        reply = parse_body(ControlResult, decode_json(bytes(message.payload)))
                    except ProtocolError:
                        continue
                    if reply.id == control_id:
                        answers[vin] = reply
                        if wanted <= answers.keys():
                            break
        return answers
