"""The model catalogue: R5 enrolment matrix and the capability differences between models; the shared vocabulary
that `tcu_sim.vehicle` and `tcu_sim.app` re-export."""

from __future__ import annotations

import pytest

import tcu_sim.app
import tcu_sim.protocol
import tcu_sim.vehicle
from tcu_sim.protocol import (
    PUBLIC_OPS,
    AppOp,
    EnrolmentMethod,
    Equipment,
    UnsupportedConfiguration,
    VehicleModel,
    capabilities,
    valid_equipment,
)

M, E = VehicleModel, Equipment


@pytest.mark.parametrize(
    ("model", "equipment", "method"),
    [
        # R5, word for word: Leon/Formentor with media system, Ateca with navigation, newer models → TKOV
        (M.LEON, E.MEDIA_SYSTEM, EnrolmentMethod.TKOV),
        (M.FORMENTOR, E.MEDIA_SYSTEM, EnrolmentMethod.TKOV),
        (M.ATECA, E.NAVIGATION, EnrolmentMethod.TKOV),
        (M.BORN, E.MEDIA_SYSTEM, EnrolmentMethod.TKOV),
        (M.TAVASCAN, E.MEDIA_SYSTEM, EnrolmentMethod.TKOV),
        (M.TERRAMAR, E.MEDIA_SYSTEM, EnrolmentMethod.TKOV),
        # ... and Ateca with radio gets a pairing code
        (M.ATECA, E.RADIO, EnrolmentMethod.PAIRING_CODE),
        # navigation variants of the other models also do TKOV
        (M.LEON, E.NAVIGATION, EnrolmentMethod.TKOV),
        (M.FORMENTOR, E.NAVIGATION, EnrolmentMethod.TKOV),
        (M.BORN, E.NAVIGATION, EnrolmentMethod.TKOV),
        (M.TAVASCAN, E.NAVIGATION, EnrolmentMethod.TKOV),
        (M.TERRAMAR, E.NAVIGATION, EnrolmentMethod.TKOV),
    ],
)
def test_enrolment_method_follows_r5(model: VehicleModel, equipment: Equipment, method: EnrolmentMethod) -> None:
    assert capabilities(model, equipment).enrolment_method is method


def test_only_the_radio_ateca_enrols_with_a_pairing_code() -> None:
    pairing = [
        (m, e)
        for m in VehicleModel
        for e in valid_equipment(m)
        if capabilities(m, e).enrolment_method is EnrolmentMethod.PAIRING_CODE
    ]
    assert pairing == [(M.ATECA, E.RADIO)]


@pytest.mark.parametrize(
    ("model", "equipment"),
    [(M.BORN, E.RADIO), (M.TAVASCAN, E.RADIO), (M.TERRAMAR, E.RADIO), (M.LEON, E.RADIO), (M.ATECA, E.MEDIA_SYSTEM)],
)
def test_combinations_that_are_not_built_are_refused(model: VehicleModel, equipment: Equipment) -> None:
    with pytest.raises(UnsupportedConfiguration, match=f"a {model.value} is built with .*not {equipment.value}"):
        capabilities(model, equipment)


def test_unknown_names_are_refused_as_value_errors() -> None:
    with pytest.raises(UnsupportedConfiguration, match="unknown model 'beetle'"):
        capabilities("beetle", "radio")
    with pytest.raises(ValueError, match="unknown equipment 'cassette'"):
        capabilities("leon", "cassette")


def test_strings_are_accepted_and_instances_are_shared() -> None:
    assert capabilities("leon", "media_system") is capabilities(M.LEON, E.MEDIA_SYSTEM)


@pytest.mark.parametrize("model", [M.BORN, M.TAVASCAN])
def test_electric_models_ventilate_but_have_no_fuel_heater(model: VehicleModel) -> None:
    caps = capabilities(model, E.MEDIA_SYSTEM)
    assert (caps.electric, caps.has_fuel, caps.aux_heater, caps.ventilation) == (True, False, False, True)
    assert caps.battery_kwh is not None
    assert caps.tank_l is None
    assert 250 < caps.max_range_km < 600


@pytest.mark.parametrize("model", [M.LEON, M.FORMENTOR, M.TERRAMAR])
def test_fuel_models_have_heater_and_ventilation(model: VehicleModel) -> None:
    caps = capabilities(model, E.MEDIA_SYSTEM)
    assert (caps.has_fuel, caps.aux_heater, caps.ventilation, caps.infotainment_login) == (True,) * 4
    assert caps.tank_l is not None
    assert caps.battery_kwh is None
    assert 600 < caps.max_range_km < 1100


def test_radio_ateca_is_the_base_trim() -> None:
    caps = capabilities(M.ATECA, E.RADIO)
    assert (caps.aux_heater, caps.ventilation, caps.infotainment_login) == (False, False, False)
    nav = capabilities(M.ATECA, E.NAVIGATION)
    assert (nav.aux_heater, nav.ventilation, nav.infotainment_login) == (True, True, True)


def test_vehicle_and_app_re_export_the_shared_vocabulary_not_copies() -> None:
    for name in ("Capabilities", "EnrolmentMethod", "Equipment", "UnsupportedConfiguration", "VehicleModel",
                 "capabilities", "valid_equipment"):
        assert getattr(tcu_sim.vehicle, name) is getattr(tcu_sim.protocol, name), name
    assert tcu_sim.app.AppOp is AppOp
    assert tcu_sim.app.PUBLIC_OPS is PUBLIC_OPS
    assert issubclass(UnsupportedConfiguration, ValueError)
