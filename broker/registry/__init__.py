"""The cloud's registry: accounts, sessions, cars, enrolments, S-PIN state, licences, commands, audit, mail.

Open one by URL; the schema is created or upgraded on open:

    async with open_registry("sqlite:///var/lib/tcu-sim/cloud.db") as registry: ...
    async with open_registry("sqlite://:memory:") as registry: ...
    async with open_registry("postgresql://user@host/db") as registry: ...

`sqlite://` is followed by the file path as it is (`sqlite:///abs/path.db`, `sqlite://relative/path.db`) or
by `:memory:`. A SQLite file serves several processes on one host; PostgreSQL serves processes on many hosts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ._backends import Backend, PostgresBackend, SqliteBackend, background_steps
from ._interface import LicenceChange, Registry, RegistryConflict, RegistryError, RegistryUnavailable
from ._records import (
    AlertRecord,
    AuditRecord,
    BookingRecord,
    CarContext,
    CommandRecord,
    CommandStep,
    EnrolmentRecord,
    EnrolmentState,
    LicenceRecord,
    MailRecord,
    PairingCodeRecord,
    PurchaseRecord,
    RateBucket,
    RoadsideCaseRecord,
    Role,
    SessionRecord,
    SpinState,
    StatusWrite,
    TripRecord,
    UserRecord,
    VehicleRecord,
    VehicleState,
    email_key,
)
from ._seqwindow import SEQ_WINDOW, SeqMark
from ._sql import SqlRegistry

__all__ = [
    "SEQ_WINDOW",
    "AlertRecord",
    "AuditRecord",
    "BookingRecord",
    "CarContext",
    "CommandRecord",
    "CommandStep",
    "EnrolmentRecord",
    "EnrolmentState",
    "LicenceChange",
    "LicenceRecord",
    "MailRecord",
    "PairingCodeRecord",
    "PurchaseRecord",
    "RateBucket",
    "Registry",
    "RegistryConflict",
    "RegistryError",
    "RegistryUnavailable",
    "RoadsideCaseRecord",
    "Role",
    "SeqMark",
    "SessionRecord",
    "SpinState",
    "SqlRegistry",
    "StatusWrite",
    "TripRecord",
    "UserRecord",
    "VehicleRecord",
    "VehicleState",
    "background_steps",
    "email_key",
    "open_registry",
]


async def _open_backend(url: str, *, pool_size: int) -> Backend:
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise RegistryError(f"registry URL {url!r}: expected sqlite://PATH, sqlite://:memory: or postgresql://...")
    if scheme == "sqlite":
        return await SqliteBackend.open(rest)
    if scheme in ("postgresql", "postgres"):
        return await PostgresBackend.open(url, pool_size=pool_size)
    raise RegistryError(f"registry URL {scheme}://...: unknown scheme (use sqlite or postgresql)")


@asynccontextmanager
async def open_registry(url: str, *, pool_size: int = 10) -> AsyncIterator[SqlRegistry]:
    """Open the registry at `url`, create or upgrade its schema, and close it on exit."""
    registry = SqlRegistry(await _open_backend(url, pool_size=pool_size))
    try:
        await registry.migrate()
        yield registry
    finally:
        await registry.close()
