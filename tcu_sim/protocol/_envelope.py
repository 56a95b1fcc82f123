"""The signed envelope (SPEC §2.2): Ed25519 keys, JWKS, JWS compact signing and verification, seq guards.

A message is a JWS Compact Serialization (RFC 7515) signed with Ed25519 (`alg` Ed25519, the fully-specified
identifier of RFC 9864, which deprecates the polymorphic `EdDSA` of RFC 8037):

    base64url(header) "." base64url(claims) "." base64url(signature)      (base64url without padding)

with the header exactly `{"alg":"Ed25519","kid":...,"typ":...}` and the claims `iss aud iat exp jti seq body`.
A `Verifier` accepts only the algorithms it is given: `Ed25519` by default, `EdDSA` too only for a deployment
that still talks to legacy senders (`LEGACY_ALGORITHMS`; same key, same signature, another name).
`Verifier.verify` checks, in this order, and refuses with the first reason that applies:
size (TOO_LARGE) → structure (MALFORMED) → header (MALFORMED; an `alg` not accepted is BAD_SIGNATURE) →
kid lookup (UNKNOWN_KEY) → signature (BAD_SIGNATURE) → claims (MALFORMED) → typ (WRONG_TYPE) →
aud (WRONG_AUDIENCE) → iss (WRONG_ISSUER) → exp (EXPIRED) → iat (NOT_YET_VALID).
The claims are parsed only after the signature over them has been checked. `seq` is returned, not checked:
receivers keep a `SeqGuard` per stream.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel

from tcu_sim.clock import Clock

from ._errors import ProtocolError, RefusalReason
from ._json import decode_json, encode_json

__all__ = [
    "CLOUD",
    "DEFAULT_ALGORITHMS",
    "LEGACY_ALGORITHMS",
    "KeySet",
    "MessageType",
    "PublicKey",
    "SeqGuard",
    "Signer",
    "SigningKey",
    "Verified",
    "Verifier",
]

CLOUD: Final = "cloud"
"""The cloud's `iss`, and the `aud` of every car message."""

ALG: Final = "Ed25519"
"""The `alg` every token is signed with (RFC 9864 fully-specified Ed25519)."""
LEGACY_ALG: Final = "EdDSA"
"""RFC 8037's polymorphic name for the same signature, deprecated by RFC 9864."""
DEFAULT_ALGORITHMS: Final = frozenset({ALG})
"""What a `Verifier` accepts unless a deployment says otherwise."""
LEGACY_ALGORITHMS: Final = frozenset({ALG, LEGACY_ALG})
"""Also the deprecated `EdDSA`, for a deployment with senders that still write it."""
_SIG_LEN = 64
_SIG_B64_LEN = 86  # 64 bytes in unpadded base64url
_KEY_LEN = 32
_ID_MAX = 128
_HEADER_MAX_BYTES = 512
_JWKS_MAX_BYTES = 64 * 1024 * 1024  # a fleet JWKS holds one key per car (~200 bytes each)
_B64URL = re.compile(rb"[A-Za-z0-9_-]*")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_HEADER_CACHE_MAX = 65536  # distinct headers: one per sender key and message type
_HEADER_KEYS = frozenset({"alg", "kid", "typ"})
_CLAIM_KEYS = frozenset({"iss", "aud", "iat", "exp", "jti", "seq", "body"})


class MessageType(StrEnum):
    """The `typ` header of each signed message kind."""

    STATUS = "tcu-status+jwt"
    EVENT = "tcu-event+jwt"
    COMMAND = "tcu-command+jwt"
    RESULT = "tcu-result+jwt"


_TYPES: Final[Mapping[str, MessageType]] = {t.value: t for t in MessageType}


def _malformed(detail: str) -> ProtocolError:
    return ProtocolError(RefusalReason.MALFORMED, detail)


def b64url_encode(data: bytes) -> bytes:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64url_decode(data: bytes | str, what: str = "value") -> bytes:
    """Strict base64url without padding: any other character, or a length no encoding has → MALFORMED."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    if _B64URL.fullmatch(raw) is None or len(raw) % 4 == 1:
        raise _malformed(f"{what}: not base64url")
    try:
        return binascii.a2b_base64(raw.translate(_FROM_URLSAFE) + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise _malformed(f"{what}: not base64url") from None


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _ID_MAX:
        raise _malformed(f"{what} must be a non-empty string of at most {_ID_MAX} characters")
    return value


# --------------------------------------------------------------------------------------------------- keys


class PublicKey:
    """An Ed25519 public key with its key id, as published in a JWKS."""

    __slots__ = ("_key", "_x", "kid")

    def __init__(self, kid: str, key: Ed25519PublicKey) -> None:
        self.kid = _check_id(kid, "kid")
        self._key = key
        self._x = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_raw(cls, kid: str, raw: bytes) -> PublicKey:
        """From the 32 raw key bytes."""
        if len(raw) != _KEY_LEN:
            raise _malformed(f"Ed25519 public key must be {_KEY_LEN} bytes, got {len(raw)}")
        return cls(kid, Ed25519PublicKey.from_public_bytes(raw))

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """From an RFC 8037 JWK (`kty` OKP, `crv` Ed25519, `x`, `kid`; `alg` (Ed25519, or the legacy EdDSA) and
        `use` checked if present)."""
        if not isinstance(jwk, Mapping):
            raise _malformed(f"JWK must be an object, got {type(jwk).__name__}")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise _malformed("JWK must have kty 'OKP' and crv 'Ed25519'")
        if "d" in jwk:
            raise _malformed("JWK holds a private key ('d'); publish public keys only")
        # JWKS written before RFC 9864 (old state directories) say EdDSA: the key material is the same Ed25519 key.
        if jwk.get("alg", ALG) not in (ALG, LEGACY_ALG):
            raise _malformed(f"JWK alg must be {ALG!r}")
        if jwk.get("use", "sig") != "sig":
            raise _malformed("JWK use must be 'sig'")
        kid = _check_id(jwk.get("kid"), "JWK kid")
        x = jwk.get("x")
        if not isinstance(x, str):
            raise _malformed(f"JWK {kid!r}: x must be a string")
        return cls.from_raw(kid, b64url_decode(x, f"JWK {kid!r} x"))

    @classmethod
    def from_public_pem(cls, data: bytes, kid: str) -> PublicKey:
        """From a SubjectPublicKeyInfo PEM."""
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise _malformed("not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise _malformed(f"not an Ed25519 public key: {type(key).__name__}")
        return cls(kid, key)

    def to_jwk(self) -> dict[str, str]:
        """The RFC 8037 JWK of this key."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(self._x).decode("ascii"),
            "kid": self.kid,
            "alg": ALG,
            "use": "sig",
        }

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM."""
        return self._key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def raw(self) -> bytes:
        """The 32 raw key bytes."""
        return self._x

    def verify_signature(self, signature: bytes, data: bytes) -> bool:
        """True when `signature` is this key's Ed25519 signature over `data`.

        libsodium (PyNaCl) does the arithmetic: ~45 µs against ~100 µs for `cryptography` on the development
        machine (issue 11), and its calls release the GIL, so verifier threads can run at once. Its check is the
        strict one (canonical S, no small-order keys or R), which every signature `cryptography` makes passes."""
        if len(signature) != nacl.bindings.crypto_sign_BYTES:
            return False
        try:
            nacl.bindings.crypto_sign_open(signature + data, self._x)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self.kid == other.kid and self._x == other._x

    def __hash__(self) -> int:
        return hash((self.kid, self._x))

    def __repr__(self) -> str:
        return f"PublicKey(kid={self.kid!r}, x={b64url_encode(self._x).decode('ascii')!r})"


class SigningKey:
    """An Ed25519 private key with its key id. Its repr never shows key material."""

    __slots__ = ("_key", "_public", "kid")

    def __init__(self, kid: str, key: Ed25519PrivateKey) -> None:
        self.kid = _check_id(kid, "kid")
        self._key = key
        self._public = PublicKey(kid, key.public_key())

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        """A fresh random key (from the operating system's CSPRNG, never from a seeded Random)."""
        return cls(kid, Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes, kid: str) -> SigningKey:
        """From the 32-byte raw private key (RFC 8032 seed): for fixed test and documentation keys."""
        if not isinstance(raw, bytes) or len(raw) != _KEY_LEN:
            raise _malformed(f"key {kid!r}: an Ed25519 private key is {_KEY_LEN} raw bytes")
        return cls(kid, Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def from_private_pem(cls, data: bytes, kid: str) -> SigningKey:
        """From an unencrypted PKCS#8 PEM (what `private_pem()` writes)."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise _malformed(f"key {kid!r}: not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise _malformed(f"key {kid!r}: not an Ed25519 private key: {type(key).__name__}")
        return cls(kid, key)

    def private_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM; write it with file mode 0600."""
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_key(self) -> PublicKey:
        """The public half, with the same kid."""
        return self._public

    def public_jwk(self) -> dict[str, str]:
        """The JWK of the public half."""
        return self._public.to_jwk()

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature over `data`."""
        return self._key.sign(data)

    def __reduce__(self) -> Any:
        raise TypeError("a SigningKey is not picklable (it would copy the private key around)")

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, private=<redacted>)"


class KeySet:
    """Public keys pinned by kid: what a receiver trusts. Loads from and dumps to a JWKS (RFC 7517)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[PublicKey] = ()) -> None:
        self._keys: dict[str, PublicKey] = {}
        for key in keys:
            self.add(key)

    @classmethod
    def from_jwks(cls, data: Mapping[str, Any] | bytes | str) -> KeySet:
        """From a JWKS object or its JSON text; a bad key or a kid twice → ProtocolError(MALFORMED)."""
        if isinstance(data, bytes | str):
            data = decode_json(data, max_bytes=_JWKS_MAX_BYTES, max_depth=4)
        if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
            raise _malformed("JWKS must be an object with a 'keys' list")
        keyset = cls()
        for index, jwk in enumerate(data["keys"]):
            try:
                key = PublicKey.from_jwk(jwk)
            except ProtocolError as exc:
                raise _malformed(f"keys.{index}: {exc.detail}") from None
            if key.kid in keyset._keys:
                raise _malformed(f"keys.{index}: duplicate kid {key.kid!r}")
            keyset._keys[key.kid] = key
        return keyset

    def to_jwks(self) -> dict[str, Any]:
        """`{"keys": [jwk, ...]}`."""
        return {"keys": [key.to_jwk() for key in self._keys.values()]}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeySet:
        """Read a JWKS file (OSError when it cannot be read, ProtocolError when it is not a valid JWKS)."""
        return cls.from_jwks(Path(path).read_bytes())

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write the JWKS file atomically (a reader never sees half a file)."""
        target = Path(path)
        text = encode_json(self.to_jwks())
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(self, key: PublicKey) -> None:
        """Pin `key` under its kid. Adding the same key again is a no-op; another key under a pinned kid is
        refused (ProtocolError MALFORMED): use `remove` first to rotate a key on purpose."""
        current = self._keys.get(key.kid)
        if current is not None and current != key:
            raise _malformed(f"kid {key.kid!r} is already pinned to another key")
        self._keys[key.kid] = key

    def remove(self, kid: str) -> None:
        """Unpin a kid (no-op when absent)."""
        self._keys.pop(kid, None)

    def get(self, kid: str) -> PublicKey | None:
        """The key pinned for `kid`, or None."""
        return self._keys.get(kid)

    def kids(self) -> list[str]:
        """The pinned key ids, in insertion order."""
        return list(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[PublicKey]:
        return iter(self._keys.values())

    def __repr__(self) -> str:
        shown = ", ".join(repr(k) for k in list(self._keys)[:3])
        more = f", ... {len(self._keys) - 3} more" if len(self._keys) > 3 else ""
        return f"KeySet({len(self._keys)} keys: {shown}{more})"


# --------------------------------------------------------------------------------------------------- signing


def _numeric_date(value: float) -> int | float:
    # JWT NumericDate: an integer when it is one (what most JOSE libraries expect), else a float.
    return int(value) if float(value).is_integer() else float(value)


class Signer:
    """Signs message bodies as JWS compact tokens with one key, as one issuer."""

    def __init__(self, key: SigningKey, issuer: str, clock: Clock, *, ttl_s: float = 300) -> None:
        self.key = key
        self.issuer = _check_id(issuer, "issuer")
        self.clock = clock
        self.ttl_s = ttl_s
        self._headers: dict[MessageType, bytes] = {
            typ: b64url_encode(encode_json({"alg": ALG, "kid": key.kid, "typ": typ.value})) for typ in MessageType
        }

    def sign(
        self,
        typ: MessageType,
        *,
        aud: str,
        seq: int,
        body: Mapping[str, Any] | BaseModel,
        exp: float | None = None,
        jti: str | None = None,
    ) -> str:
        """The compact JWS of `body` for `aud`; `iat` is now, `exp` defaults to now + ttl_s, `jti` random."""
        header = self._headers.get(typ)
        if header is None:
            raise _malformed(f"typ must be a MessageType, got {typ!r}")
        _check_id(aud, "aud")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise _malformed(f"seq must be a non-negative integer, got {seq!r}")
        payload_body = body.model_dump(mode="json") if isinstance(body, BaseModel) else dict(body)
        iat = int(self.clock.now())
        claims = {
            "iss": self.issuer,
            "aud": aud,
            "iat": iat,
            "exp": _numeric_date(iat + self.ttl_s if exp is None else exp),
            "jti": secrets.token_urlsafe(12) if jti is None else _check_id(jti, "jti"),
            "seq": seq,
            "body": payload_body,
        }
        signing_input = header + b"." + b64url_encode(encode_json(claims))
        signature = b64url_encode(self.key.sign(signing_input))
        return (signing_input + b"." + signature).decode("ascii")

    def __repr__(self) -> str:
        return f"Signer(kid={self.key.kid!r}, issuer={self.issuer!r}, ttl_s={self.ttl_s})"


# ------------------------------------------------------------------------------------------------- verifying


@dataclass(frozen=True, slots=True)
class Verified:
    """A message whose signature, type, audience and time checked out. `body` is not yet validated."""

    typ: MessageType
    kid: str
    iss: str
    aud: str
    iat: float
    exp: float
    jti: str
    seq: int
    body: dict[str, Any] = field(repr=False)  # may hold a password (infotainment login event)


def _parse_header(header_b64: bytes, algorithms: frozenset[str]) -> tuple[str, str]:
    """(kid, typ) of a protected header that is exactly {alg, kid, typ}, with an `alg` in `algorithms`."""
    header = decode_json(b64url_decode(header_b64, "header"), max_bytes=_HEADER_MAX_BYTES, max_depth=1)
    if not isinstance(header, dict) or header.keys() != _HEADER_KEYS:
        raise _malformed("header must be an object with exactly alg, kid and typ")
    alg = header["alg"]
    if not isinstance(alg, str) or alg not in algorithms:
        got = str(alg)[:32]
        raise ProtocolError(RefusalReason.BAD_SIGNATURE, f"alg must be one of {sorted(algorithms)}, got {got!r}")
    kid, typ = header["kid"], header["typ"]
    if not isinstance(kid, str) or not isinstance(typ, str):
        raise _malformed("header kid and typ must be strings")
    return kid, typ


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Verifier:
    """Verifies tokens for `audience` against pinned keys; refuses with ProtocolError (see the module doc).

    `algorithms` is the set of `alg` values accepted: `DEFAULT_ALGORITHMS` (Ed25519 only), or
    `LEGACY_ALGORITHMS` where senders still sign as `EdDSA`. Anything else is a ValueError.
    """

    def __init__(
        self,
        keys: KeySet,
        *,
        audience: str,
        clock: Clock,
        skew_s: float = 30,
        max_bytes: int = 65536,
        algorithms: frozenset[str] = DEFAULT_ALGORITHMS,
    ) -> None:
        algorithms = frozenset(algorithms)
        if not algorithms or not algorithms <= LEGACY_ALGORITHMS:
            raise ValueError(f"algorithms must be a non-empty subset of {sorted(LEGACY_ALGORITHMS)}")
        self.algorithms = algorithms
        self.keys = keys
        self.audience = audience
        self.clock = clock
        self.skew_s = skew_s
        self.max_bytes = max_bytes
        self._headers: dict[bytes, tuple[str, str]] = {}

    def verify(
        self,
        token: bytes | bytearray | memoryview | str,
        *,
        typ: MessageType,
        issuer: str | None = None,
        kid: str | None = None,
    ) -> Verified:
        """Check `token` and return its claims.

        `issuer`, if given, must be its `iss`; `kid`, if given, the key it is signed with, which binds a
        message to its sender's own key (a car's kid is its VIN): one car's key cannot speak for another.
        """
        # 1. size, before any work on the input
        if isinstance(token, str):
            if len(token) > self.max_bytes:
                raise ProtocolError(RefusalReason.TOO_LARGE, f"token of {len(token)} characters")
            try:
                raw = token.encode("ascii")
            except UnicodeEncodeError:
                raise _malformed("token is not ASCII") from None
        elif isinstance(token, bytes | bytearray | memoryview):
            raw = bytes(token)
        else:
            raise _malformed(f"token must be bytes or str, got {type(token).__name__}")
        if len(raw) > self.max_bytes:
            raise ProtocolError(RefusalReason.TOO_LARGE, f"token of {len(raw)} bytes, limit {self.max_bytes}")

        # 2. structure: three non-empty base64url segments
        parts = raw.split(b".")
        # An empty signature is left to the signature check, so that an unsigned ("alg": "none") token is
        # refused as BAD_SIGNATURE however it is spelled.
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise _malformed("token must be three base64url segments joined by '.'")
        header_b64, payload_b64, signature_b64 = parts

        # 3. header: exactly alg, kid, typ (a sender's headers repeat, so each is decoded once)
        cached = self._headers.get(header_b64)
        if cached is None:
            cached = _parse_header(header_b64, self.algorithms)
            if len(self._headers) >= _HEADER_CACHE_MAX:
                self._headers.clear()
            self._headers[header_b64] = cached
        header_kid, header_typ = cached

        # 4. key lookup
        key = self.keys.get(header_kid)
        if key is None:
            raise ProtocolError(RefusalReason.UNKNOWN_KEY, f"no key pinned for kid {header_kid[:_ID_MAX]!r}")
        if kid is not None and header_kid != kid:
            raise ProtocolError(
                RefusalReason.UNKNOWN_KEY, f"signed with kid {header_kid!r}, this message needs kid {kid!r}"
            )

        # 5. signature, over the encoded header and payload, before the payload is parsed
        if len(signature_b64) != _SIG_B64_LEN:
            raise ProtocolError(RefusalReason.BAD_SIGNATURE, "signature is not 64 bytes")
        try:
            signature = b64url_decode(signature_b64, "signature")
        except ProtocolError:
            raise ProtocolError(RefusalReason.BAD_SIGNATURE, "signature is not base64url") from None
        # One signature, one encoding: spare bits set in the last character would let a token be altered.
        if b64url_encode(signature) != signature_b64:
            raise ProtocolError(RefusalReason.BAD_SIGNATURE, "signature is not canonical base64url")
        if not key.verify_signature(signature, raw[: len(header_b64) + 1 + len(payload_b64)]):
            raise ProtocolError(RefusalReason.BAD_SIGNATURE, f"signature does not verify with kid {header_kid!r}")

        # 6. claims
        claims = decode_json(b64url_decode(payload_b64, "payload"), max_bytes=self.max_bytes)
        if not isinstance(claims, dict):
            raise _malformed("claims must be an object")
        if claims.keys() != _CLAIM_KEYS:
            missing = sorted(_CLAIM_KEYS - claims.keys())
            extra = sorted(k[:32] for k in claims.keys() - _CLAIM_KEYS)
            raise _malformed(f"claims: missing {missing}, unexpected {extra}")
        iss, aud, iat, exp, jti, seq, body = (
            claims["iss"],
            claims["aud"],
            claims["iat"],
            claims["exp"],
            claims["jti"],
            claims["seq"],
            claims["body"],
        )
        if not (isinstance(iss, str) and isinstance(aud, str) and isinstance(jti, str)):
            raise _malformed("claims: iss, aud and jti must be strings")
        if not (_is_number(iat) and _is_number(exp)):
            raise _malformed("claims: iat and exp must be numbers")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise _malformed("claims: seq must be a non-negative integer")
        if not isinstance(body, dict):
            raise _malformed("claims: body must be an object")

        # 7.-11. what the message claims to be, for whom, from whom, and when
        message_type = _TYPES.get(header_typ)
        if message_type is None or message_type != typ:  # typ may be given as its string value
            raise ProtocolError(RefusalReason.WRONG_TYPE, f"typ {header_typ[:40]!r}, expected {typ.value!r}")
        if aud != self.audience:
            raise ProtocolError(RefusalReason.WRONG_AUDIENCE, f"aud {aud[:_ID_MAX]!r}, expected {self.audience!r}")
        if issuer is not None and iss != issuer:
            raise ProtocolError(RefusalReason.WRONG_ISSUER, f"iss {iss[:_ID_MAX]!r}, expected {issuer!r}")
        now = self.clock.now()
        if exp < now - self.skew_s:
            raise ProtocolError(RefusalReason.EXPIRED, f"expired at {exp}, now {now:.3f}, skew {self.skew_s}s")
        if iat > now + self.skew_s:
            raise ProtocolError(RefusalReason.NOT_YET_VALID, f"issued at {iat}, now {now:.3f}, skew {self.skew_s}s")
        return Verified(message_type, header_kid, iss, aud, iat, exp, jti, seq, body)

    def __repr__(self) -> str:
        return (
            f"Verifier(audience={self.audience!r}, keys={len(self.keys)}, skew_s={self.skew_s}, "
            f"algorithms={sorted(self.algorithms)})"
        )


# --------------------------------------------------------------------------------------------------- seq


class SeqGuard:
    """The highest accepted `seq` per stream (e.g. per VIN and message type); anything not above is refused.

    Call `check` before acting on a message and `record` once it was applied, so that a message refused for
    another reason does not move the mark; `accept` does both at once.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def check(self, stream: str, seq: int, reason: RefusalReason = RefusalReason.REPLAYED) -> None:
        """Raise ProtocolError(reason) when `seq` is not above the last recorded one for `stream`."""
        last = self._last.get(stream)
        if last is not None and seq <= last:
            raise ProtocolError(reason, f"seq {seq} is not above {last} on stream {stream!r}")

    def record(self, stream: str, seq: int) -> None:
        """Move the mark for `stream` up to `seq` (never down)."""
        last = self._last.get(stream)
        if last is None or seq > last:
            self._last[stream] = seq

    def accept(self, stream: str, seq: int, reason: RefusalReason = RefusalReason.REPLAYED) -> None:
        """`check` then `record`."""
        self.check(stream, seq, reason)
        self._last[stream] = seq

    def last(self, stream: str) -> int | None:
        """The mark for `stream`, or None when nothing was recorded."""
        return self._last.get(stream)

    def snapshot(self) -> dict[str, int]:
        """A copy of every mark, for persistence."""
        return dict(self._last)

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> SeqGuard:
        """Restore from `snapshot()`; anything but str → non-negative int is ProtocolError(MALFORMED)."""
        if not isinstance(data, Mapping):
            raise _malformed("seq snapshot must be an object")
        guard = cls()
        for stream, seq in data.items():
            if not isinstance(stream, str) or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise _malformed(f"seq snapshot: bad entry {str(stream)[:64]!r}")
            guard._last[stream] = seq
        return guard

    def __len__(self) -> int:
        return len(self._last)

    def __repr__(self) -> str:
        return f"SeqGuard({len(self._last)} streams)"
