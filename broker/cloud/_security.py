"""Secrets handling: password hashing (argon2id), keyed S-PIN and pairing-code hashes, session tokens, S-PIN
policy. Nothing here logs, and no object's repr shows a secret or key.

- Passwords: argon2id (argon2-cffi), run in a worker thread so a slow hash never stalls the event loop.
- S-PINs and pairing codes: HMAC-SHA256 under keys derived from the server secret (R2): 4 or 8 digits are too
  few for any unkeyed hash to protect, so a stolen database without the secret reveals nothing.
- Session tokens: 32 random bytes, stored as SHA-256 (a token is already unguessable: no key needed).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import secrets
from datetime import UTC, datetime

import argon2

__all__ = [
    "PasswordHasher",
    "ServerSecret",
    "add_years",
    "hash_token",
    "new_email_code",
    "new_pairing_code",
    "new_token",
    "spin_policy_problem",
]


class ServerSecret:
    """The cloud's secret key; per-purpose keys are derived from it so one never serves two uses."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the server secret must have at least 16 bytes")
        self._key = key

    @classmethod
    def generate(cls) -> ServerSecret:
        """A fresh random secret (for a throw-away cloud; a persistent one must keep its secret)."""
        return cls(secrets.token_bytes(32))

    def _derive(self, purpose: str) -> bytes:
        return hmac.new(self._key, b"tcu-sim/" + purpose.encode(), hashlib.sha256).digest()

    def spin_hash(self, user_id: str, spin: str) -> str:
        """Keyed hash of a user's S-PIN (bound to the user, so equal S-PINs hash differently)."""
        msg = f"{user_id}\0{spin}".encode()
        return hmac.new(self._derive("spin"), msg, hashlib.sha256).hexdigest()

    def spin_matches(self, stored_hash: str, user_id: str, spin: str) -> bool:
        """Constant-time comparison of an S-PIN against its stored keyed hash."""
        return hmac.compare_digest(stored_hash, self.spin_hash(user_id, spin))

    def pairing_hash(self, vin: str, code: str) -> str:
        """Keyed hash of a pairing code, bound to the car it was issued for."""
        return hmac.new(self._derive("pairing"), f"{vin}\0{code}".encode(), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "ServerSecret(***)"


def new_token() -> str:
    """A session token: 32 random bytes, URL-safe text."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the registry stores for a token (also for e-mail verification codes)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_email_code() -> str:
    """The secret of an e-mail verification link."""
    return secrets.token_urlsafe(16)


def new_pairing_code() -> str:
    """An 8-digit pairing code (R5)."""
    return f"{secrets.randbelow(10**8):08d}"


class PasswordHasher:
    """argon2id password hashing. The defaults are argon2-cffi's (RFC 9106 low-memory profile)."""

    def __init__(self, hasher: argon2.PasswordHasher | None = None) -> None:
        self._hasher = hasher or argon2.PasswordHasher()
        # Verified against when the e-mail is unknown, so a login takes as long whether or not it exists.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    @classmethod
    def for_tests(cls) -> PasswordHasher:
        """Cheap parameters, so a test suite can register hundreds of users. Never for production."""
        return cls(argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))

    async def hash(self, password: str) -> str:
        """The argon2id hash of the password (computed in a worker thread)."""
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether the password matches; with `password_hash=None`, spend the same time and say no."""
        stored = password_hash or self._dummy

        def check() -> bool:
            try:
                return bool(self._hasher.verify(stored, password))
            except argon2.exceptions.VerificationError:
                return False
            except argon2.exceptions.InvalidHashError:
                return False

        ok = await asyncio.to_thread(check)
        return ok and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash used weaker parameters than the current ones."""
        return self._hasher.check_needs_rehash(password_hash)

    def __repr__(self) -> str:
        p = self._hasher
        return f"PasswordHasher(time_cost={p.time_cost}, memory_cost={p.memory_cost}, parallelism={p.parallelism})"


def spin_policy_problem(spin: object) -> str | None:
    """Why this S-PIN is refused (R2), or None when it is acceptable.

    Refused: anything but exactly 4 ASCII digits; one digit repeated (0000, 7777); a run up or down by one,
    also across 9/0 (0123, 1234, 6789, 7890, 9012, 4321, 9876, 3210, 2109); a repeated pair (1212, 2525).
    """
    if not isinstance(spin, str) or len(spin) != 4 or not all("0" <= c <= "9" for c in spin):
        return "the S-PIN must be exactly 4 digits"
    d = [int(c) for c in spin]
    steps = {(b - a) % 10 for a, b in itertools.pairwise(d)}
    if steps == {0}:
        return "the S-PIN must not repeat one digit"
    if steps in ({1}, {9}):
        return "the S-PIN must not be a sequence of digits"
    if spin[:2] == spin[2:]:
        return "the S-PIN must not repeat a pair of digits"
    return None


def add_years(ts: float, years: int) -> float:
    """The same calendar day and time `years` later, in UTC (29 February becomes 28 February)."""
    start = datetime.fromtimestamp(ts, tz=UTC)
    try:
        end = start.replace(year=start.year + years)
    except ValueError:  # 29 February in a year that has none
        end = start.replace(year=start.year + years, day=28)
    return end.timestamp()
