"""Configuration of the cloud's domain services: one validated object, every time rule in seconds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DAY", "CloudConfig"]

DAY = 86_400.0


class CloudConfig(BaseModel):
    """Limits and waiting times of the rules R1-R17. Defaults are the product's; tests shorten nothing but the
    clock (a virtual one) and the password hash cost (see `PasswordHasher.for_tests`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spin_max_tries: int = Field(default=3, ge=1)
    #: First S-PIN lock (R3); each new lock doubles it, up to `spin_lock_max_s`.
    spin_lock_s: float = Field(default=300.0, gt=0)
    spin_lock_max_s: float = Field(default=DAY, gt=0)
    command_ttl_s: float = Field(default=60.0, gt=0)
    #: Per-user token bucket for commands: burst size, and tokens refilled per second.
    rate_capacity: float = Field(default=10.0, ge=1)
    rate_refill_per_s: float = Field(default=1.0, gt=0)
    garage_limit: int = Field(default=50, ge=1)
    pairing_code_years: int = Field(default=1, ge=1)
    email_code_ttl_s: float = Field(default=7 * DAY, gt=0)
    #: A session older than this must log in again, whatever its activity (None: no limit).
    session_max_age_s: float | None = Field(default=30 * DAY, gt=0)
    free_years: int = Field(default=1, ge=1)
    max_renew_years: int = Field(default=5, ge=1)
    withdrawal_s: float = Field(default=14 * DAY, gt=0)
    #: The "licence has ended" mail is not sent for terms that ended longer ago than this.
    reminder_end_grace_s: float = Field(default=7 * DAY, ge=0)
    password_min_length: int = Field(default=8, ge=1)
