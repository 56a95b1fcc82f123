"""Hardened JSON decoding: one error type for every malformed input, limits checked before the work."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcu_sim.protocol import ProtocolError, RefusalReason, decode_json, encode_json

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def refusal(data: Any, **kwargs: int) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_json(data, **kwargs)
    return info.value


def test_error_str_is_reason_and_detail() -> None:
    err = ProtocolError(RefusalReason.MALFORMED, "body.x: bad")
    assert str(err) == "malformed: body.x: bad"
    assert err.reason is RefusalReason.MALFORMED
    assert err.detail == "body.x: bad"
    assert repr(err) == "ProtocolError('malformed', 'body.x: bad')"


def test_error_detail_is_bounded() -> None:
    err = ProtocolError(RefusalReason.MALFORMED, "x" * 5000)
    assert len(err.detail) == ProtocolError.MAX_DETAIL


def test_decodes_plain_json() -> None:
    assert decode_json(b'{"a": [1, 2.5, "\xc3\xa9", true, null]}') == {"a": [1, 2.5, "é", True, None]}
    assert decode_json('{"a": 1}') == {"a": 1}
    assert decode_json(bytearray(b"[]")) == []


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"x": {"b": 1, "b": 1}}', "duplicate key 'b'"),
        (b"[NaN]", "NaN"),
        (b'{"t": Infinity}', "Infinity"),
        (b"[-Infinity]", "-Infinity"),
        (b"[1e999]", "out of range"),
        (b"[-1e400]", "out of range"),
        (b"[" + b"9" * 400 + b".0]", "out of range"),
        (b"\xff\xfe{}", "invalid UTF-8 at byte 0"),
        (b'{"a": "\xed\xa0\x80"}', "invalid UTF-8"),  # a UTF-16 surrogate encoded as UTF-8
        (b'["\\ud800"]', "unpaired UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "unpaired UTF-16 surrogate"),
        (b"", "Expecting value"),
        (b'{"a": 1', "line 1"),
        (b"[1,]", "invalid JSON"),
        (b"\xef\xbb\xbf{}", "invalid JSON"),  # a byte-order mark is not JSON
        (b"[" + b"1" * 5000 + b"]", "invalid JSON"),  # integer over Python's 4300-digit limit
    ],
)
def test_malformed_input_is_refused_with_its_problem(data: bytes, fragment: str) -> None:
    err = refusal(data)
    assert err.reason is RefusalReason.MALFORMED
    assert fragment in err.detail


def test_unpaired_surrogate_in_text_is_refused() -> None:
    assert refusal('"\ud800"').reason is RefusalReason.MALFORMED


def test_surrogate_pair_is_one_character() -> None:
    assert decode_json(b'"\\ud83d\\ude00"') == "\U0001f600"


def test_size_is_checked_before_decoding() -> None:
    assert decode_json(b" " * 10 + b"1", max_bytes=11) == 1
    err = refusal(b" " * 11 + b"1", max_bytes=11)
    assert err.reason is RefusalReason.TOO_LARGE
    assert "12 bytes" in err.detail
    # text is measured in UTF-8 bytes: 6 characters, 10 bytes
    assert decode_json('"éééé"', max_bytes=10) == "éééé"
    assert refusal('"éééé"', max_bytes=9).reason is RefusalReason.TOO_LARGE
    assert refusal("[" * 1_000_000).reason is RefusalReason.TOO_LARGE


def test_depth_limit_is_exact() -> None:
    assert decode_json(b"[" * 32 + b"]" * 32) is not None
    err = refusal(b"[" * 33 + b"]" * 33)
    assert err.reason is RefusalReason.MALFORMED
    assert "deeper than 32" in err.detail
    assert decode_json(b'{"a":' * 3 + b"1" + b"}" * 3, max_depth=3) == {"a": {"a": {"a": 1}}}
    assert refusal(b'{"a":' * 4 + b"1" + b"}" * 4, max_depth=3).reason is RefusalReason.MALFORMED


def test_deep_nesting_never_reaches_recursion() -> None:
    # far past the interpreter's recursion limit, within the size limit
    for opener in (b"[", b'{"a":'):
        err = refusal(opener * 60_000, max_bytes=1_000_000)
        assert err.reason is RefusalReason.MALFORMED


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = json.dumps({"a": "[" * 100, "b": ['\\"[[[[', "{{{{"]}).encode()
    assert decode_json(text, max_depth=2)["a"] == "[" * 100


def test_non_text_input_is_malformed() -> None:
    assert refusal(12345).reason is RefusalReason.MALFORMED


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_json(data, max_bytes=200, max_depth=4)


@given(st.text(max_size=300))
def test_any_text_decodes_or_raises_protocol_error(data: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode_json(data, max_bytes=200, max_depth=4)


@given(st.text(alphabet='[]{}",:\\ 0123456789.eE+-truefalsnNIy', max_size=200))
def test_json_like_noise_decodes_or_raises_protocol_error(data: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode_json(data, max_depth=5)


@given(JSON_VALUES)
def test_encode_decode_round_trip(value: Any) -> None:
    encoded = encode_json(value)
    assert b" " not in encode_json([1, {"a": 2}])
    assert decode_json(encoded, max_bytes=1_000_000) == value


def test_encode_is_compact_utf8() -> None:
    assert encode_json({"a": [1, 2.5], "é": None}) == '{"a":[1,2.5],"é":null}'.encode()


@pytest.mark.parametrize("value", [math.nan, math.inf, {"a": object()}, {1j: 1}, ["\ud800"]])
def test_encode_refuses_what_json_cannot_hold(value: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        encode_json(value)
    assert info.value.reason is RefusalReason.MALFORMED
