"""Interop with an independent JOSE implementation (joserfc): any standard library can check our messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, SecurityWarning
from joserfc.jwk import KeySet as JoseKeySet
from joserfc.jwk import OKPKey

from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import (
    CLOUD,
    LEGACY_ALGORITHMS,
    Command,
    CommandOp,
    KeySet,
    MessageType,
    ProtocolError,
    PublicKey,
    RefusalReason,
    Signer,
    SigningKey,
    Verifier,
)

# joserfc warns (SecurityWarning) on the polymorphic "EdDSA" that RFC 9864 deprecates: any warning is an error
# here, so that a token or JWKS of ours that says EdDSA again fails these tests.
pytestmark = pytest.mark.filterwarnings("error")

VIN = "VSSZZZKLZMR012345"
T0 = 1_767_225_600.0


def jose_car_key(kid: str) -> OKPKey:
    return OKPKey.generate_key("Ed25519", parameters={"kid": kid}, private=True)


def test_our_token_verifies_with_joserfc_from_our_jwks() -> None:
    car = SigningKey.generate(VIN)
    fleet = KeySet([car.public_key(), SigningKey.generate("VSSZZZ5FZNA000042").public_key()])
    token = Signer(car, VIN, VirtualClock(T0)).sign(
        MessageType.STATUS, aud=CLOUD, seq=12, body={"locked": True, "range_km": 410.5}
    )

    jose_keys = JoseKeySet.import_key_set(json.loads(json.dumps(fleet.to_jwks())))  # a JWKS as read from a file
    compact = jws.deserialize_compact(token, jose_keys, algorithms=["Ed25519"])
    assert compact.headers() == {"alg": "Ed25519", "kid": VIN, "typ": "tcu-status+jwt"}
    decoded = jwt.decode(token, jose_keys, algorithms=["Ed25519"])
    assert decoded.header["typ"] == "tcu-status+jwt"
    assert decoded.claims["iss"] == VIN
    assert decoded.claims["aud"] == CLOUD
    assert decoded.claims["seq"] == 12
    assert decoded.claims["iat"] == int(T0)
    assert decoded.claims["body"] == {"locked": True, "range_km": 410.5}


def test_joserfc_refuses_our_token_with_another_key() -> None:
    token = Signer(SigningKey.generate(VIN), VIN, VirtualClock(T0)).sign(MessageType.STATUS, aud=CLOUD, seq=1, body={})
    impostor = JoseKeySet.import_key_set(
        json.loads(json.dumps(KeySet([SigningKey.generate(VIN).public_key()]).to_jwks()))
    )
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(token, impostor, algorithms=["Ed25519"])


def test_cloud_command_verifies_with_joserfc() -> None:
    cloud = SigningKey.generate("cloud-1")
    command = Command(command_id="c-1", op=CommandOp.AUX_HEATING_START, params={"duration_min": 20})
    token = Signer(cloud, CLOUD, VirtualClock(T0), ttl_s=60).sign(MessageType.COMMAND, aud=VIN, seq=3, body=command)
    decoded = jwt.decode(token, OKPKey.import_key(dict(cloud.public_jwk())), algorithms=["Ed25519"])
    assert decoded.claims["body"] == {"command_id": "c-1", "op": "aux_heating.start", "params": {"duration_min": 20}}
    assert decoded.claims["exp"] == int(T0) + 60


def _jose_claims(kid: str, **overrides: Any) -> dict[str, Any]:
    return {
        "iss": kid,
        "aud": CLOUD,
        "iat": int(T0),
        "exp": int(T0) + 300,
        "jti": "jose-1",
        "seq": 4,
        "body": {"type": "door_opened", "at": T0, "door": "trunk"},
        **overrides,
    }


def test_joserfc_token_verifies_with_our_verifier() -> None:
    key = jose_car_key(VIN)
    fleet = KeySet([PublicKey.from_jwk(key.as_dict(private=False))])
    header = {"alg": "Ed25519", "kid": VIN, "typ": MessageType.EVENT.value}
    token = jwt.encode(header, _jose_claims(VIN), key, algorithms=["Ed25519"])

    verified = Verifier(fleet, audience=CLOUD, clock=VirtualClock(T0)).verify(
        token, typ=MessageType.EVENT, issuer=VIN, kid=VIN
    )
    assert verified.body == {"type": "door_opened", "at": T0, "door": "trunk"}
    assert (verified.seq, verified.jti, verified.kid) == (4, "jose-1", VIN)


def test_joserfc_eddsa_token_needs_the_legacy_option() -> None:
    key = jose_car_key(VIN)
    fleet = KeySet([PublicKey.from_jwk(key.as_dict(private=False))])
    header = {"alg": "EdDSA", "kid": VIN, "typ": MessageType.EVENT.value}
    with pytest.warns(SecurityWarning, match="RFC 9864"):
        token = jwt.encode(header, _jose_claims(VIN), key, algorithms=["EdDSA"])

    with pytest.raises(ProtocolError) as info:
        Verifier(fleet, audience=CLOUD, clock=VirtualClock(T0)).verify(token, typ=MessageType.EVENT)
    assert info.value.reason is RefusalReason.BAD_SIGNATURE
    legacy = Verifier(fleet, audience=CLOUD, clock=VirtualClock(T0), algorithms=LEGACY_ALGORITHMS)
    assert legacy.verify(token, typ=MessageType.EVENT, issuer=VIN, kid=VIN).seq == 4


def test_our_jwks_states_ed25519_for_joserfc() -> None:
    jwks = json.loads(json.dumps(KeySet([SigningKey.generate(VIN).public_key()]).to_jwks()))
    (jwk,) = JoseKeySet.import_key_set(jwks).keys
    assert jwk.as_dict(private=False)["alg"] == "Ed25519"


def test_joserfc_token_under_a_pinned_kid_with_another_key_is_refused() -> None:
    pinned = KeySet([PublicKey.from_jwk(jose_car_key(VIN).as_dict(private=False))])
    header = {"alg": "Ed25519", "kid": VIN, "typ": MessageType.EVENT.value}
    token = jwt.encode(header, _jose_claims(VIN), jose_car_key(VIN), algorithms=["Ed25519"])
    with pytest.raises(ProtocolError) as info:
        Verifier(pinned, audience=CLOUD, clock=VirtualClock(T0)).verify(token, typ=MessageType.EVENT)
    assert info.value.reason is RefusalReason.BAD_SIGNATURE


def test_joserfc_token_with_extra_header_parameters_is_refused() -> None:
    key = jose_car_key(VIN)
    fleet = KeySet([PublicKey.from_jwk(key.as_dict(private=False))])
    header = {"alg": "Ed25519", "kid": VIN, "typ": MessageType.EVENT.value, "cty": "json"}
    token = jwt.encode(header, _jose_claims(VIN), key, algorithms=["Ed25519"])
    with pytest.raises(ProtocolError) as info:
        Verifier(fleet, audience=CLOUD, clock=VirtualClock(T0)).verify(token, typ=MessageType.EVENT)
    assert info.value.reason is RefusalReason.MALFORMED


def test_joserfc_jwk_with_private_part_is_not_a_public_key() -> None:
    with pytest.raises(ProtocolError):
        PublicKey.from_jwk(jose_car_key(VIN).as_dict(private=True))
