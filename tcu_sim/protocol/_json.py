"""Hardened JSON: what a receiver decodes from the wire, and how a sender encodes it.

`decode_json` refuses, with ProtocolError and nothing else: input over a size limit (checked before
decoding), invalid UTF-8, duplicate object keys, NaN / Infinity (spelled out or overflowing like `1e999`),
nesting deeper than a limit (checked on the raw text before `json.loads`, so deep input can never reach a
RecursionError), unpaired surrogates, and anything `json` itself cannot parse.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ._errors import ProtocolError, RefusalReason

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_DEPTH", "decode_json", "encode_json"]

DEFAULT_MAX_BYTES = 65536
DEFAULT_MAX_DEPTH = 32

# A JSON string literal, as an unrolled loop: linear time even when the closing quote is missing.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_OPENERS = frozenset(b"[{")
# An escaped UTF-16 surrogate: the only way a JSON text in valid UTF-8 can smuggle an unpaired surrogate in.
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _malformed(detail: str) -> ProtocolError:
    return ProtocolError(RefusalReason.MALFORMED, detail)


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _malformed(f"duplicate key {key[:64]!r}")
            seen.add(key)
    return obj


def _refuse_constant(name: str) -> Any:
    raise _malformed(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _malformed(f"number {text[:32]} is out of range")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_without_duplicates, parse_constant=_refuse_constant, parse_float=_finite_float
)


def _depth_exceeds(raw: bytes, max_depth: int) -> bool:
    # Cheap bound first: a text with no more brackets than the limit cannot nest deeper than it.
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        if match.group()[0] in _OPENERS:
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def _check_strings_encodable(value: Any) -> None:
    """Refuse unpaired surrogates (valid JSON escapes, but not text): they break every later encode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _malformed("string holds an unpaired UTF-16 surrogate") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def decode_json(
    data: bytes | bytearray | memoryview | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Decode one JSON text; any problem with it is a ProtocolError (MALFORMED, or TOO_LARGE)."""
    if isinstance(data, str):
        if len(data) > max_bytes:  # every character is at least one byte: refuse before encoding a huge text
            raise ProtocolError(RefusalReason.TOO_LARGE, f"{len(data)} characters, limit {max_bytes} bytes")
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise _malformed("text holds an unpaired UTF-16 surrogate") from None
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise _malformed(f"expected bytes or str, got {type(data).__name__}")
    if len(raw) > max_bytes:
        raise ProtocolError(RefusalReason.TOO_LARGE, f"{len(raw)} bytes, limit {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"invalid UTF-8 at byte {exc.start}") from None
    if _depth_exceeds(raw, max_depth):
        raise _malformed(f"nested deeper than {max_depth} levels")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise _malformed(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise _malformed(f"invalid JSON: {str(exc)[:100]}") from None
    if _ESCAPED_SURROGATE.search(raw) is not None:
        _check_strings_encodable(value)
    return value


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, no NaN/Infinity). Unencodable input → ProtocolError(MALFORMED)."""
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise _malformed(f"cannot encode as JSON: {type(exc).__name__}: {str(exc)[:120]}") from None
