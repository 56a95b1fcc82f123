"""VINs (ISO 3779): syntax checks that name the problem, check digits, seeded generation."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcu_sim.protocol import (
    VIN_ALPHABET,
    ProtocolError,
    RefusalReason,
    generate_vin,
    has_valid_check_digit,
    is_valid_vin,
    validate_vin,
    vin_check_digit,
)

# Real VINs with a North-American check digit in position 9.
KNOWN_VINS = {
    "1M8GDM9AXKP042788": "X",  # the ISO 3779 example, check digit X (remainder 10)
    "1HGCM82633A004352": "3",
    "JH4KA7561PC008269": "1",
    "11111111111111111": "1",
}


@pytest.mark.parametrize(("vin", "digit"), KNOWN_VINS.items())
def test_check_digit_of_known_vins(vin: str, digit: str) -> None:
    assert vin_check_digit(vin) == digit
    assert has_valid_check_digit(vin)


def test_european_vin_without_check_digit_is_still_valid() -> None:
    vin = "VSSZZZKJZLR012345"  # Europe: "Z" filler in position 9
    assert validate_vin(vin) == vin
    assert is_valid_vin(vin)
    assert not has_valid_check_digit(vin)


@pytest.mark.parametrize(
    ("vin", "fragment"),
    [
        ("VSSZZZKLZMR01234", "17 characters long, got 16"),
        ("VSSZZZKLZMR0123456", "17 characters long, got 18"),
        ("", "got 0"),
        ("VSSZZZKLZMR0I2345", "forbidden letter 'I' at position 13"),
        ("VSSZZZKLZMR01234O", "forbidden letter 'O' at position 17"),
        ("QSSZZZKLZMR012345", "forbidden letter 'Q' at position 1"),
        ("VSSzZZKLZMR012345", "lower-case letter 'z' at position 4"),
        ("VSS-ZZKLZMR012345", "invalid character '-' at position 4"),
        ("VSSZZZKLZMR01234\x00", "invalid character '\\x00' at position 17"),
        ("VSSZZZKLZMR01234Ä", "invalid character 'Ä' at position 17"),
    ],
)
def test_validation_names_the_problem(vin: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_vin(vin)
    assert info.value.reason is RefusalReason.BAD_VIN
    assert fragment in info.value.detail
    assert not is_valid_vin(vin)


def test_non_string_is_refused() -> None:
    with pytest.raises(ProtocolError, match="must be a string"):
        validate_vin(12345)  # type: ignore[arg-type]  # bad input on purpose


def test_generated_vins_are_valid_and_carry_a_check_digit() -> None:
    rng = random.Random(7)
    vins = [generate_vin(rng) for _ in range(500)]
    for vin in vins:
        assert validate_vin(vin) == vin
        assert vin.startswith("VSS")
        assert vin[8] == vin_check_digit(vin)
    assert len(set(vins)) == len(vins)
    assert any(vin[8] == "X" for vin in vins)


def test_generation_is_deterministic_for_a_seed() -> None:
    first = [generate_vin(random.Random(42)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    rng_a, rng_b = random.Random(99), random.Random(99)
    assert [generate_vin(rng_a) for _ in range(20)] == [generate_vin(rng_b) for _ in range(20)]
    assert generate_vin(random.Random(1)) != generate_vin(random.Random(2))


def test_generation_with_another_wmi() -> None:
    vin = generate_vin(random.Random(3), wmi="WVW")
    assert vin.startswith("WVW")
    assert has_valid_check_digit(vin)
    for wmi in ("VS", "VSSS", "VSO", "vss"):
        with pytest.raises(ProtocolError):
            generate_vin(random.Random(3), wmi=wmi)


@given(st.text(alphabet=VIN_ALPHABET, min_size=17, max_size=17))
def test_any_17_alphabet_characters_are_a_vin(vin: str) -> None:
    assert validate_vin(vin) == vin
    assert vin_check_digit(vin) in "0123456789X"


@given(st.text(max_size=30))
def test_arbitrary_text_is_valid_or_refused_as_bad_vin(text: str) -> None:
    if len(text) == 17 and set(text) <= set(VIN_ALPHABET):
        assert validate_vin(text) == text
    else:
        with pytest.raises(ProtocolError) as info:
            validate_vin(text)
        assert info.value.reason is RefusalReason.BAD_VIN


def test_alphabet() -> None:
    assert len(VIN_ALPHABET) == 33
    assert not set("IOQ") & set(VIN_ALPHABET)
