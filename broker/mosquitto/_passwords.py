"""App credentials in Mosquitto's password-file format, written without the `mosquitto_passwd` binary.

Mosquitto 2.0 reads `username:$7$<iterations>$<base64 salt>$<base64 hash>`: PBKDF2-HMAC-SHA512 over the UTF-8
password with a 12-byte salt and a 64-byte result (what `mosquitto_passwd` writes, with 101 iterations). We use
more iterations: the broker reads the count from each line.

App usernames are lower-case names (a lower-case letter, then lower-case letters, digits, `-`, `_`): never a VIN,
never `:` (the file's separator), never a topic wildcard. Because client ids are global in the broker and the app
listener forces the client id to the username, the service names `cloud`, `operator` and `server` and names
starting with them plus `-` are reserved (a cloud instance may connect as `cloud-2`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from broker.pki import CLOUD, OPERATOR, SERVER, InvalidIdentityName, validate_named_identity

__all__ = [
    "DEFAULT_ITERATIONS",
    "hash_password",
    "read_password_file",
    "render_password_file",
    "validate_app_username",
    "verify_password",
    "write_password_file",
]

DEFAULT_ITERATIONS = 10_000
_SALT_BYTES = 12  # what mosquitto_passwd uses
_RESERVED = (CLOUD, OPERATOR, SERVER)


def validate_app_username(username: str) -> str:
    """Return `username` if it may be an app's broker username, else raise InvalidIdentityName."""
    try:
        validate_named_identity(username)
    except InvalidIdentityName as exc:
        raise InvalidIdentityName(str(exc).replace("identity name", "app username", 1)) from None
    if any(username == r or username.startswith(f"{r}-") for r in _RESERVED):
        raise InvalidIdentityName(
            f"app username {username!r} is reserved: 'cloud', 'operator', 'server' (and those names followed "
            "by '-') are service identities"
        )
    return username


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """The `$7$...` hash Mosquitto 2.0 checks `password` against (a fresh random salt unless `salt` is given)."""
    if not password:
        raise ValueError("an app password must not be empty")
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """True when `password` matches a `$7$` hash (the embedded broker checks app logins with this)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error):
        return False
    if iterations < 1 or not expected:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, dklen=len(expected))
    return hmac.compare_digest(digest, expected)


def render_password_file(hashes: Mapping[str, str]) -> str:
    """Password-file text for `username -> $7$ hash` (usernames validated)."""
    lines = []
    for username, hashed in sorted(hashes.items()):
        validate_app_username(username)
        if not hashed.startswith("$7$") or "\n" in hashed or ":" in hashed:
            raise ValueError(f"the hash for {username!r} is not a Mosquitto $7$ hash")
        lines.append(f"{username}:{hashed}")
    return "".join(f"{line}\n" for line in lines)


def read_password_file(path: Path) -> dict[str, str]:
    """`username -> hash` from a Mosquitto password file (empty when the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    hashes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        username, sep, hashed = line.partition(":")
        if not sep:
            raise ValueError(f"{path}:{number}: not 'username:hash'")
        hashes[username] = hashed
    return hashes


def write_password_file(path: Path, hashes: Mapping[str, str]) -> None:
    """Write a password file (mode 0600: the hashes are secrets too), atomically."""
    data = render_password_file(hashes).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
