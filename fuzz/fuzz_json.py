"""Fuzz the hardened JSON decoder (`tcu_sim.protocol.decode_json`): its only error is ProtocolError.

Beyond "no other exception", what it decodes must encode again (`encode_json`) and decode to the same value,
and the bytes and the text form of one input must get the same answer.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from _harness import collect, instrumented, mode_input, run

with instrumented():
    from protocol_samples import app_requests, commands, control_messages, doc_jwks, events, results, status_parked

    from tcu_sim.protocol import ProtocolError, decode_json, encode_json

# (max_bytes, max_depth) the receivers use: the default, a header's, a JWKS's, and tight ones.
_LIMITS = [(65536, 32), (512, 1), (1 << 20, 4), (64, 3)]


def _decode(data: bytes | str, limits: tuple[int, int]) -> tuple[bool, Any]:
    try:
        return True, decode_json(data, max_bytes=limits[0], max_depth=limits[1])
    except ProtocolError as exc:
        return False, exc.reason


def test_one_input(data: bytes) -> None:
    if not data:
        return
    limits = _LIMITS[data[0] % len(_LIMITS)]
    raw = data[1:]
    ok, value = _decode(raw, limits)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        text_ok, text_value = _decode(text, limits)
        # A text counts characters against the limit before encoding, so it may only be refused earlier.
        if text_ok != ok and not (ok and not text_ok and len(text) <= len(raw)):
            raise AssertionError(f"bytes ok={ok}, text ok={text_ok}")
        if text_ok and ok and text_value != value:
            raise AssertionError("bytes and text decode differently")
    if ok:
        again = decode_json(encode_json(value), max_bytes=1 << 30, max_depth=limits[1])
        if again != value:
            raise AssertionError("decode(encode(x)) != x")


def seeds() -> list[bytes]:
    models = collect(lambda: [status_parked()], events, commands, results, app_requests, control_messages)
    samples: list[Any] = [m.model_dump(mode="json") for m in models]
    samples += [doc_jwks(), {"alg": "Ed25519", "kid": "VSSZZZKLZMR012345", "typ": "tcu-status+jwt"}]
    texts = [json.dumps(s).encode() for s in samples]
    texts += [b'{"a":1,"a":2}', b"[NaN]", b"1e999", b'"\\ud800"', b"[[[[[[[[[[]]]]]]]]]]", b'{"x":"\xc3\xa9"}']
    return [mode_input(mode, text) for text in texts for mode in range(len(_LIMITS))]


if __name__ == "__main__":
    run("json", test_one_input, seeds())
    sys.exit(0)
