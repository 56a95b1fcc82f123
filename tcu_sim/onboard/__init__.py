"""Onboarding: how a user gets an account and a car — register, verify (the simulated mailbox), log in, add the
car in the app and do the in-car step (R1, R5, R10).

    info = await sign_up(app, email, password, spin)                  # one user, through the app
    added = await enrol(app, vin, car_control)                         # one car: add, then the in-car step
    users = await set_up_users(config, cars, sessions, app_client, timeout=30)  # a whole fleet file's users

Every caller uses these steps: `tcu-sim up` (`set_up_users`), the test harness (`SimUser.sign_up`, `enrol`), the
app benchmark (`sign_up` and `enrol` for many users at once), and the scenario runner (`plan_users`,
`verification_code`, `in_car_step`: it seeds users through the cloud's services before any car is online, so
its in-car step is the cloud's completion of it rather than a control on a car).
"""

from __future__ import annotations

from ._steps import (
    CarControl,
    NoVerificationMail,
    OnboardingError,
    UnknownEnrolmentMethod,
    enrol,
    in_car_step,
    log_in_or_sign_up,
    session_control,
    sign_up,
    verification_code,
    verify_from_mailbox,
    wait_enrolled,
)
from ._users import EnrolmentOutcome, UserCar, UserPlan, plan_users, set_up_users

__all__ = [
    "CarControl",
    "EnrolmentOutcome",
    "NoVerificationMail",
    "OnboardingError",
    "UnknownEnrolmentMethod",
    "UserCar",
    "UserPlan",
    "enrol",
    "in_car_step",
    "log_in_or_sign_up",
    "plan_users",
    "session_control",
    "set_up_users",
    "sign_up",
    "verification_code",
    "verify_from_mailbox",
    "wait_enrolled",
]
