"""Fuzz the JWS envelope decoder (`tcu_sim.protocol.Verifier`, JWKS and base64url parsing) and the bodies a
receiver validates after it: the only documented error of all of it is ProtocolError.

The first byte chooses what the rest is: a whole token; claims, or a header and claims, that the harness signs
with the car key the verifier trusts (so that the fuzzer gets past the signature to the claims checks and the
body models); a JWKS; a command the car refused (its id is read best-effort, which must never raise); or
base64url text. Other bits of the first byte choose the message type, the verifier's algorithms, and whether
issuer and kid are pinned.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from _harness import collect, instrumented, mode_input, run

with instrumented():
    from protocol_samples import DOC_CAR_KEY, T0, VIN, commands, doc_jwks, events, results, status_parked
    from pydantic import BaseModel

    from tcu_sim.clock import VirtualClock
    from tcu_sim.protocol import (
        CLOUD,
        DEFAULT_ALGORITHMS,
        LEGACY_ALGORITHMS,
        Command,
        CommandResult,
        Event,
        KeySet,
        MessageType,
        ProtocolError,
        Signer,
        StatusSnapshot,
        Verifier,
        b64url_decode,
        b64url_encode,
        command_params,
        parse_body,
    )
    from tcu_sim.transport._session import UNKNOWN_COMMAND_ID, _untrusted_command_id

TOKEN, CLAIMS, HEADER_AND_CLAIMS, JWKS, COMMAND_ID, BASE64URL = range(6)
_MODES = 6
_TYPES = list(MessageType)
_BODIES: dict[MessageType, type[BaseModel]] = {
    MessageType.STATUS: StatusSnapshot,
    MessageType.EVENT: Event,
    MessageType.COMMAND: Command,
    MessageType.RESULT: CommandResult,
}
_KEYS = KeySet([DOC_CAR_KEY.public_key()])
_VERIFIERS = {
    legacy: Verifier(
        _KEYS, audience=CLOUD, clock=VirtualClock(T0), algorithms=LEGACY_ALGORITHMS if legacy else DEFAULT_ALGORITHMS
    )
    for legacy in (False, True)
}
_SEPARATOR = b"\x00"


def _signed(header: bytes, claims: bytes) -> bytes:
    signing_input = b64url_encode(header) + b"." + b64url_encode(claims)
    return signing_input + b"." + b64url_encode(DOC_CAR_KEY.sign(signing_input))


def _header(typ: MessageType) -> bytes:
    return json.dumps({"alg": "Ed25519", "kid": VIN, "typ": typ.value}, separators=(",", ":")).encode()


def _verify(token: bytes | str, typ: MessageType, flags: int) -> None:
    verifier = _VERIFIERS[bool(flags & 1)]
    pinned = bool(flags & 2)
    verified = verifier.verify(token, typ=typ, issuer=VIN if pinned else None, kid=VIN if pinned else None)
    body = parse_body(_BODIES[verified.typ], verified.body)
    if isinstance(body, Command):
        command_params(body.op, body.params)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    # bits 0-2: mode, 3-4: message type, 5-7: flags (legacy algorithms, issuer and kid pinned)
    mode, typ, flags, rest = (data[0] & 7) % _MODES, _TYPES[(data[0] >> 3) & 3], data[0] >> 5, data[1:]
    try:
        if mode == TOKEN:
            _verify(rest, typ, flags)
            if rest.isascii():
                _verify(rest.decode("ascii"), typ, flags)  # the same token as text
        elif mode == CLAIMS:
            _verify(_signed(_header(typ), rest), typ, flags)
        elif mode == HEADER_AND_CLAIMS:
            header, _, claims = rest.partition(_SEPARATOR)
            _verify(_signed(header, claims), typ, flags)
        elif mode == JWKS:
            keys = KeySet.from_jwks(rest)
            if KeySet.from_jwks(json.dumps(keys.to_jwks())).kids() != keys.kids():
                raise AssertionError("a JWKS does not survive to_jwks/from_jwks")
        elif mode == COMMAND_ID:
            command_id = _untrusted_command_id(rest)  # documented: never raises, UNKNOWN_COMMAND_ID at worst
            if command_id != UNKNOWN_COMMAND_ID and not 0 < len(command_id) <= 64:
                raise AssertionError(f"command id of {len(command_id)} characters")
        else:
            b64url_decode(rest)
            b64url_decode(rest.decode("latin-1"))
    except ProtocolError:
        pass


def seeds() -> list[bytes]:
    signer = Signer(DOC_CAR_KEY, VIN, VirtualClock(T0))
    bodies: list[tuple[MessageType, Any]] = [(MessageType.STATUS, m) for m in collect(lambda: [status_parked()])]
    bodies += [(MessageType.EVENT, m) for m in collect(events)]
    bodies += [(MessageType.COMMAND, m) for m in collect(commands)]
    bodies += [(MessageType.RESULT, m) for m in collect(results)]
    out: list[bytes] = []
    for seq, (typ, body) in enumerate(bodies):
        token = signer.sign(typ, aud=CLOUD, seq=seq, body=body).encode()
        header_b64, claims_b64, _ = token.split(b".")
        header, claims = b64url_decode(header_b64), b64url_decode(claims_b64)
        typ_bits = _TYPES.index(typ) << 3
        for flags in (0, 1 << 5, 3 << 5):
            out.append(mode_input(TOKEN | typ_bits | flags, token))
        out.append(mode_input(CLAIMS | typ_bits, claims))
        out.append(mode_input(HEADER_AND_CLAIMS | typ_bits, header + _SEPARATOR + claims))
        out.append(mode_input(COMMAND_ID, token))
    out.append(mode_input(JWKS, json.dumps(doc_jwks()).encode()))
    out.append(mode_input(BASE64URL, b64url_encode(DOC_CAR_KEY.public_key().raw)))
    return out


if __name__ == "__main__":
    run("envelope", test_one_input, seeds())
    sys.exit(0)
