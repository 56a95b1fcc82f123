"""`tcu-sim car VIN ACTION [KEY=VALUE ...]`: what a person does in or at a simulated car.

The action is published as the `operator` identity on `sim/{vin}/control` (the only identity the broker lets
write there) with an `id`; the car turns it into the matching state change and signed event, and answers on
`sim/{vin}/control/results` (applied, or refused and why). The command waits for that answer: exit 0 when the car
applied it, 1 when it refused it or no car answered within `--timeout`.

The broker is `--broker`, else the one the stack running on `--state` recorded (`<state>/endpoints.json`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import click

from tcu_sim._net import SOCKET_OPTIONS
from tcu_sim.cli._broker_url import device_broker_url, parse_broker_url
from tcu_sim.cli._operator import operator_login
from tcu_sim.faults import ControlReplies, new_control_id
from tcu_sim.protocol import (
    ControlAction,
    ControlMessage,
    ControlResult,
    ProtocolError,
    Topics,
    encode_json,
    validate_vin,
)
from tcu_sim.vehicle import CONTROL_PARAMS, InvalidControl, check_control

__all__ = ["car", "parse_params"]



def _actions_help() -> str:
    """Each action and what it takes, from the vehicle model's own parameter declarations."""
    lines = ["\b", "Actions and their parameters (KEY=VALUE):"]
    for action in ControlAction:
        if action is ControlAction.FAULT:
            continue
        params = CONTROL_PARAMS.get(action, ())
        lines.append(f"  {action.value:<20} " + (" ".join(p.describe() for p in params) or "-"))
    return "\n".join(lines)


_EXAMPLES = _actions_help() + """

\b
Examples:
  tcu-sim car VSS... open_door door=front_left
  tcu-sim car VSS... drive_to lat=41.40 lon=2.19
  tcu-sim car VSS... set_privacy mode=no_position
  tcu-sim car VSS... enter_pairing_code code=12345678
  tcu-sim car VSS... tkov
  tcu-sim car VSS... infotainment_login email=you@example.test password=...
  tcu-sim car VSS... ecall
"""


def parse_params(pairs: tuple[str, ...], *, param_hint: str = "PARAMS") -> dict[str, Any]:
    """`key=value` pairs to a dict; values are JSON when they parse as JSON (numbers, true/false), else text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint=param_hint)
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


@click.command("car", epilog=_EXAMPLES)
@click.argument("vin")
@click.argument("action", type=click.Choice([a.value for a in ControlAction if a is not ControlAction.FAULT]))
@click.argument("params", nargs=-1)
@click.option("--broker", "broker_url", default=None,
              help="Device listener of the broker (mutual TLS as `operator`). [default: the broker of the stack "
                   "running on --state, else mqtts://127.0.0.1:8883]")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".tcu-sim/demo"),
              show_default=True, help="State directory with the fleet PKI (for the operator certificate).")
@click.option("--topic-prefix", default="", help="Topic prefix of the fleet.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for the broker, and then for the car's answer.")
def car(
    vin: str, action: str, params: tuple[str, ...], broker_url: str | None, state_dir: Path, topic_prefix: str,
    timeout: float,
) -> None:
    """Do ACTION at the car VIN, as a person there would (open a door, drive somewhere, enrol, press eCall)."""
    try:
        validate_vin(vin)
        message = ControlMessage(action=ControlAction(action), params=parse_params(params), id=new_control_id())
    except ProtocolError as exc:
        raise click.BadParameter(str(exc), param_hint="VIN") from None
    try:
        check_control(message.action, message.params)  # a typo fails here, not in the stack's log
    except InvalidControl as exc:
        raise click.BadParameter(f"{exc} (`tcu-sim car --help` lists each action's parameters)",
                                 param_hint="PARAMS") from None
    assert message.id is not None  # just given
    control_id = message.id
    broker = parse_broker_url(device_broker_url(broker_url, state_dir))
    identifier, tls = f"operator-cli-{vin}", None
    if broker.tls:
        identifier, tls = operator_login(state_dir)  # an operator identity of its own: client id = CN
    topics = Topics(topic_prefix)
    topic = topics.control(vin)

    async def send() -> ControlResult | None:
        async with asyncio.timeout(timeout) as connecting, aiomqtt.Client(
            broker.host, broker.port, identifier=identifier, tls_context=tls, timeout=timeout,
            socket_options=SOCKET_OPTIONS,
        ) as client:
            replies = ControlReplies(client, topics)
            await replies.subscribe([vin])
            await client.publish(topic, encode_json(message.model_dump(mode="json", exclude_none=True)), qos=1)
            connecting.reschedule(None)  # sent: the car's answer has a timeout of its own
            return (await replies.wait(control_id, [vin], timeout=timeout)).get(vin)

    try:
        reply = asyncio.run(send())
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        raise click.ClickException(f"{broker}: could not publish to {topic}: {exc or type(exc).__name__}") from None
    if reply is None:
        raise click.ClickException(
            f"{vin}: {action}: no car answered within {timeout:g} s (is {vin} in the running fleet?)"
        )
    if not reply.ok:
        raise click.ClickException(f"{vin}: {action} refused by the car: {reply.error or 'no reason given'}")
    click.echo(f"{vin}: {action} ok")
