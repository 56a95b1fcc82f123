"""Fuzz the simulator-control path of a car: `ControlMessage` parsing as the TCU does it (documented error:
ProtocolError) and `Vehicle.control` on a fresh car (documented error: VehicleError, i.e. InvalidControl or
ControlRefused).

The first byte chooses the car (model and equipment); the rest is up to eight control messages, one per line,
applied in order a minute apart, so that the fuzzer reaches states (driving, unlocked, doors open) where
actions are refused. A refused action changes nothing: the car's revision stays where it was, and its status
still builds.
"""

from __future__ import annotations

import json
import random
import sys

from _harness import collect, instrumented, mode_input, run

with instrumented():
    from protocol_samples import T0, VIN, control_messages

    from tcu_sim.protocol import ControlMessage, ProtocolError, decode_json, parse_body, valid_equipment
    from tcu_sim.vehicle import Vehicle, VehicleError, VehicleModel

_CARS = [(model, equipment) for model in VehicleModel for equipment in sorted(valid_equipment(model))]
_HOME = (41.3874, 2.1686)
_MAX_STEPS = 8


def test_one_input(data: bytes) -> None:
    if not data:
        return
    model, equipment = _CARS[data[0] % len(_CARS)]
    vehicle = Vehicle.new(VIN, model, equipment, _HOME, random.Random(data[0]), T0)
    now = T0
    for line in data[1:].split(b"\n")[:_MAX_STEPS]:
        now += 60.0
        vehicle.advance(now)
        try:
            message = parse_body(ControlMessage, decode_json(line))
        except ProtocolError:
            continue
        before = vehicle.revision
        try:
            vehicle.control(message.action, dict(message.params), now)
        except VehicleError:
            if vehicle.revision != before:
                raise AssertionError(f"a refused {message.action} changed the car") from None
        vehicle.snapshot(now, online=True, signal_pct=80)


def seeds() -> list[bytes]:
    lines = [json.dumps(m.model_dump(mode="json")).encode() for m in collect(control_messages)]
    lines += [
        b'{"action":"unlock_key"}',
        b'{"action":"open_door","params":{"door":"front_left"}}',
        b'{"action":"drive_to","params":{"lat":41.5,"lon":2.2,"speed_kmh":90}}',
        b'{"action":"set_privacy","params":{"mode":"max"}}',
        b'{"action":"tkov","params":{"keys":2}}',
        b'{"action":"enter_pairing_code","params":{"code":"12345678"}}',
        b'{"action":"infotainment_login","params":{"email":"a@example.com","password":"pw"}}',
        b'{"action":"set_battery","params":{"voltage":11.0}}',
        b'{"action":"fault","params":{"kind":"offline"}}',
    ]
    out = [mode_input(car, line) for car in range(len(_CARS)) for line in lines]
    out.append(mode_input(0, b"\n".join(lines[-9:])))
    return out


if __name__ == "__main__":
    run("control", test_one_input, seeds())
    sys.exit(0)
