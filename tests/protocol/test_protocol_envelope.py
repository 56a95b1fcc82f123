"""Signed envelope: keys, JWKS, signing, every refusal of the Verifier and its order, seq guards."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import (
    CLOUD,
    DEFAULT_ALGORITHMS,
    LEGACY_ALGORITHMS,
    Event,
    EventType,
    KeySet,
    MessageType,
    ProtocolError,
    PublicKey,
    RefusalReason,
    SeqGuard,
    Signer,
    SigningKey,
    Verified,
    Verifier,
    b64url_encode,
)

VIN = "VSSZZZKLZMR012345"
OTHER_VIN = "VSSZZZ5FZNA000042"
T0 = 1_767_225_600.0
CAR_KEY = SigningKey.from_private_bytes(bytes(range(32)), VIN)
OTHER_KEY = SigningKey.from_private_bytes(bytes(range(1, 33)), OTHER_VIN)
STRANGER_KEY = SigningKey.from_private_bytes(bytes(range(2, 34)), "stranger")

JSON_BODIES = st.dictionaries(
    st.text(max_size=12),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=30),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    ),
    max_size=8,
)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def keys() -> KeySet:
    return KeySet([CAR_KEY.public_key(), OTHER_KEY.public_key()])


@pytest.fixture
def signer(clock: VirtualClock) -> Signer:
    return Signer(CAR_KEY, VIN, clock)


@pytest.fixture
def verifier(keys: KeySet, clock: VirtualClock) -> Verifier:
    return Verifier(keys, audience=CLOUD, clock=clock)


def b64(data: bytes) -> str:
    return b64url_encode(data).decode()


def raw_token(
    key: SigningKey, header: dict[str, Any] | bytes, claims: dict[str, Any] | bytes, signature: bytes | None = None
) -> str:
    """A token with whatever header and payload bytes a test needs, signed by `key` unless told otherwise."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64(h)}.{b64(p)}"
    sig = key.sign(signing_input.encode()) if signature is None else signature
    return f"{signing_input}.{b64(sig)}"


def good_header(**overrides: Any) -> dict[str, Any]:
    return {"alg": "Ed25519", "kid": VIN, "typ": MessageType.STATUS.value, **overrides}


def good_claims(**overrides: Any) -> dict[str, Any]:
    claims = {"iss": VIN, "aud": CLOUD, "iat": int(T0), "exp": int(T0) + 300, "jti": "j1", "seq": 7, "body": {}}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not ...}


def reason_of(verifier: Verifier, token: str | bytes, **kwargs: Any) -> RefusalReason:
    with pytest.raises(ProtocolError) as info:
        verifier.verify(token, **{"typ": MessageType.STATUS, **kwargs})
    return info.value.reason


# ----------------------------------------------------------------------------------------------------- keys


def test_signing_key_repr_hides_the_key() -> None:
    text = repr(CAR_KEY)
    assert text == f"SigningKey(kid='{VIN}', private=<redacted>)"
    assert str(CAR_KEY) == text


def test_signing_key_is_not_picklable() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(CAR_KEY)


def test_private_pem_round_trip() -> None:
    key = SigningKey.generate("k1")
    again = SigningKey.from_private_pem(key.private_pem(), "k1")
    assert key.private_pem().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert again.public_key() == key.public_key()
    assert again.sign(b"x") == key.sign(b"x")  # Ed25519 is deterministic


@pytest.mark.parametrize("pem", [b"", b"not a pem", CAR_KEY.public_key().public_pem()])
def test_from_private_pem_refuses_what_is_not_a_private_key(pem: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        SigningKey.from_private_pem(pem, "k1")
    assert info.value.reason is RefusalReason.MALFORMED
    assert "k1" in info.value.detail


def test_public_jwk_fields() -> None:
    jwk = CAR_KEY.public_jwk()
    assert jwk.keys() == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["kid"], jwk["alg"], jwk["use"]) == ("OKP", "Ed25519", VIN, "Ed25519", "sig")
    assert base64.urlsafe_b64decode(jwk["x"] + "=") == CAR_KEY.public_key().raw
    assert "=" not in jwk["x"]
    assert PublicKey.from_jwk(jwk) == CAR_KEY.public_key()


def test_public_pem_round_trip() -> None:
    pk = CAR_KEY.public_key()
    assert PublicKey.from_public_pem(pk.public_pem(), VIN) == pk


@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA", ...])
def test_from_jwk_accepts_ed25519_legacy_eddsa_or_no_alg(alg: Any) -> None:
    # JWKS of state directories provisioned before RFC 9864 say EdDSA; the key is the same Ed25519 key.
    jwk = {k: v for k, v in {**CAR_KEY.public_jwk(), "alg": alg}.items() if v is not ...}
    key = PublicKey.from_jwk(jwk)
    assert key == CAR_KEY.public_key()
    assert key.to_jwk()["alg"] == "Ed25519"


def test_legacy_jwks_is_rewritten_with_ed25519() -> None:
    legacy = {"keys": [{**CAR_KEY.public_jwk(), "alg": "EdDSA"}]}
    assert KeySet.from_jwks(legacy).to_jwks() == {"keys": [CAR_KEY.public_jwk()]}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"kty": "EC"}, "kty"),
        ({"crv": "Ed448"}, "crv"),
        ({"alg": "ES256"}, "alg"),
        ({"alg": "Ed448"}, "alg"),
        ({"alg": "none"}, "alg"),
        ({"use": "enc"}, "use"),
        ({"kid": ""}, "kid"),
        ({"kid": None}, "kid"),
        ({"x": "AAAA"}, "32 bytes"),
        ({"x": "not base64!"}, "base64url"),
        ({"x": 5}, "x must be a string"),
        ({"d": "secret"}, "private key"),
    ],
)
def test_from_jwk_refuses_bad_keys(change: dict[str, Any], fragment: str) -> None:
    jwk: dict[str, Any] = {**CAR_KEY.public_jwk(), **change}
    with pytest.raises(ProtocolError) as info:
        PublicKey.from_jwk(jwk)
    assert info.value.reason is RefusalReason.MALFORMED
    assert fragment in info.value.detail
    assert "secret" not in info.value.detail


def test_keyset_basics(keys: KeySet) -> None:
    assert len(keys) == 2
    assert VIN in keys
    assert "nobody" not in keys
    assert keys.get(VIN) == CAR_KEY.public_key()
    assert keys.get("nobody") is None
    assert keys.kids() == [VIN, OTHER_VIN]
    assert list(keys) == [CAR_KEY.public_key(), OTHER_KEY.public_key()]
    keys.add(CAR_KEY.public_key())  # the same key again: no-op
    assert len(keys) == 2
    keys.remove(OTHER_VIN)
    assert OTHER_VIN not in keys


def test_keyset_refuses_another_key_under_a_pinned_kid(keys: KeySet) -> None:
    impostor = PublicKey.from_raw(VIN, OTHER_KEY.public_key().raw)
    with pytest.raises(ProtocolError, match="already pinned"):
        keys.add(impostor)
    assert keys.get(VIN) == CAR_KEY.public_key()


def test_jwks_round_trip(keys: KeySet, tmp_path: Path) -> None:
    jwks = keys.to_jwks()
    assert [k["kid"] for k in jwks["keys"]] == [VIN, OTHER_VIN]
    assert KeySet.from_jwks(jwks).to_jwks() == jwks
    assert KeySet.from_jwks(json.dumps(jwks)).to_jwks() == jwks
    assert KeySet.from_jwks(json.dumps(jwks).encode()).to_jwks() == jwks
    path = tmp_path / "fleet.jwks.json"
    keys.dump(path)
    assert KeySet.load(path).to_jwks() == jwks
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.jwks.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("jwks", "fragment"),
    [
        ({}, "'keys' list"),
        ({"keys": {}}, "'keys' list"),
        ([], "'keys' list"),
        ({"keys": [CAR_KEY.public_jwk(), CAR_KEY.public_jwk()]}, "keys.1: duplicate kid"),
        ({"keys": [CAR_KEY.public_jwk(), {"kty": "RSA"}]}, "keys.1: JWK must have kty"),
        ({"keys": ["nope"]}, "keys.0: JWK must be an object"),
    ],
)
def test_from_jwks_refuses_bad_sets(jwks: Any, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        KeySet.from_jwks(jwks)
    assert fragment in info.value.detail


def test_from_jwks_refuses_bad_json() -> None:
    with pytest.raises(ProtocolError):
        KeySet.from_jwks(b'{"keys": [], "keys": []}')


# ----------------------------------------------------------------------------------------------------- signing


def test_signed_token_shape(signer: Signer, clock: VirtualClock) -> None:
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=5, body={"a": 1})
    header_b64, payload_b64, sig_b64 = token.split(".")
    assert "=" not in token
    assert base64.urlsafe_b64decode(header_b64 + "==") == (
        b'{"alg":"Ed25519","kid":"' + VIN.encode() + b'","typ":"tcu-status+jwt"}'
    )
    claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    assert claims.keys() == {"iss", "aud", "iat", "exp", "jti", "seq", "body"}
    assert claims["iss"] == VIN
    assert claims["aud"] == CLOUD
    assert claims["iat"] == int(T0)
    assert claims["exp"] == int(T0) + 300
    assert claims["seq"] == 5
    assert claims["body"] == {"a": 1}
    assert len(claims["jti"]) >= 16
    assert len(sig_b64) == 86


def test_sign_options(clock: VirtualClock) -> None:
    signer = Signer(CAR_KEY, VIN, clock, ttl_s=60.5)
    verifier = Verifier(KeySet([CAR_KEY.public_key()]), audience=VIN, clock=clock)
    v = verifier.verify(signer.sign(MessageType.RESULT, aud=VIN, seq=0, body={}), typ=MessageType.RESULT)
    assert v.exp == T0 + 60.5
    v = verifier.verify(
        signer.sign(MessageType.RESULT, aud=VIN, seq=1, body={}, exp=T0 + 10, jti="my-id"), typ=MessageType.RESULT
    )
    assert (v.exp, v.jti) == (T0 + 10, "my-id")
    assert isinstance(v.exp, int)


def test_jti_differs_between_messages(signer: Signer, verifier: Verifier) -> None:
    jtis = {
        verifier.verify(signer.sign(MessageType.STATUS, aud=CLOUD, seq=i, body={}), typ=MessageType.STATUS).jti
        for i in range(50)
    }
    assert len(jtis) == 50


def test_sign_a_model_uses_its_json_form(signer: Signer, verifier: Verifier) -> None:
    event = Event(type=EventType.INFOTAINMENT_LOGIN, at=T0, email="a@example.com", password=SecretStr("pw-in-clear"))
    verified = verifier.verify(signer.sign(MessageType.EVENT, aud=CLOUD, seq=1, body=event), typ=MessageType.EVENT)
    assert verified.body == {
        "type": "infotainment_login",
        "at": T0,
        "email": "a@example.com",
        "password": "pw-in-clear",
    }
    assert "pw-in-clear" not in repr(verified)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seq": -1},
        {"seq": True},
        {"seq": 1.0},
        {"aud": ""},
        {"jti": ""},
        {"body": {"x": float("nan")}},
        {"body": {"x": object()}},
        {"typ": "JWT"},
    ],
)
def test_sign_refuses_bad_arguments(signer: Signer, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"typ": MessageType.STATUS, "aud": CLOUD, "seq": 1, "body": {}, **kwargs}
    typ = args.pop("typ")
    with pytest.raises(ProtocolError) as info:
        signer.sign(typ, **args)
    assert info.value.reason is RefusalReason.MALFORMED


# ----------------------------------------------------------------------------------------------------- verifying


def test_verify_returns_every_claim(signer: Signer, verifier: Verifier) -> None:
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=9, body={"k": [1, "x"]}, jti="abc")
    verified = verifier.verify(token, typ=MessageType.STATUS, issuer=VIN, kid=VIN)
    assert verified == Verified(
        typ=MessageType.STATUS,
        kid=VIN,
        iss=VIN,
        aud=CLOUD,
        iat=int(T0),
        exp=int(T0) + 300,
        jti="abc",
        seq=9,
        body={"k": [1, "x"]},
    )
    assert verifier.verify(token.encode(), typ=MessageType.STATUS) == verified
    assert verifier.verify(bytearray(token.encode()), typ=MessageType.STATUS) == verified


def test_bad_signature(signer: Signer, verifier: Verifier) -> None:
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=1, body={"locked": True})
    other = signer.sign(MessageType.STATUS, aud=CLOUD, seq=1, body={"locked": False})
    spliced = ".".join(token.split(".")[:2] + other.split(".")[2:])
    assert reason_of(verifier, spliced) is RefusalReason.BAD_SIGNATURE
    # signed by another key under this car's kid (the "wrong key" attack)
    assert reason_of(verifier, raw_token(STRANGER_KEY, good_header(), good_claims())) is RefusalReason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "signature",
    [b"", b"\x00" * 63, b"\x00" * 65, b"\x00" * 64],
)
def test_signature_of_wrong_size_or_value(verifier: Verifier, signature: bytes) -> None:
    token = raw_token(CAR_KEY, good_header(), good_claims(), signature=signature)
    assert reason_of(verifier, token) is RefusalReason.BAD_SIGNATURE


def test_non_canonical_signature_encoding_is_refused(signer: Signer, verifier: Verifier) -> None:
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=1, body={})
    head, sig = token.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # the last character carries 2 bits of the signature and 4 spare bits: set a spare bit
    twin = alphabet[alphabet.index(sig[-1]) ^ 1]
    assert base64.urlsafe_b64decode(sig[:-1] + twin + "==") == base64.urlsafe_b64decode(sig + "==")
    assert reason_of(verifier, f"{head}.{sig[:-1]}{twin}") is RefusalReason.BAD_SIGNATURE


def test_unknown_kid(verifier: Verifier) -> None:
    token = raw_token(STRANGER_KEY, good_header(kid="stranger"), good_claims())
    assert reason_of(verifier, token) is RefusalReason.UNKNOWN_KEY


def test_pinned_kid_binds_message_to_its_sender(verifier: Verifier, clock: VirtualClock) -> None:
    # OTHER_VIN's own, valid key claiming to speak for VIN
    token = Signer(OTHER_KEY, VIN, clock).sign(MessageType.STATUS, aud=CLOUD, seq=1, body={})
    assert verifier.verify(token, typ=MessageType.STATUS, issuer=VIN).kid == OTHER_VIN
    assert reason_of(verifier, token, issuer=VIN, kid=VIN) is RefusalReason.UNKNOWN_KEY


def test_wrong_type(signer: Signer, verifier: Verifier) -> None:
    token = signer.sign(MessageType.EVENT, aud=CLOUD, seq=1, body={})
    assert reason_of(verifier, token, typ=MessageType.STATUS) is RefusalReason.WRONG_TYPE
    odd = raw_token(CAR_KEY, good_header(typ="JWT"), good_claims())
    assert reason_of(verifier, odd) is RefusalReason.WRONG_TYPE


def test_wrong_audience(signer: Signer, verifier: Verifier) -> None:
    token = signer.sign(MessageType.STATUS, aud=OTHER_VIN, seq=1, body={})
    assert reason_of(verifier, token) is RefusalReason.WRONG_AUDIENCE


def test_wrong_issuer(signer: Signer, verifier: Verifier) -> None:
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=1, body={})
    assert reason_of(verifier, token, issuer=OTHER_VIN) is RefusalReason.WRONG_ISSUER
    assert verifier.verify(token, typ=MessageType.STATUS, issuer=VIN).iss == VIN


async def test_expired_with_skew(signer: Signer, verifier: Verifier, clock: VirtualClock) -> None:
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=1, body={}, exp=T0 + 100)
    await clock.advance(130)  # exp + skew: still accepted
    assert verifier.verify(token, typ=MessageType.STATUS).exp == T0 + 100
    await clock.advance(0.001)
    assert reason_of(verifier, token) is RefusalReason.EXPIRED
    strict = Verifier(verifier.keys, audience=CLOUD, clock=clock, skew_s=0)
    clock.set_time(T0 + 100.5)
    assert reason_of(strict, token) is RefusalReason.EXPIRED


def test_not_yet_valid_with_skew(verifier: Verifier, clock: VirtualClock) -> None:
    early = Signer(CAR_KEY, VIN, VirtualClock(T0 + 30)).sign(MessageType.STATUS, aud=CLOUD, seq=1, body={})
    assert verifier.verify(early, typ=MessageType.STATUS).iat == T0 + 30  # exactly at the skew allowance
    too_early = Signer(CAR_KEY, VIN, VirtualClock(T0 + 31)).sign(MessageType.STATUS, aud=CLOUD, seq=1, body={})
    assert reason_of(verifier, too_early) is RefusalReason.NOT_YET_VALID


@pytest.mark.parametrize(
    "claims",
    [
        b"not json",
        b"[1, 2]",
        b'{"iss": "a", "iss": "b"}',
        json.dumps(good_claims(seq=...)).encode(),
        json.dumps(good_claims(extra=1)).encode(),
        json.dumps(good_claims(seq=True)).encode(),
        json.dumps(good_claims(seq=-1)).encode(),
        json.dumps(good_claims(seq=1.5)).encode(),
        json.dumps(good_claims(iat="now")).encode(),
        json.dumps(good_claims(exp=None)).encode(),
        json.dumps(good_claims(aud=[CLOUD])).encode(),
        json.dumps(good_claims(iss=5)).encode(),
        json.dumps(good_claims(body=[])).encode(),
        json.dumps(good_claims(body={"x": float("nan")})).encode(),  # json.dumps writes NaN
        b"\xff\xfe",
    ],
)
def test_malformed_payload_behind_a_good_signature(verifier: Verifier, claims: bytes) -> None:
    assert reason_of(verifier, raw_token(CAR_KEY, good_header(), claims)) is RefusalReason.MALFORMED


@pytest.mark.parametrize(
    "header",
    [
        b"not json",
        b"[]",
        json.dumps({"alg": "Ed25519", "kid": VIN}).encode(),
        json.dumps({**good_header(), "jku": "https://attacker.example/jwks"}).encode(),
        json.dumps({**good_header(), "crit": ["b64"]}).encode(),
        json.dumps(good_header(kid=5)).encode(),
        json.dumps(good_header(typ=None)).encode(),
        b'{"alg":"Ed25519","kid":"a","kid":"b","typ":"x"}',
    ],
)
def test_malformed_header(verifier: Verifier, header: bytes) -> None:
    assert reason_of(verifier, raw_token(CAR_KEY, header, good_claims())) is RefusalReason.MALFORMED


@pytest.mark.parametrize("alg", ["HS256", "ES256", "RS256", "EdDSA", "ed25519", "Ed448", "none", None, 5])
def test_alg_other_than_ed25519(verifier: Verifier, alg: Any) -> None:
    assert reason_of(verifier, raw_token(CAR_KEY, good_header(alg=alg), good_claims())) is RefusalReason.BAD_SIGNATURE


def test_default_verifier_accepts_ed25519_only(verifier: Verifier) -> None:
    assert verifier.algorithms == DEFAULT_ALGORITHMS == frozenset({"Ed25519"})
    assert verifier.verify(raw_token(CAR_KEY, good_header(), good_claims()), typ=MessageType.STATUS).seq == 7


def test_eddsa_is_refused_by_default_and_accepted_when_legacy_is_enabled(keys: KeySet, clock: VirtualClock) -> None:
    # RFC 9864 deprecates the polymorphic EdDSA: only a deployment that opts in still takes it.
    token = raw_token(CAR_KEY, good_header(alg="EdDSA"), good_claims())
    refusal = Verifier(keys, audience=CLOUD, clock=clock)
    with pytest.raises(ProtocolError) as info:
        refusal.verify(token, typ=MessageType.STATUS)
    assert info.value.reason is RefusalReason.BAD_SIGNATURE
    assert "EdDSA" in info.value.detail
    legacy = Verifier(keys, audience=CLOUD, clock=clock, algorithms=LEGACY_ALGORITHMS)
    assert legacy.verify(token, typ=MessageType.STATUS).seq == 7
    assert legacy.verify(raw_token(CAR_KEY, good_header(), good_claims()), typ=MessageType.STATUS).seq == 7
    assert "EdDSA" in repr(legacy)


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_legacy_verifier_still_refuses_other_algs(keys: KeySet, clock: VirtualClock, alg: str) -> None:
    legacy = Verifier(keys, audience=CLOUD, clock=clock, algorithms=LEGACY_ALGORITHMS)
    assert reason_of(legacy, raw_token(CAR_KEY, good_header(alg=alg), good_claims())) is RefusalReason.BAD_SIGNATURE


@pytest.mark.parametrize("algorithms", [frozenset(), frozenset({"HS256"}), frozenset({"Ed25519", "none"})])
def test_verifier_refuses_algorithms_it_cannot_check(keys: KeySet, clock: VirtualClock, algorithms: Any) -> None:
    with pytest.raises(ValueError, match="algorithms"):
        Verifier(keys, audience=CLOUD, clock=clock, algorithms=algorithms)


@pytest.mark.parametrize("signature", [b"", b"\x00" * 64])
def test_alg_none(verifier: Verifier, signature: bytes) -> None:
    # the classic "unsigned token" attack, with and without a signature segment
    token = raw_token(CAR_KEY, good_header(alg="none"), good_claims(), signature=signature)
    assert reason_of(verifier, token) is RefusalReason.BAD_SIGNATURE


def test_oversize(signer: Signer, clock: VirtualClock, keys: KeySet) -> None:
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=1, body={"pad": "x" * 2000})
    small = Verifier(keys, audience=CLOUD, clock=clock, max_bytes=len(token) - 1)
    assert reason_of(small, token) is RefusalReason.TOO_LARGE
    assert reason_of(small, token.encode()) is RefusalReason.TOO_LARGE
    fits = Verifier(keys, audience=CLOUD, clock=clock, max_bytes=len(token))
    assert fits.verify(token, typ=MessageType.STATUS).seq == 1


def test_default_size_limit_is_64_kib(signer: Signer, verifier: Verifier) -> None:
    assert reason_of(verifier, "a" * 65537) is RefusalReason.TOO_LARGE
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=1, body={"pad": "x" * 70_000})
    assert reason_of(verifier, token) is RefusalReason.TOO_LARGE


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", ".b.c", "a..c", "ä.b.c", "a b.c.d", "a+b.c.d", "a=.b.c", 12345, None],
)
def test_malformed_structure(verifier: Verifier, token: Any) -> None:
    assert reason_of(verifier, token) is RefusalReason.MALFORMED


def test_order_of_checks(signer: Signer, verifier: Verifier, clock: VirtualClock) -> None:
    """The first failing check decides: each case fails two checks and reports the earlier one."""
    # unknown kid with a garbage signature → UNKNOWN_KEY (the signature is never looked at)
    assert reason_of(verifier, raw_token(STRANGER_KEY, good_header(kid="x"), b"garbage")) is RefusalReason.UNKNOWN_KEY
    # bad signature over a malformed payload → BAD_SIGNATURE (the payload is never parsed)
    assert reason_of(verifier, raw_token(STRANGER_KEY, good_header(), b"garbage")) is RefusalReason.BAD_SIGNATURE
    # wrong typ and wrong aud → WRONG_TYPE
    token = signer.sign(MessageType.EVENT, aud=OTHER_VIN, seq=1, body={})
    assert reason_of(verifier, token) is RefusalReason.WRONG_TYPE
    # wrong aud and wrong iss → WRONG_AUDIENCE
    token = signer.sign(MessageType.STATUS, aud=OTHER_VIN, seq=1, body={})
    assert reason_of(verifier, token, issuer=OTHER_VIN) is RefusalReason.WRONG_AUDIENCE
    # wrong iss and expired → WRONG_ISSUER
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=1, body={}, exp=T0 - 1000)
    assert reason_of(verifier, token, issuer=OTHER_VIN) is RefusalReason.WRONG_ISSUER
    # expired and not yet valid (exp before iat) → EXPIRED
    future = Signer(CAR_KEY, VIN, VirtualClock(T0 + 5000))
    token = future.sign(MessageType.STATUS, aud=CLOUD, seq=1, body={}, exp=T0 - 1000)
    assert reason_of(verifier, token) is RefusalReason.EXPIRED
    # too large and malformed → TOO_LARGE
    small = Verifier(verifier.keys, audience=CLOUD, clock=clock, max_bytes=10)
    assert reason_of(small, "not even a token") is RefusalReason.TOO_LARGE


def test_header_cache_does_not_leak_between_tokens(signer: Signer, verifier: Verifier) -> None:
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=1, body={})
    for _ in range(3):
        assert verifier.verify(token, typ=MessageType.STATUS).seq == 1
    bad = raw_token(CAR_KEY, good_header(alg="none"), good_claims())
    for _ in range(3):
        assert reason_of(verifier, bad) is RefusalReason.BAD_SIGNATURE


def test_refusal_details_never_echo_secrets(signer: Signer, verifier: Verifier) -> None:
    event = Event(type=EventType.INFOTAINMENT_LOGIN, at=T0, email="a@example.com", password=SecretStr("hunter2-secret"))
    token = signer.sign(MessageType.EVENT, aud=CLOUD, seq=1, body=event)
    for kwargs in ({"typ": MessageType.STATUS}, {"typ": MessageType.EVENT, "issuer": "x"}):
        with pytest.raises(ProtocolError) as info:
            verifier.verify(token, **kwargs)
        assert "hunter2" not in str(info.value)
        assert token not in str(info.value)


# ----------------------------------------------------------------------------------------------------- properties


@settings(max_examples=150)
@given(body=JSON_BODIES, seq=st.integers(min_value=0, max_value=2**53), typ=st.sampled_from(MessageType))
def test_sign_verify_round_trip(body: dict[str, Any], seq: int, typ: MessageType) -> None:
    clock = VirtualClock(T0)
    token = Signer(CAR_KEY, VIN, clock).sign(typ, aud=CLOUD, seq=seq, body=body)
    verified = Verifier(KeySet([CAR_KEY.public_key()]), audience=CLOUD, clock=clock).verify(token, typ=typ)
    assert verified.body == body
    assert (verified.seq, verified.typ, verified.iss, verified.kid) == (seq, typ, VIN, VIN)


_TOKEN = (
    Signer(CAR_KEY, VIN, VirtualClock(T0))
    .sign(MessageType.STATUS, aud=CLOUD, seq=3, body={"locked": True, "odometer_km": 12873.4})
    .encode()
)


def _verifier() -> Verifier:
    return Verifier(KeySet([CAR_KEY.public_key()]), audience=CLOUD, clock=VirtualClock(T0))


@settings(max_examples=400)
@given(index=st.integers(min_value=0, max_value=len(_TOKEN) - 1), value=st.integers(min_value=0, max_value=255))
def test_flipping_any_byte_breaks_verification(index: int, value: int) -> None:
    if _TOKEN[index] == value:
        value = (value + 1) % 256
    tampered = _TOKEN[:index] + bytes([value]) + _TOKEN[index + 1 :]
    with pytest.raises(ProtocolError):
        _verifier().verify(tampered, typ=MessageType.STATUS)


def test_flipping_every_byte_breaks_verification() -> None:
    # exhaustive over positions, one XOR each, on top of the random property above
    verifier = _verifier()
    for index in range(len(_TOKEN)):
        tampered = bytearray(_TOKEN)
        tampered[index] ^= 0x01
        with pytest.raises(ProtocolError):
            verifier.verify(bytes(tampered), typ=MessageType.STATUS)


@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        _verifier().verify(data, typ=MessageType.STATUS)


@given(st.text(max_size=600))
def test_arbitrary_text_only_raises_protocol_error(data: str) -> None:
    with pytest.raises(ProtocolError):
        _verifier().verify(data, typ=MessageType.STATUS)


@given(
    header=st.one_of(st.binary(max_size=80), st.builds(lambda d: json.dumps(d).encode(), JSON_BODIES)),
    payload=st.one_of(st.binary(max_size=200), st.builds(lambda d: json.dumps(d).encode(), JSON_BODIES)),
)
def test_signed_garbage_only_raises_protocol_error(header: bytes, payload: bytes) -> None:
    # a valid signature over arbitrary header and payload bytes: everything after the signature must hold too
    with pytest.raises(ProtocolError):
        _verifier().verify(raw_token(CAR_KEY, header, payload), typ=MessageType.STATUS)


@given(st.lists(st.sampled_from([".", "A", "-", "_", "=", "eyJ", "e30"]), max_size=40))
def test_token_shaped_noise_only_raises_protocol_error(parts: list[str]) -> None:
    with pytest.raises(ProtocolError):
        _verifier().verify("".join(parts), typ=MessageType.STATUS)


# ----------------------------------------------------------------------------------------------------- seq


def test_seq_guard() -> None:
    guard = SeqGuard()
    assert guard.last("car/commands") is None
    guard.check("car/commands", 0)
    guard.record("car/commands", 5)
    guard.check("car/commands", 6)
    for seq in (5, 4, 0):
        with pytest.raises(ProtocolError) as info:
            guard.check("car/commands", seq)
        assert info.value.reason is RefusalReason.REPLAYED
    with pytest.raises(ProtocolError) as info:
        guard.check("car/commands", 5, reason=RefusalReason.DUPLICATE)
    assert info.value.reason is RefusalReason.DUPLICATE
    guard.record("car/commands", 3)  # never moves down
    assert guard.last("car/commands") == 5
    guard.check("car/status", 1)  # streams are independent


def test_seq_guard_accept_checks_then_records() -> None:
    guard = SeqGuard()
    guard.accept("s", 1)
    guard.accept("s", 2)
    with pytest.raises(ProtocolError):
        guard.accept("s", 2)
    assert guard.last("s") == 2


def test_seq_guard_snapshot_round_trip() -> None:
    guard = SeqGuard()
    guard.record("a", 3)
    guard.record("b", 9)
    snap = guard.snapshot()
    assert snap == {"a": 3, "b": 9}
    snap["a"] = 100  # a copy
    restored = SeqGuard.from_snapshot(json.loads(json.dumps(guard.snapshot())))
    assert restored.snapshot() == {"a": 3, "b": 9}
    assert len(restored) == 2
    with pytest.raises(ProtocolError):
        restored.check("b", 9)


@pytest.mark.parametrize("snapshot", [{"a": -1}, {"a": "3"}, {"a": True}, {"a": 1.0}, [], {1: 2}])
def test_seq_guard_refuses_bad_snapshots(snapshot: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        SeqGuard.from_snapshot(snapshot)
    assert info.value.reason is RefusalReason.MALFORMED
