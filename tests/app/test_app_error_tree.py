"""The app client's error tree mirrors the cloud's: one class per `ErrorCode` on each side, with the same name, the
same family and the same detail attributes.

The two trees are kept apart on purpose (the app client must not import `broker`); this test is what keeps them
in step. Adding an `ErrorCode`, or a class for a code on one side only, fails here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TypeVar

import pytest

from broker.cloud import CloudError
from tcu_sim.app import AppRequestError, error_from_app_error
from tcu_sim.protocol import ErrorCode

#: The only names that differ between the trees (cloud name → app name); every other name is the same.
CLASS_NAMES_CLOUD_TO_APP = {"SpinPolicyViolation": "SpinPolicy"}
FAMILY_NAMES_CLOUD_TO_APP = {"AuthenticationError": "AuthenticationRequired"}

#: The codes whose error carries details, with a value for each (and no other code carries any).
DETAILS: dict[ErrorCode, dict[str, Any]] = {
    ErrorCode.SPIN_INCORRECT: {"remaining_tries": 2},
    ErrorCode.SPIN_LOCKED: {"locked_seconds": 30},
    ErrorCode.RATE_LIMITED: {"retry_after_s": 1.5},
}
DETAIL_NAMES = {name for details in DETAILS.values() for name in details}

E = TypeVar("E")


def _subclasses(root: type[E]) -> list[type[E]]:
    found: list[type[E]] = []
    for cls in root.__subclasses__():
        found += [cls, *_subclasses(cls)]
    return found


def _by_code(root: type[E]) -> dict[ErrorCode, type[E]]:
    """Every class under `root` that is bound to a code; fails on a code bound twice."""
    bound = [(vars(cls)["code"], cls) for cls in _subclasses(root) if "code" in vars(cls)]
    twice = [code for code, n in Counter(code for code, _ in bound).items() if n > 1]
    assert not twice, f"{root.__name__}: more than one class for {twice}"
    return dict(bound)


def _family(cls: type, root: type) -> str:
    """The name of the class just below the root: what the caller does about the error."""
    mro = cls.__mro__
    return mro[mro.index(root) - 1].__name__


CLOUD = _by_code(CloudError)
APP = _by_code(AppRequestError)


def test_every_code_has_one_class_on_each_side() -> None:
    assert set(CLOUD) == set(ErrorCode), f"codes without a cloud error: {set(ErrorCode) - set(CLOUD)}"
    assert set(APP) == set(ErrorCode), f"codes without an app error: {set(ErrorCode) - set(APP)}"


@pytest.mark.parametrize("code", list(ErrorCode))
def test_names_and_families_match(code: ErrorCode) -> None:
    cloud, app = CLOUD[code], APP[code]
    assert CLASS_NAMES_CLOUD_TO_APP.get(cloud.__name__, cloud.__name__) == app.__name__
    cloud_family = _family(cloud, CloudError)
    assert FAMILY_NAMES_CLOUD_TO_APP.get(cloud_family, cloud_family) == _family(app, AppRequestError)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_a_cloud_error_reaches_the_app_as_its_twin_with_the_same_details(code: ErrorCode) -> None:
    cloud_error = CLOUD[code](**DETAILS.get(code, {}))
    assert cloud_error.details() == DETAILS.get(code, {})

    app_error = error_from_app_error(cloud_error.to_app_error(), request_id="r1")

    assert type(app_error) is APP[code]
    assert {name: getattr(app_error, name) for name in DETAIL_NAMES if hasattr(app_error, name)} == DETAILS.get(
        code, {}
    )
    assert (app_error.code, app_error.message, app_error.request_id) == (code, cloud_error.message, "r1")


def test_the_listed_differences_are_still_real() -> None:
    # A name made the same on both sides must leave the lists above, so that they never hide a new difference.
    cloud_names = {cls.__name__ for cls in _subclasses(CloudError)}
    app_names = {cls.__name__ for cls in _subclasses(AppRequestError)}
    for cloud_name, app_name in (CLASS_NAMES_CLOUD_TO_APP | FAMILY_NAMES_CLOUD_TO_APP).items():
        assert cloud_name in cloud_names
        assert app_name in app_names
        assert app_name not in cloud_names
