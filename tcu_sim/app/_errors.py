"""Errors of the app client: one root, `AppApiError`, grouped by what the caller does about them.

- `AppTransportError` — the broker or the cloud did not answer (`AppConnectionError`, `AppTimeout`) or answered
  something unreadable (`AppProtocolError`): retry later;
- `AppRequestError` — the cloud refused the request with an error code of SPEC §2.5; one subclass per code,
  grouped in families that match the cloud's (`AuthenticationRequired`, `RequestRefused`, `AccessDenied`,
  `SpinError`, `ServiceUnavailable`, `RateLimited`), carrying the details a code has as attributes
  (`SpinIncorrect.remaining_tries`, `SpinLocked.locked_seconds`, `RateLimited.retry_after_s`).
  The classes mirror `broker.cloud`'s one for one and by name, except that the cloud calls the first family
  `AuthenticationError` and `SpinPolicy` `SpinPolicyViolation`; `tests/app/test_app_error_tree.py` keeps the two
  trees in step.

Messages come from the cloud, which never puts a secret in them; the client adds none.
"""

from __future__ import annotations

from typing import ClassVar

from tcu_sim.protocol import AppError, ErrorCode

__all__ = [
    "AccessDenied",
    "AppApiError",
    "AppConnectionError",
    "AppProtocolError",
    "AppRequestError",
    "AppTimeout",
    "AppTransportError",
    "AuthenticationRequired",
    "CancellationPeriodOver",
    "GarageFull",
    "InsufficientRights",
    "InvalidRequest",
    "LicenseExpired",
    "LicenseMissing",
    "PairingCodeExpired",
    "PairingCodeInvalid",
    "PrivacyModeOn",
    "RateLimited",
    "RequestRefused",
    "ServiceUnavailable",
    "SessionExpired",
    "SpinError",
    "SpinIncorrect",
    "SpinLocked",
    "SpinPolicy",
    "SpinRequired",
    "TermsNotAccepted",
    "Unauthenticated",
    "UnsupportedByVehicle",
    "UserNotVerified",
    "VehicleNotFound",
    "VehicleOffline",
    "error_from_app_error",
]


class AppApiError(Exception):
    """Root of every error the app client raises."""


# -- transport -----------------------------------------------------------------------------------------------
class AppTransportError(AppApiError):
    """The request may not have reached the cloud, or its answer did not come back: retry later."""


class AppConnectionError(AppTransportError):
    """The MQTT connection to the broker failed or was lost."""


class AppTimeout(AppTransportError):
    """No answer within the time allowed."""


class AppProtocolError(AppTransportError):
    """The cloud answered something that is not a valid app response."""


# -- refused by the cloud ------------------------------------------------------------------------------------
class AppRequestError(AppApiError):
    """The cloud refused the request: `code` (SPEC §2.5), `message` for the user, `request_id`."""

    code: ClassVar[ErrorCode]

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, request_id={self.request_id!r})"


class AuthenticationRequired(AppRequestError):
    """Log in (again)."""


class Unauthenticated(AuthenticationRequired):
    """No valid session (or wrong login data)."""

    code = ErrorCode.UNAUTHENTICATED


class SessionExpired(AuthenticationRequired):
    """The session was idle too long (R17): enter the password again."""

    code = ErrorCode.SESSION_EXPIRED


class RequestRefused(AppRequestError):
    """Fix the request."""


class InvalidRequest(RequestRefused):
    """A parameter is missing or wrong."""

    code = ErrorCode.INVALID_REQUEST


class TermsNotAccepted(RequestRefused):
    """Accept the terms and conditions to add a car."""

    code = ErrorCode.TERMS_AND_CONDITIONS_NOT_ACCEPTED


class SpinPolicy(RequestRefused):
    """The S-PIN is not 4 digits or too easy to guess."""

    code = ErrorCode.SPIN_POLICY


class GarageFull(RequestRefused):
    """The garage holds the maximum number of cars."""

    code = ErrorCode.GARAGE_FULL


class PairingCodeInvalid(RequestRefused):
    """The pairing code is not valid for the car."""

    code = ErrorCode.PAIRING_CODE_INVALID


class PairingCodeExpired(RequestRefused):
    """The pairing code has expired."""

    code = ErrorCode.PAIRING_CODE_EXPIRED


class CancellationPeriodOver(RequestRefused):
    """The purchase can no longer be cancelled."""

    code = ErrorCode.CANCELLATION_PERIOD_OVER


class AccessDenied(AppRequestError):
    """The user may not do this (to this car)."""


class VehicleNotFound(AccessDenied):
    """The VIN is not in the user's garage (or does not exist: the two cannot be told apart)."""

    code = ErrorCode.VEHICLE_NOT_FOUND


class InsufficientRights(AccessDenied):
    """The user's role for the car does not include the service."""

    code = ErrorCode.INSUFFICIENT_RIGHTS


class UserNotVerified(AccessDenied):
    """The e-mail address is not verified yet."""

    code = ErrorCode.USER_NOT_VERIFIED


class SpinError(AppRequestError):
    """The S-PIN was missing or wrong, or is locked."""


class SpinRequired(SpinError):
    """The service needs the S-PIN."""

    code = ErrorCode.SPIN_REQUIRED


class SpinIncorrect(SpinError):
    """Wrong S-PIN; `remaining_tries` before it locks."""

    code = ErrorCode.SPIN_INCORRECT

    def __init__(self, message: str, *, remaining_tries: int, request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.remaining_tries = remaining_tries


class SpinLocked(SpinError):
    """The S-PIN is locked for `locked_seconds` more."""

    code = ErrorCode.SPIN_LOCKED

    def __init__(self, message: str, *, locked_seconds: int, request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.locked_seconds = locked_seconds


class ServiceUnavailable(AppRequestError):
    """The car cannot offer the service now."""


class LicenseMissing(ServiceUnavailable):
    """The car's services were never activated."""

    code = ErrorCode.LICENSE_MISSING


class LicenseExpired(ServiceUnavailable):
    """The car's licence has ended."""

    code = ErrorCode.LICENSE_EXPIRED


class PrivacyModeOn(ServiceUnavailable):
    """The car is in maximum privacy."""

    code = ErrorCode.PRIVACY_MODE


class VehicleOffline(ServiceUnavailable):
    """The car has no data connection."""

    code = ErrorCode.VEHICLE_OFFLINE


class UnsupportedByVehicle(ServiceUnavailable):
    """The car does not have this function."""

    code = ErrorCode.UNSUPPORTED_BY_VEHICLE


class RateLimited(AppRequestError):
    """Too many requests; retry after `retry_after_s` seconds."""

    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, retry_after_s: float, request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.retry_after_s = retry_after_s


_BY_CODE: dict[ErrorCode, type[AppRequestError]] = {
    cls.code: cls
    for cls in (
        Unauthenticated,
        SessionExpired,
        InvalidRequest,
        TermsNotAccepted,
        SpinPolicy,
        GarageFull,
        PairingCodeInvalid,
        PairingCodeExpired,
        CancellationPeriodOver,
        VehicleNotFound,
        InsufficientRights,
        UserNotVerified,
        SpinRequired,
        LicenseMissing,
        LicenseExpired,
        PrivacyModeOn,
        VehicleOffline,
        UnsupportedByVehicle,
    )
}


def error_from_app_error(error: AppError, request_id: str | None = None) -> AppRequestError:
    """The typed exception for an `AppError` of a response."""
    code = ErrorCode(error.code)
    if code is ErrorCode.SPIN_INCORRECT:
        return SpinIncorrect(error.message, remaining_tries=error.remaining_tries or 0, request_id=request_id)
    if code is ErrorCode.SPIN_LOCKED:
        return SpinLocked(error.message, locked_seconds=error.locked_seconds or 0, request_id=request_id)
    if code is ErrorCode.RATE_LIMITED:
        return RateLimited(error.message, retry_after_s=error.retry_after_s or 0.0, request_id=request_id)
    return _BY_CODE[code](error.message, request_id=request_id)
