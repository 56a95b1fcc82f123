"""The Ed25519 check behind `PublicKey.verify_signature` (libsodium through PyNaCl since issue 11): it accepts every
signature `cryptography` makes, refuses any change to message or signature, and is the strict check — a key of
small order cannot "sign" every message, which the lax check of `cryptography`/OpenSSL lets through."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from tcu_sim.protocol import PublicKey

_KEY = Ed25519PrivateKey.generate()
_PUBLIC = PublicKey.from_raw("car", _KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
#: The identity point: a key of small order.
_IDENTITY = bytes([1]) + bytes(31)


@settings(max_examples=200)
@given(message=st.binary(max_size=2048))
def test_every_signature_cryptography_makes_verifies(message: bytes) -> None:
    assert _PUBLIC.verify_signature(_KEY.sign(message), message)


@settings(max_examples=200)
@given(message=st.binary(min_size=1, max_size=512), flip=st.integers(min_value=0))
def test_any_changed_bit_is_refused(message: bytes, flip: int) -> None:
    signature = _KEY.sign(message)
    signed = bytearray(signature + message)
    bit = flip % (len(signed) * 8)
    signed[bit // 8] ^= 1 << (bit % 8)
    assert not _PUBLIC.verify_signature(bytes(signed[:64]), bytes(signed[64:]))


def test_wrong_lengths_are_refused_not_raised() -> None:
    message = os.urandom(32)
    signature = _KEY.sign(message)
    assert not _PUBLIC.verify_signature(signature[:63], message)
    assert not _PUBLIC.verify_signature(signature + b"\0", message)
    assert not _PUBLIC.verify_signature(b"", message)


def test_a_small_order_key_cannot_sign_everything() -> None:
    weak = PublicKey.from_raw("weak", _IDENTITY)
    forged = _IDENTITY + bytes(32)  # R = identity, S = 0: "valid" for any message under the lax check
    for message in (b"", b"lock", os.urandom(100)):
        assert not weak.verify_signature(forged, message)
