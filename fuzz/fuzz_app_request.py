"""Fuzz the cloud's reading of an app request (`broker/handler/_apps.py`) up to the dispatch by op.

What `AppRequests.handle` does before it needs the services: `decode_json` and `parse_body(AppRequest, ...)`
(documented error: ProtocolError), the best-effort id of an unreadable request and its INVALID_REQUEST reply,
the parameter readers every op uses (documented error: InvalidRequest), a command's parameters
(`command_params`, ProtocolError), and the encoding of the reply. A request's repr never shows its token.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from _harness import collect, instrumented, run

with instrumented():
    from protocol_samples import app_requests

    from broker.cloud import InvalidRequest
    from broker.handler import Reply
    from broker.handler._apps import (
        _UNREADABLE,
        _bool,
        _dict,
        _int,
        _number,
        _opt_str,
        _readable_id,
        _str,
        _vin,
    )
    from tcu_sim.protocol import (
        AppError,
        AppOp,
        AppRequest,
        AppResponse,
        ErrorCode,
        ProtocolError,
        command_params,
        decode_json,
        parse_body,
    )

_MAX_BYTES = 65_536
# Every parameter reader, as the ops call them (the bounds of set_reauth_timeout, speed and area alerts, ...).
_READERS: list[Callable[[Mapping[str, Any], str], object]] = [
    lambda p, k: _str(p, k),
    lambda p, k: _str(p, k, max_len=16),
    lambda p, k: _opt_str(p, k, max_len=16),
    lambda p, k: _int(p, k, lo=5, hi=15),
    lambda p, k: _int(p, k, default=0, lo=0, hi=1000),
    lambda p, k: _number(p, k, lo=-90, hi=90),
    lambda p, k: _bool(p, k, default=False),
    lambda p, k: _dict(p, k),
    lambda p, k: _vin(p),
]


def _failure(request_id: str, error: AppError) -> None:
    payload = Reply(AppResponse.failure(request_id, error)).payload()
    if json.loads(payload)["id"] != request_id:
        raise AssertionError("the reply does not carry the request's id")


def test_one_input(data: bytes) -> None:
    try:
        request = parse_body(AppRequest, decode_json(data, max_bytes=_MAX_BYTES), where="request")
    except ProtocolError:
        request_id = _readable_id(data, _MAX_BYTES)
        if request_id is not None:
            _failure(request_id, AppError(code=ErrorCode.INVALID_REQUEST, message=_UNREADABLE))
        return
    if request.token and f"token={request.token!r}" in repr(request):
        raise AssertionError("a request's repr shows its token")
    known = request.op in set(AppOp)
    params = request.params
    for key in list(params)[:8]:
        for read in _READERS:
            try:
                read(params, key)
            except InvalidRequest as exc:
                _failure(request.id, exc.to_app_error())
    if known and request.op == AppOp.COMMAND:
        op, command = params.get("op"), params.get("params", {})
        if isinstance(op, str) and isinstance(command, dict):
            with contextlib.suppress(ProtocolError):
                command_params(op, command)
    Reply(AppResponse.success(request.id, {"op": request.op[:64]})).payload()


def seeds() -> list[bytes]:
    texts = [json.dumps(r.model_dump(mode="json")).encode() for r in collect(app_requests)]
    texts += [
        b'{"id":"r1","op":"set_reauth_timeout","token":"t","params":{"minutes":10}}',
        b'{"id":"r2","op":"area_alert.set","token":"t","params":{"vin":"VSSZZZKLZMR012345","lat":41.4,"lon":2.1,'
        b'"radius_m":500,"enabled":true}}',
        b'{"id":"r3","op":"add_vehicle","token":"t","params":{"vin":"VSSZZZKLZMR012345","accept_terms":true}}',
        b'{"id":"r4","op":"nope"}',
        b'{"id":"r5"',
    ]
    return texts


if __name__ == "__main__":
    run("app_request", test_one_input, seeds())
    sys.exit(0)
