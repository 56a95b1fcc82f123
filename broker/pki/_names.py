"""Which names may stand in a certificate's CN, and what kind of identity each one is.

The CN becomes the MQTT username (`use_identity_as_username`) and is substituted for `%u` in the broker's ACL
patterns, so a CN must never hold `+`, `#`, `/` or anything else that would widen a topic pattern. Two
disjoint families are allowed:

- a car: a valid VIN (ISO 3779: digits and capital letters only);
- anything else (`cloud`, `operator`, an app or test identity): a lower-case letter followed by lower-case
  letters, digits, `-` or `_`. Starting with a lower-case letter means such a name is never a VIN, so no named
  identity can ever collide with a car.

The CN is also the MQTT client id (SPEC §7), so two processes must never share a certificate: each cloud process
has its own (`cloud`, `cloud-2`, `cloud-3`, ...: `cloud_identity(n)`), and each operator tool its own
(`operator`, `operator-2`, ...: `operator_identity(n)`, leased by `FleetPKI.lease_operator`).
"""

from __future__ import annotations

import re
from enum import StrEnum

from tcu_sim.protocol import ProtocolError, validate_vin

from ._errors import InvalidIdentityName

__all__ = [
    "CLOUD",
    "OPERATOR",
    "RECORDER",
    "SERVER",
    "IdentityKind",
    "cloud_identity",
    "identity_kind",
    "operator_identity",
    "validate_identity_name",
    "validate_named_identity",
]

CLOUD = "cloud"
OPERATOR = "operator"
RECORDER = "recorder"  # `tcu-sim record`: reads every car, app and control topic, writes nothing
SERVER = "server"  # the broker's own certificate; never a client identity

_NAMED = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_NUMBERED = re.compile(r"(?P<base>cloud|operator)(?:-(?P<n>[2-9]|[1-9][0-9]{1,3}))?")


class IdentityKind(StrEnum):
    """What a certificate is for."""

    CA = "ca"
    SERVER = "server"
    CAR = "car"
    CLOUD = "cloud"
    OPERATOR = "operator"
    NAMED = "named"  # an app or test identity: no broker rights beyond what the ACL grants it by name


def cloud_identity(index: int) -> str:
    """The certificate identity of cloud process number `index` (1-based): `cloud`, `cloud-2`, `cloud-3`, ..."""
    return _numbered(CLOUD, index)


def operator_identity(index: int) -> str:
    """The certificate identity of operator tool number `index` (1-based): `operator`, `operator-2`, ..."""
    return _numbered(OPERATOR, index)


def _numbered(base: str, index: int) -> str:
    if not 1 <= index <= 9999:
        raise ValueError(f"{base} identity number must be 1..9999, got {index}")
    return base if index == 1 else f"{base}-{index}"


def validate_named_identity(name: str) -> str:
    """Return `name` if it is a safe non-car identity name, else raise InvalidIdentityName."""
    if not isinstance(name, str) or _NAMED.fullmatch(name) is None:
        shown = name[:70] if isinstance(name, str) else type(name).__name__
        raise InvalidIdentityName(
            f"identity name {shown!r} is not allowed: use a lower-case letter followed by up to 62 "
            "lower-case letters, digits, '-' or '_' (or a VIN for a car)"
        )
    return name


def identity_kind(name: str) -> IdentityKind:
    """The kind of identity `name` is; InvalidIdentityName when it is neither a VIN nor a safe name."""
    if not isinstance(name, str):
        raise InvalidIdentityName(f"identity name must be a string, got {type(name).__name__}")
    first = name[:1]
    if first.isupper() or first.isdigit():  # lower-case first letter: a named identity, never a VIN
        try:
            validate_vin(name)
        except ProtocolError as exc:
            raise InvalidIdentityName(
                f"{name[:70]!r} is neither a valid VIN ({exc.detail}) nor an identity name (those start with a "
                "lower-case letter)"
            ) from exc
        return IdentityKind.CAR
    validate_named_identity(name)
    if name == SERVER:
        return IdentityKind.SERVER
    numbered = _NUMBERED.fullmatch(name)
    if numbered is not None:
        return IdentityKind.CLOUD if numbered["base"] == CLOUD else IdentityKind.OPERATOR
    return IdentityKind.NAMED


def validate_identity_name(name: str) -> str:
    """Return `name` if it may be a certificate CN (a VIN or a safe name), else raise InvalidIdentityName."""
    identity_kind(name)
    return name
