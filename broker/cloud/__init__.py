"""The cloud's domain services: accounts, S-PIN, garage and enrolment, licences, commands (SPEC §3, R1-R17).

Pure rules plus registry calls, no MQTT: the handler on top turns app requests and verified car messages into
calls of these services and their results (or `CloudError`s) into responses. Build them all at once:

    async with open_registry(url) as registry:
        cloud = CloudServices(registry, clock, ServerSecret(key))
        await cloud.vehicles.import_vehicles(load_manifest(state / "vehicles.json"))  # or read_manifest(...)
        login = await cloud.accounts.login(email, password)
        new = await cloud.commands.request(login.token, request_id, vin, "unlock", {}, spin="4711")

Time comes from the injected `Clock`, identifiers from the injected `random.Random`, secrets (tokens, codes)
from `secrets`; the S-PIN and pairing-code HMAC key from the injected `ServerSecret`.
"""

from __future__ import annotations

import random

from broker.registry import Registry
from tcu_sim.clock import Clock

from ._access import Access, AccessControl, licence_problem
from ._accounts import REAUTH_CHOICES, AccountService, LoginResult, Principal
from ._carservices import (
    ALERT_KINDS,
    SPEED_GRACE_S,
    Booking,
    CarServices,
    FiredAlert,
    RoadsideCase,
    area_crossings,
    booking_result,
    speed_crossings,
)
from ._commands import CommandService, CommandView, NewCommand, Transition, allowed_from, take_token
from ._config import DAY, CloudConfig
from ._context import MailListener, ServiceContext
from ._errors import (
    AccessDenied,
    AuthenticationError,
    CancellationPeriodOver,
    CloudError,
    GarageFull,
    InsufficientRights,
    InvalidRequest,
    LicenseExpired,
    LicenseMissing,
    PairingCodeExpired,
    PairingCodeInvalid,
    PrivacyModeOn,
    RateLimited,
    RequestRefused,
    ServiceUnavailable,
    SessionExpired,
    SpinError,
    SpinIncorrect,
    SpinLocked,
    SpinPolicyViolation,
    SpinRequired,
    TermsNotAccepted,
    Unauthenticated,
    UnsupportedByVehicle,
    UserNotVerified,
    VehicleNotFound,
    VehicleOffline,
)
from ._events import CarEventOutcome, CarEvents
from ._garage import (
    INFOTAINMENT_LOGIN,
    INVITATION,
    PRIMARY_CONFIRMATION,
    AddVehicleResult,
    EnrolmentOutcome,
    GarageEntry,
    GarageService,
)
from ._licences import REMINDER_STAGES, LicenceService, LicenceStatus, Reminder
from ._rights import OP_RIGHTS, ROLE_RIGHTS, SPIN_OPS, Right, rights_of
from ._security import PasswordHasher, ServerSecret, add_years, spin_policy_problem
from ._spin import SpinGuard, register_failure
from ._vehicles import (
    ManifestError,
    VehicleManifest,
    VehicleService,
    load_manifest,
    parse_manifest,
    read_manifest,
    vehicle_capabilities,
)

__all__ = [
    "ALERT_KINDS",
    "DAY",
    "INFOTAINMENT_LOGIN",
    "INVITATION",
    "OP_RIGHTS",
    "PRIMARY_CONFIRMATION",
    "REAUTH_CHOICES",
    "REMINDER_STAGES",
    "ROLE_RIGHTS",
    "SPEED_GRACE_S",
    "SPIN_OPS",
    "Access",
    "AccessControl",
    "AccessDenied",
    "AccountService",
    "AddVehicleResult",
    "AuthenticationError",
    "Booking",
    "CancellationPeriodOver",
    "CarEventOutcome",
    "CarEvents",
    "CarServices",
    "CloudConfig",
    "CloudError",
    "CloudServices",
    "CommandService",
    "CommandView",
    "EnrolmentOutcome",
    "FiredAlert",
    "GarageEntry",
    "GarageFull",
    "GarageService",
    "InsufficientRights",
    "InvalidRequest",
    "LicenceService",
    "LicenceStatus",
    "LicenseExpired",
    "LicenseMissing",
    "LoginResult",
    "MailListener",
    "ManifestError",
    "NewCommand",
    "PairingCodeExpired",
    "PairingCodeInvalid",
    "PasswordHasher",
    "Principal",
    "PrivacyModeOn",
    "RateLimited",
    "Reminder",
    "RequestRefused",
    "Right",
    "RoadsideCase",
    "ServerSecret",
    "ServiceContext",
    "ServiceUnavailable",
    "SessionExpired",
    "SpinError",
    "SpinGuard",
    "SpinIncorrect",
    "SpinLocked",
    "SpinPolicyViolation",
    "SpinRequired",
    "TermsNotAccepted",
    "Transition",
    "Unauthenticated",
    "UnsupportedByVehicle",
    "UserNotVerified",
    "VehicleManifest",
    "VehicleNotFound",
    "VehicleOffline",
    "VehicleService",
    "add_years",
    "allowed_from",
    "area_crossings",
    "booking_result",
    "licence_problem",
    "load_manifest",
    "parse_manifest",
    "read_manifest",
    "register_failure",
    "rights_of",
    "speed_crossings",
    "spin_policy_problem",
    "take_token",
    "vehicle_capabilities",
]


class CloudServices:
    """Every domain service of the cloud over one registry, wired together.

    Attributes: `accounts`, `spin`, `access`, `vehicles`, `garage`, `licences`, `commands`, `events`, `services`
    (driving data, health report, alerts, scheduling, roadside assistance) (and `ctx`,
    the shared dependencies). Several instances — in one process or many — may share one registry: every rule
    that counts (S-PIN failures, rate limits, idempotent commands, reminders) is kept in the store.
    """

    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        secret: ServerSecret,
        *,
        config: CloudConfig | None = None,
        rng: random.Random | None = None,
        passwords: PasswordHasher | None = None,
    ) -> None:
        self.ctx = ServiceContext(
            registry=registry, clock=clock, secret=secret, config=config or CloudConfig(),
            rng=rng or random.SystemRandom(), passwords=passwords or PasswordHasher(),
        )
        self.spin = SpinGuard(self.ctx)
        self.accounts = AccountService(self.ctx, self.spin)
        self.access = AccessControl(self.ctx, self.accounts)
        self.vehicles = VehicleService(self.ctx, self.access)
        self.garage = GarageService(self.ctx, self.accounts, self.access)
        self.licences = LicenceService(self.ctx, self.access)
        self.commands = CommandService(self.ctx, self.accounts, self.access, self.spin)
        self.events = CarEvents(self.ctx, self.garage, self.vehicles)
        self.services = CarServices(self.ctx, self.access)

    @property
    def registry(self) -> Registry:
        """The registry the services share."""
        return self.ctx.registry

    def __repr__(self) -> str:
        return f"CloudServices({self.ctx.registry!r}, clock={self.ctx.clock!r})"
