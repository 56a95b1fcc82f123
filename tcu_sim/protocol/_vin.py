"""Vehicle identification numbers (ISO 3779): syntax checks, the check digit, and seeded generation.

Received VINs are checked for syntax only: the check digit in position 9 is mandatory in North America but not
in Europe, where many real VINs carry a filler there. VINs this simulator generates carry a valid check digit.
"""

from __future__ import annotations

import random
import re
import string

from ._errors import ProtocolError, RefusalReason

__all__ = ["generate_vin", "is_valid_vin", "validate_vin", "vin_check_digit"]

VIN_LENGTH = 17
_FORBIDDEN = frozenset("IOQ")
VIN_ALPHABET = "".join(c for c in string.digits + string.ascii_uppercase if c not in _FORBIDDEN)
_ALPHABET_SET = frozenset(VIN_ALPHABET)
_VIN_RE = re.compile(r"[0-9A-HJ-NPR-Z]{17}")

# ISO 3779 / FMVSS 115 transliteration of letters to digits, and the weight of each position.
_VALUES: dict[str, int] = {str(d): d for d in range(10)}
_VALUES.update(zip("ABCDEFGH", range(1, 9), strict=True))
_VALUES.update(zip("JKLMN", range(1, 6), strict=True))
_VALUES.update({"P": 7, "R": 9})
_VALUES.update(zip("STUVWXYZ", range(2, 10), strict=True))
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)

# Model-year codes (position 10) for 2020..2030: letters without I, O, Q, U, Z and without the digit 0.
_MODEL_YEARS = "LMNPRSTVWXY"
# CUPRA/SEAT-like vehicle descriptor codes (positions 4-8 are "ZZZ" + a two-character model code in Europe).
_MODEL_CODES = ("KL", "KM", "5F", "KJ", "K1", "KU", "KF", "KH")
_PLANTS = "ABEMNRW"


def validate_vin(s: str) -> str:
    """Return `s` if it is a syntactically valid VIN, else raise ProtocolError(BAD_VIN) naming the problem."""
    if isinstance(s, str) and _VIN_RE.fullmatch(s) is not None:  # the common case, in one C call
        return s
    if not isinstance(s, str):
        raise ProtocolError(RefusalReason.BAD_VIN, f"VIN must be a string, got {type(s).__name__}")
    if len(s) != VIN_LENGTH:
        raise ProtocolError(RefusalReason.BAD_VIN, f"VIN must be {VIN_LENGTH} characters long, got {len(s)}")
    for position, char in enumerate(s, start=1):
        if char in _ALPHABET_SET:
            continue
        if char in _FORBIDDEN:
            problem = f"forbidden letter {char!r} at position {position} (I, O and Q are never used in a VIN)"
        elif char.upper() in _ALPHABET_SET:
            problem = f"lower-case letter {char!r} at position {position} (VINs are upper case)"
        else:
            problem = f"invalid character {char!r} at position {position} (digits and A-Z without I, O, Q)"
        raise ProtocolError(RefusalReason.BAD_VIN, f"VIN {s!r}: {problem}")
    return s


def is_valid_vin(s: str) -> bool:
    """True when `s` is a syntactically valid VIN (see `validate_vin`)."""
    try:
        validate_vin(s)
    except ProtocolError:
        return False
    return True


def vin_check_digit(vin: str) -> str:
    """The ISO 3779 check digit ("0"-"9" or "X") for a 17-character VIN; position 9 itself is ignored."""
    validate_vin(vin)
    total = sum(_VALUES[c] * w for c, w in zip(vin, _WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def has_valid_check_digit(vin: str) -> bool:
    """True when position 9 of a syntactically valid VIN holds its check digit (North-American rule)."""
    return vin_check_digit(vin) == vin[8]


def generate_vin(rng: random.Random, *, wmi: str = "VSS") -> str:
    """A plausible VIN for `wmi` with a valid check digit; the same `rng` state always gives the same VIN."""
    if len(wmi) != 3 or any(c not in _ALPHABET_SET for c in wmi):
        raise ProtocolError(RefusalReason.BAD_VIN, f"WMI must be 3 VIN characters, got {wmi!r}")
    descriptor = "ZZZ" + rng.choice(_MODEL_CODES)
    year = rng.choice(_MODEL_YEARS)
    plant = rng.choice(_PLANTS)
    serial = f"{rng.randrange(1_000_000):06d}"
    draft = f"{wmi}{descriptor}0{year}{plant}{serial}"
    return draft[:8] + vin_check_digit(draft) + draft[9:]
