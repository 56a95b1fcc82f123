"""`SqlRegistry`: the registry interface implemented once, in SQL both SQLite and PostgreSQL understand.

A step of one statement runs in `statement()` (the statement is atomic by itself, and saves the BEGIN/COMMIT
round trips); a step of several runs in `transaction()`.

Every piece of SQL built with an f-string below inserts only `?` placeholder lists, a `FOR UPDATE` suffix or a
column name from this module, never input: input always travels as a bound parameter.
"""

# ruff: noqa: S608  - see the module docstring: the f-strings build placeholders, never values

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Sequence
from typing import Any

from tcu_sim.protocol import CommandState

from ._backends import Backend, Row, Tx
from ._interface import LicenceChange, RegistryConflict, RegistryError
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
from ._schema import ID_COLUMN, MIGRATIONS
from ._seqwindow import SeqMark

__all__ = ["SqlRegistry"]

_OPEN_STATES = (CommandState.QUEUED.value, CommandState.DELIVERED.value, CommandState.IN_PROGRESS.value)
# Any constant works; it names the advisory lock that serialises schema upgrades of concurrent processes.
_MIGRATION_LOCK = 7_317_001


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _user(row: Row) -> UserRecord:
    return UserRecord(
        id=row["id"], email=row["email"], password_hash=row["password_hash"], spin_hash=row["spin_hash"],
        verified=bool(row["verified"]), reauth_minutes=row["reauth_minutes"], created_at=row["created_at"],
    )


def _session(row: Row) -> SessionRecord:
    return SessionRecord(
        token_hash=row["token_hash"], user_id=row["user_id"], created_at=row["created_at"],
        last_activity=row["last_activity"], revoked_at=row["revoked_at"],
    )


def _enrolment(row: Row) -> EnrolmentRecord:
    return EnrolmentRecord(
        vin=row["vin"], user_id=row["user_id"], role=Role(row["role"]), state=EnrolmentState(row["state"]),
        method=row["method"], created_at=row["created_at"], activated_at=row["activated_at"],
    )


def _pairing(row: Row) -> PairingCodeRecord:
    return PairingCodeRecord(
        id=row["id"], vin=row["vin"], user_id=row["user_id"], code_hash=row["code_hash"],
        created_at=row["created_at"], expires_at=row["expires_at"], voided_at=row["voided_at"],
        used_at=row["used_at"],
    )


def _licence(row: Row) -> LicenceRecord:
    return LicenceRecord(vin=row["vin"], starts_at=row["starts_at"], ends_at=row["ends_at"])


def _purchase(row: Row) -> PurchaseRecord:
    return PurchaseRecord(
        id=row["id"], vin=row["vin"], user_id=row["user_id"], years=row["years"],
        activated_at=row["activated_at"], starts_at=row["starts_at"], ends_at=row["ends_at"],
        refunded_at=row["refunded_at"],
    )


def _command(row: Row) -> CommandRecord:
    return CommandRecord(
        id=row["id"], user_id=row["user_id"], request_id=row["request_id"], vin=row["vin"], op=row["op"],
        params=json.loads(row["params"]), state=CommandState(row["state"]),
        # float(): SQLite's RETURNING hands back the value as bound, before the REAL affinity applies.
        created_at=float(row["created_at"]), expires_at=float(row["expires_at"]),
        updated_at=float(row["updated_at"]), reason=row["reason"], detail=row["detail"],
        client_id=row["client_id"],
    )


def _booking(row: Row) -> BookingRecord:
    return BookingRecord(
        id=row["id"], vin=row["vin"], user_id=row["user_id"], date=row["date"], workshop=row["workshop"],
        reason=row["reason"], state=row["state"], created_at=float(row["created_at"]),
        cancelled_at=None if row["cancelled_at"] is None else float(row["cancelled_at"]),
    )


def _mail(row: Row) -> MailRecord:
    return MailRecord(
        id=row["id"], at=row["at"], to=row["to_email"], subject=row["subject"], body=row["body"],
        user_id=row["user_id"],
    )


class SqlRegistry:
    """The registry on a SQLite or PostgreSQL backend. Open it with `open_registry(url)`."""

    def __init__(self, backend: Backend) -> None:
        self._db = backend
        self._lock_row = backend.for_update

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def __repr__(self) -> str:
        return f"SqlRegistry({self._db!r})"

    async def close(self) -> None:
        """Close the backend's connections."""
        await self._db.close()

    # -- schema ----------------------------------------------------------------------------------------------
    async def migrate(self) -> int:
        """Create or upgrade the schema to the newest version; the version now in the database."""
        latest = MIGRATIONS[-1][0]
        current = 0
        for version, statements in MIGRATIONS:
            async with self._db.transaction() as tx:
                if self.dialect == "postgresql":
                    await tx.execute("SELECT pg_advisory_xact_lock(?)", _MIGRATION_LOCK)
                await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = await tx.fetchone("SELECT MAX(version) AS v FROM schema_version")
                current = int(row["v"]) if row and row["v"] is not None else 0
                if current > latest:
                    raise RegistryError(
                        f"the database has schema version {current}, newer than this program's {latest}"
                    )
                if version <= current:
                    continue
                for statement in statements:
                    await tx.execute(statement.replace("{id}", ID_COLUMN[self.dialect]))
                await tx.execute("INSERT INTO schema_version (version) VALUES (?)", version)
                current = version
        return current

    # -- accounts --------------------------------------------------------------------------------------------
    async def create_user(self, user: UserRecord) -> bool:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "INSERT INTO users (id, email, email_key, password_hash, spin_hash, verified,"
                " reauth_minutes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (email_key) DO NOTHING RETURNING id",
                user.id, user.email, user.email_key, user.password_hash, user.spin_hash, int(user.verified),
                user.reauth_minutes, user.created_at,
            )
        return row is not None

    async def get_user(self, user_id: str) -> UserRecord | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT * FROM users WHERE id = ?", user_id)
        return None if row is None else _user(row)

    async def get_user_by_email(self, email: str) -> UserRecord | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT * FROM users WHERE email_key = ?", email_key(email))
        return None if row is None else _user(row)

    async def _update_user(self, user_id: str, column: str, value: Any) -> None:
        async with self._db.statement() as tx:
            await tx.execute(f"UPDATE users SET {column} = ? WHERE id = ?", value, user_id)

    async def set_user_verified(self, user_id: str) -> None:
        await self._update_user(user_id, "verified", 1)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._update_user(user_id, "password_hash", password_hash)

    async def set_spin_hash(self, user_id: str, spin_hash: str) -> None:
        await self._update_user(user_id, "spin_hash", spin_hash)

    async def set_reauth_minutes(self, user_id: str, minutes: int | None) -> None:
        await self._update_user(user_id, "reauth_minutes", minutes)

    async def add_email_code(
        self, code_hash: str, user_id: str, created_at: float, expires_at: float
    ) -> None:
        async with self._db.statement() as tx:
            await tx.execute(
                "INSERT INTO email_codes (code_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                code_hash, user_id, created_at, expires_at,
            )

    async def use_email_code(self, code_hash: str, now: float) -> str | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "UPDATE email_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL"
                " AND expires_at > ? RETURNING user_id",
                now, code_hash, now,
            )
        return None if row is None else str(row["user_id"])

    # -- sessions --------------------------------------------------------------------------------------------
    async def create_session(self, session: SessionRecord) -> None:
        async with self._db.statement() as tx:
            await tx.execute(
                "INSERT INTO sessions (token_hash, user_id, created_at, last_activity, revoked_at)"
                " VALUES (?, ?, ?, ?, ?)",
                session.token_hash, session.user_id, session.created_at, session.last_activity,
                session.revoked_at,
            )

    async def get_session(self, token_hash: str) -> SessionRecord | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT * FROM sessions WHERE token_hash = ?", token_hash)
        return None if row is None else _session(row)

    async def get_session_user(self, token_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "SELECT s.token_hash, s.user_id, s.created_at AS s_created_at, s.last_activity, s.revoked_at,"
                " u.id, u.email, u.password_hash, u.spin_hash, u.verified, u.reauth_minutes, u.created_at"
                " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
                token_hash,
            )
        if row is None:
            return None
        session = SessionRecord(
            token_hash=row["token_hash"], user_id=row["user_id"], created_at=row["s_created_at"],
            last_activity=row["last_activity"], revoked_at=row["revoked_at"],
        )
        return session, _user(row)

    async def touch_session(self, token_hash: str, at: float) -> None:
        async with self._db.statement() as tx:
            await tx.execute(
                "UPDATE sessions SET last_activity = ? WHERE token_hash = ? AND last_activity < ?",
                at, token_hash, at,
            )

    async def revoke_session(self, token_hash: str, at: float) -> bool:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL"
                " RETURNING user_id",
                at, token_hash,
            )
        return row is not None

    async def revoke_user_sessions(self, user_id: str, at: float, *, keep: str | None = None) -> int:
        async with self._db.statement() as tx:
            rows = await tx.fetchall(
                "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL"
                " AND token_hash <> ? RETURNING user_id",
                at, user_id, keep or "",
            )
        return len(rows)

    # -- vehicles --------------------------------------------------------------------------------------------
    async def upsert_vehicles(self, vehicles: Sequence[VehicleRecord]) -> None:
        async with self._db.transaction() as tx:
            for v in vehicles:
                await tx.execute(
                    "INSERT INTO vehicles (vin, model, equipment, registered_at, grp) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (vin) DO UPDATE SET model = excluded.model, equipment = excluded.equipment,"
                    " registered_at = excluded.registered_at, grp = excluded.grp",
                    v.vin, v.model, v.equipment, v.registered_at, v.group,
                )

    async def get_vehicle(self, vin: str) -> VehicleRecord | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT * FROM vehicles WHERE vin = ?", vin)
        if row is None:
            return None
        return VehicleRecord(
            vin=row["vin"], model=row["model"], equipment=row["equipment"],
            registered_at=row["registered_at"], group=row["grp"],
        )

    async def record_status(
        self, vin: str, status: dict[str, Any], privacy_mode: str, updated_at: float
    ) -> bool:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "INSERT INTO vehicle_state (vin, privacy_mode, status, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (vin) DO UPDATE SET privacy_mode = excluded.privacy_mode,"
                " status = excluded.status, updated_at = excluded.updated_at"
                " WHERE vehicle_state.updated_at IS NULL OR vehicle_state.updated_at <= excluded.updated_at"
                " RETURNING vin",
                vin, privacy_mode, _dumps(status), updated_at,
            )
        return row is not None

    async def record_privacy(self, vin: str, privacy_mode: str, at: float) -> bool:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "INSERT INTO vehicle_state (vin, privacy_mode, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (vin) DO UPDATE SET privacy_mode = excluded.privacy_mode,"
                " updated_at = excluded.updated_at"
                " WHERE vehicle_state.updated_at IS NULL OR vehicle_state.updated_at <= excluded.updated_at"
                " RETURNING vin",
                vin, privacy_mode, at,
            )
        return row is not None

    async def set_vehicle_online(self, vin: str, online: bool) -> None:
        async with self._db.statement() as tx:
            await tx.execute(
                "INSERT INTO vehicle_state (vin, online) VALUES (?, ?)"
                " ON CONFLICT (vin) DO UPDATE SET online = excluded.online",
                vin, int(online),
            )

    async def get_vehicle_state(self, vin: str) -> VehicleState | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT * FROM vehicle_state WHERE vin = ?", vin)
        if row is None:
            return None
        return VehicleState(
            vin=row["vin"], online=None if row["online"] is None else bool(row["online"]),
            privacy_mode=row["privacy_mode"],
            status=None if row["status"] is None else json.loads(row["status"]),
            updated_at=row["updated_at"],
        )

    async def get_car_context(self, vin: str, user_id: str) -> CarContext | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "SELECT v.vin, v.model, v.equipment, v.registered_at, v.grp,"
                " e.user_id AS e_user_id, e.role AS e_role, e.state AS e_state, e.method AS e_method,"
                " e.created_at AS e_created_at, e.activated_at AS e_activated_at,"
                " l.starts_at AS l_starts_at, l.ends_at AS l_ends_at,"
                " s.online AS s_online, s.privacy_mode AS s_privacy_mode"
                " FROM vehicles v"
                " LEFT JOIN enrolments e ON e.vin = v.vin AND e.user_id = ?"
                " LEFT JOIN licences l ON l.vin = v.vin"
                " LEFT JOIN vehicle_state s ON s.vin = v.vin"
                " WHERE v.vin = ?",
                user_id, vin,
            )
        if row is None:
            return None
        vehicle = VehicleRecord(
            vin=row["vin"], model=row["model"], equipment=row["equipment"],
            registered_at=row["registered_at"], group=row["grp"],
        )
        enrolment = None
        if row["e_user_id"] is not None:
            enrolment = EnrolmentRecord(
                vin=vin, user_id=row["e_user_id"], role=Role(row["e_role"]), state=EnrolmentState(row["e_state"]),
                method=row["e_method"], created_at=row["e_created_at"], activated_at=row["e_activated_at"],
            )
        licence = None
        if row["l_starts_at"] is not None:
            licence = LicenceRecord(vin=vin, starts_at=row["l_starts_at"], ends_at=row["l_ends_at"])
        return CarContext(
            vehicle=vehicle, enrolment=enrolment, licence=licence,
            online=None if row["s_online"] is None else bool(row["s_online"]), privacy_mode=row["s_privacy_mode"],
        )

    # -- enrolments ------------------------------------------------------------------------------------------
    async def get_enrolment(self, vin: str, user_id: str) -> EnrolmentRecord | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT * FROM enrolments WHERE vin = ? AND user_id = ?", vin, user_id)
        return None if row is None else _enrolment(row)

    async def list_user_enrolments(self, user_id: str) -> list[EnrolmentRecord]:
        async with self._db.statement() as tx:
            rows = await tx.fetchall(
                "SELECT * FROM enrolments WHERE user_id = ? ORDER BY created_at, vin", user_id
            )
        return [_enrolment(r) for r in rows]

    async def list_vehicle_enrolments(self, vin: str) -> list[EnrolmentRecord]:
        async with self._db.statement() as tx:
            rows = await tx.fetchall(
                "SELECT * FROM enrolments WHERE vin = ? ORDER BY created_at, user_id", vin
            )
        return [_enrolment(r) for r in rows]

    async def count_user_enrolments(self, user_id: str) -> int:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT COUNT(*) AS n FROM enrolments WHERE user_id = ?", user_id)
        return int(row["n"]) if row else 0

    async def put_enrolment(self, enrolment: EnrolmentRecord) -> None:
        async with self._db.statement() as tx:
            await self._put_enrolment(tx, enrolment)

    @staticmethod
    async def _put_enrolment(tx: Tx, e: EnrolmentRecord) -> None:
        await tx.execute(
            "INSERT INTO enrolments (vin, user_id, role, state, method, created_at, activated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vin, user_id) DO UPDATE SET role = excluded.role,"
            " state = excluded.state, method = excluded.method, created_at = excluded.created_at,"
            " activated_at = excluded.activated_at",
            e.vin, e.user_id, e.role.value, e.state.value, e.method, e.created_at, e.activated_at,
        )

    async def delete_enrolments(
        self, vin: str, at: float, user_ids: Collection[str] | None = None
    ) -> list[EnrolmentRecord]:
        async with self._db.transaction() as tx:
            return await self._delete_enrolments(tx, vin, at, user_ids)

    async def _delete_enrolments(
        self, tx: Tx, vin: str, at: float, user_ids: Collection[str] | None
    ) -> list[EnrolmentRecord]:
        where, args = "vin = ?", [vin]
        if user_ids is not None:
            if not user_ids:
                return []
            where += f" AND user_id IN ({_marks(len(user_ids))})"
            args += list(user_ids)
        rows = await tx.fetchall(f"SELECT * FROM enrolments WHERE {where}{self._lock_row}", *args)
        await tx.execute(f"DELETE FROM enrolments WHERE {where}", *args)
        await tx.execute(
            f"UPDATE pairing_codes SET voided_at = ? WHERE {where} AND voided_at IS NULL AND used_at IS NULL",
            at, *args,
        )
        return [_enrolment(r) for r in rows]

    async def make_primary(self, vin: str, user_id: str, method: str, at: float) -> list[EnrolmentRecord]:
        async with self._db.transaction() as tx:
            rows = [
                _enrolment(r)
                for r in await tx.fetchall(f"SELECT * FROM enrolments WHERE vin = ?{self._lock_row}", vin)
            ]
            others = [e.user_id for e in rows if e.user_id != user_id and e.state is EnrolmentState.ACTIVE]
            removed = await self._delete_enrolments(tx, vin, at, others)
            mine = next((e for e in rows if e.user_id == user_id), None)
            already = mine is not None and mine.role is Role.PRIMARY and mine.state is EnrolmentState.ACTIVE
            await self._put_enrolment(
                tx,
                EnrolmentRecord(
                    vin=vin, user_id=user_id, role=Role.PRIMARY, state=EnrolmentState.ACTIVE, method=method,
                    created_at=mine.created_at if mine else at,
                    activated_at=mine.activated_at if already and mine else at,
                ),
            )
            await tx.execute(
                "UPDATE pairing_codes SET used_at = ? WHERE vin = ? AND user_id = ? AND used_at IS NULL"
                " AND voided_at IS NULL",
                at, vin, user_id,
            )
        return removed

    # -- pairing codes ---------------------------------------------------------------------------------------
    async def add_pairing_code(self, code: PairingCodeRecord) -> PairingCodeRecord:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE pairing_codes SET voided_at = ? WHERE vin = ? AND user_id = ? AND voided_at IS NULL"
                " AND used_at IS NULL",
                code.created_at, code.vin, code.user_id,
            )
            row = await tx.fetchone(
                "INSERT INTO pairing_codes (vin, user_id, code_hash, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                code.vin, code.user_id, code.code_hash, code.created_at, code.expires_at,
            )
        assert row is not None  # INSERT ... RETURNING always returns the row
        return dataclasses.replace(code, id=int(row["id"]))

    async def find_pairing_code(self, vin: str, code_hash: str) -> PairingCodeRecord | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "SELECT * FROM pairing_codes WHERE vin = ? AND code_hash = ? ORDER BY id DESC LIMIT 1",
                vin, code_hash,
            )
        return None if row is None else _pairing(row)

    # -- S-PIN and rate limits -------------------------------------------------------------------------------
    async def get_spin_state(self, user_id: str) -> SpinState:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT * FROM spin_state WHERE user_id = ?", user_id)
        if row is None:
            return SpinState(user_id=user_id)
        return SpinState(
            user_id=user_id, failures=row["failures"], locked_until=row["locked_until"],
            lock_count=row["lock_count"],
        )

    async def update_spin_state(self, user_id: str, change: Callable[[SpinState], SpinState]) -> SpinState:
        async with self._db.transaction() as tx:
            # Insert first, so that there is a row to lock even for the user's very first wrong S-PIN.
            await tx.execute(
                "INSERT INTO spin_state (user_id, failures, locked_until, lock_count) VALUES (?, 0, NULL, 0)"
                " ON CONFLICT (user_id) DO NOTHING",
                user_id,
            )
            row = await tx.fetchone(f"SELECT * FROM spin_state WHERE user_id = ?{self._lock_row}", user_id)
            assert row is not None  # inserted just above
            new = change(
                SpinState(
                    user_id=user_id, failures=row["failures"], locked_until=row["locked_until"],
                    lock_count=row["lock_count"],
                )
            )
            await tx.execute(
                "UPDATE spin_state SET failures = ?, locked_until = ?, lock_count = ? WHERE user_id = ?",
                new.failures, new.locked_until, new.lock_count, user_id,
            )
        return new

    async def update_rate_bucket(
        self, key: str, change: Callable[[RateBucket | None], RateBucket]
    ) -> RateBucket:
        async with self._db.transaction() as tx:
            while True:
                row = await tx.fetchone(f"SELECT * FROM rate_buckets WHERE key = ?{self._lock_row}", key)
                if row is not None:
                    new = change(RateBucket(key=key, tokens=row["tokens"], updated_at=row["updated_at"]))
                    await tx.execute(
                        "UPDATE rate_buckets SET tokens = ?, updated_at = ? WHERE key = ?",
                        new.tokens, new.updated_at, key,
                    )
                    return new
                new = change(None)
                inserted = await tx.fetchone(
                    "INSERT INTO rate_buckets (key, tokens, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO NOTHING RETURNING key",
                    key, new.tokens, new.updated_at,
                )
                if inserted is not None:
                    return new
                # Another process created the bucket between our SELECT and INSERT: lock it and apply to it.

    # -- licences --------------------------------------------------------------------------------------------
    async def ensure_licence(self, licence: LicenceRecord) -> bool:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "INSERT INTO licences (vin, starts_at, ends_at) VALUES (?, ?, ?)"
                " ON CONFLICT (vin) DO NOTHING RETURNING vin",
                licence.vin, licence.starts_at, licence.ends_at,
            )
        return row is not None

    async def get_licence(self, vin: str) -> LicenceRecord | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT * FROM licences WHERE vin = ?", vin)
        return None if row is None else _licence(row)

    async def list_purchases(self, vin: str) -> list[PurchaseRecord]:
        async with self._db.statement() as tx:
            rows = await tx.fetchall("SELECT * FROM purchases WHERE vin = ? ORDER BY id", vin)
        return [_purchase(r) for r in rows]

    async def update_licence(
        self, vin: str, change: Callable[[LicenceRecord | None, list[PurchaseRecord]], LicenceChange]
    ) -> LicenceChange:
        async with self._db.transaction() as tx:
            row = await tx.fetchone(f"SELECT * FROM licences WHERE vin = ?{self._lock_row}", vin)
            purchases = [_purchase(r) for r in await tx.fetchall(
                "SELECT * FROM purchases WHERE vin = ? ORDER BY id", vin
            )]
            result = change(None if row is None else _licence(row), purchases)
            lic = result.licence
            await tx.execute(
                "INSERT INTO licences (vin, starts_at, ends_at) VALUES (?, ?, ?)"
                " ON CONFLICT (vin) DO UPDATE SET starts_at = excluded.starts_at, ends_at = excluded.ends_at",
                lic.vin, lic.starts_at, lic.ends_at,
            )
            if result.refund_purchase_id is not None:
                await tx.execute(
                    "UPDATE purchases SET refunded_at = ? WHERE id = ? AND vin = ?",
                    result.refunded_at, result.refund_purchase_id, vin,
                )
            if result.new_purchase is not None:
                p = result.new_purchase
                inserted = await tx.fetchone(
                    "INSERT INTO purchases (vin, user_id, years, activated_at, starts_at, ends_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    p.vin, p.user_id, p.years, p.activated_at, p.starts_at, p.ends_at,
                )
                assert inserted is not None  # INSERT ... RETURNING always returns the row
                stored = dataclasses.replace(p, id=int(inserted["id"]))
                result = dataclasses.replace(result, new_purchase=stored)
        return result

    async def licences_ending_between(self, after: float, until: float) -> list[LicenceRecord]:
        async with self._db.statement() as tx:
            rows = await tx.fetchall(
                "SELECT * FROM licences WHERE ends_at > ? AND ends_at <= ? ORDER BY ends_at, vin",
                after, until,
            )
        return [_licence(r) for r in rows]

    async def record_reminder(
        self, vin: str, ends_at: float, stage: str, at: float, mail: MailRecord | None
    ) -> bool:
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO reminders (vin, ends_at, stage, sent_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (vin, ends_at, stage) DO NOTHING RETURNING vin",
                vin, ends_at, stage, at,
            )
            if row is not None and mail is not None:
                await self._add_mail(tx, mail)
        return row is not None

    # -- commands --------------------------------------------------------------------------------------------
    async def create_command(self, command: CommandRecord) -> tuple[CommandRecord, bool]:
        c = command
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO commands (id, user_id, request_id, vin, op, params, state, created_at,"
                " expires_at, updated_at, reason, detail, client_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                # No conflict target: two processes inserting the same request at once may collide on the id
                # as well as on (user, request id), whichever index PostgreSQL checks first.
                " ON CONFLICT DO NOTHING RETURNING id",
                c.id, c.user_id, c.request_id, c.vin, c.op, _dumps(c.params), c.state.value, c.created_at,
                c.expires_at, c.updated_at, c.reason, c.detail, c.client_id,
            )
            if row is not None:
                await self._add_step(tx, c.id, CommandStep(c.state, c.created_at, c.reason, c.detail))
                return c, True
            existing = await tx.fetchone(
                "SELECT * FROM commands WHERE user_id = ? AND request_id = ?", c.user_id, c.request_id
            )
        # Cannot happen (commands are never deleted, ids are random), but say so rather than return a wrong record.
        if existing is None:  # pragma: no cover
            raise RegistryConflict("command request id conflict without a stored command")
        return _command(existing), False

    @staticmethod
    async def _add_step(tx: Tx, command_id: str, step: CommandStep) -> None:
        await tx.execute(
            "INSERT INTO command_history (command_id, state, at, reason, detail) VALUES (?, ?, ?, ?, ?)",
            command_id, step.state.value, step.at, step.reason, step.detail,
        )

    async def get_command(self, command_id: str) -> CommandRecord | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT * FROM commands WHERE id = ?", command_id)
        return None if row is None else _command(row)

    async def find_command(self, user_id: str, request_id: str) -> CommandRecord | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "SELECT * FROM commands WHERE user_id = ? AND request_id = ?", user_id, request_id
            )
        return None if row is None else _command(row)

    async def transition_command(
        self,
        command_id: str,
        state: CommandState,
        at: float,
        *,
        allowed_from: Collection[CommandState],
        reason: str | None = None,
        detail: str | None = None,
    ) -> CommandRecord | None:
        if not allowed_from:
            return None
        states = [s.value for s in allowed_from]
        async with self._db.transaction() as tx:
            # One compare-and-set UPDATE: two processes applying results for one command cannot both win.
            row = await tx.fetchone(
                "UPDATE commands SET state = ?, updated_at = ?, reason = COALESCE(?, reason),"
                " detail = COALESCE(?, detail)"
                f" WHERE id = ? AND state IN ({_marks(len(states))}) RETURNING *",
                state.value, at, reason, detail, command_id, *states,
            )
            if row is None:
                return None
            await self._add_step(tx, command_id, CommandStep(state, at, reason, detail))
        return _command(row)

    async def expire_commands(self, now: float) -> list[CommandRecord]:
        async with self._db.transaction() as tx:
            rows = await tx.fetchall(
                "UPDATE commands SET state = ?, updated_at = ?"
                f" WHERE state IN ({_marks(len(_OPEN_STATES))}) AND expires_at <= ? RETURNING *",
                CommandState.TIMED_OUT.value, now, *_OPEN_STATES, now,
            )
            expired = [_command(r) for r in rows]
            for c in expired:
                await self._add_step(tx, c.id, CommandStep(CommandState.TIMED_OUT, now))
        return sorted(expired, key=lambda c: (c.created_at, c.id))

    async def command_history(self, command_id: str) -> list[CommandStep]:
        async with self._db.statement() as tx:
            rows = await tx.fetchall(
                "SELECT * FROM command_history WHERE command_id = ? ORDER BY id", command_id
            )
        return [CommandStep(CommandState(r["state"]), r["at"], r["reason"], r["detail"]) for r in rows]

    # -- audit, mail, counters -------------------------------------------------------------------------------
    async def add_audit(self, entry: AuditRecord) -> None:
        async with self._db.statement() as tx:
            await tx.execute(
                "INSERT INTO audit (at, action, outcome, user_id, vin, detail) VALUES (?, ?, ?, ?, ?, ?)",
                entry.at, entry.action, entry.outcome, entry.user_id, entry.vin, _dumps(entry.detail),
            )

    async def list_audit(
        self, *, limit: int = 100, user_id: str | None = None, vin: str | None = None
    ) -> list[AuditRecord]:
        where, args = "1 = 1", list[Any]()
        if user_id is not None:
            where, args = where + " AND user_id = ?", [*args, user_id]
        if vin is not None:
            where, args = where + " AND vin = ?", [*args, vin]
        async with self._db.statement() as tx:
            rows = await tx.fetchall(
                f"SELECT * FROM (SELECT * FROM audit WHERE {where} ORDER BY id DESC LIMIT ?) AS newest"
                " ORDER BY id",
                *args, int(limit),
            )
        return [
            AuditRecord(
                id=r["id"], at=r["at"], action=r["action"], outcome=r["outcome"], user_id=r["user_id"],
                vin=r["vin"], detail=json.loads(r["detail"]),
            )
            for r in rows
        ]

    async def add_mail(self, mail: MailRecord) -> MailRecord:
        async with self._db.statement() as tx:
            return await self._add_mail(tx, mail)

    @staticmethod
    async def _add_mail(tx: Tx, mail: MailRecord) -> MailRecord:
        row = await tx.fetchone(
            "INSERT INTO mails (at, to_key, to_email, subject, body, user_id) VALUES (?, ?, ?, ?, ?, ?)"
            " RETURNING id",
            mail.at, email_key(mail.to), mail.to, mail.subject, mail.body, mail.user_id,
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        return dataclasses.replace(mail, id=int(row["id"]))

    async def list_mail(self, email: str) -> list[MailRecord]:
        async with self._db.statement() as tx:
            rows = await tx.fetchall("SELECT * FROM mails WHERE to_key = ? ORDER BY id", email_key(email))
        return [_mail(r) for r in rows]

    async def next_counter(self, name: str) -> int:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "INSERT INTO counters (name, value) VALUES (?, 1)"
                " ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
                name,
            )
        assert row is not None  # an upsert with RETURNING always returns the row
        return int(row["value"])

    # -- anti-replay windows and car statuses -----------------------------------------------------------------
    def _any(self, column: str) -> str:
        """`column` is one of a list bound as ONE parameter (see `_list`): the statement text stays the same
        whatever the list's length, so the drivers' statement caches keep it."""
        if self.dialect == "postgresql":
            return f"{column} = ANY(?)"
        return f"{column} IN (SELECT value FROM json_each(?))"

    def _list(self, values: Sequence[str]) -> Any:
        return list(values) if self.dialect == "postgresql" else json.dumps(list(values))

    async def _lock_marks(self, tx: Tx, streams: Sequence[str]) -> dict[str, SeqMark]:
        """The marks of `streams`, locked until the transaction ends. SQLite: the transaction holds the database's
        write lock already. PostgreSQL: missing rows are created first (a row that does not exist cannot be
        locked, and two processes must not both decide about a new stream), then every row is locked in one
        order, so that two transactions over overlapping streams never deadlock."""
        ordered = sorted(set(streams))
        if self.dialect == "postgresql":
            await tx.execute(
                "INSERT INTO seq_marks (stream, seq, seen) SELECT s, 0, 0 FROM unnest(?::text[]) AS s ORDER BY s"
                " ON CONFLICT (stream) DO NOTHING",
                ordered,
            )
        rows = await tx.fetchall(
            f"SELECT stream, seq, seen FROM seq_marks WHERE {self._any('stream')} ORDER BY stream{self._lock_row}",
            self._list(ordered),
        )
        return {r["stream"]: SeqMark.from_stored(r["seq"], r["seen"]) for r in rows}

    @staticmethod
    async def _store_marks(tx: Tx, marks: dict[str, SeqMark]) -> None:
        await tx.executemany(
            "INSERT INTO seq_marks (stream, seq, seen) VALUES (?, ?, ?)"
            " ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, seen = excluded.seen",
            [(stream, mark.high, mark.to_stored()) for stream, mark in sorted(marks.items())],
        )

    async def claim_seq(self, stream: str, seq: int) -> bool:
        async with self._db.transaction() as tx:
            marks = await self._lock_marks(tx, [stream])
            after = marks.get(stream, SeqMark()).accept(seq)
            if after is None:
                return False
            await self._store_marks(tx, {stream: after})
        return True

    async def release_seq(self, stream: str, seq: int) -> None:
        async with self._db.transaction() as tx:
            marks = await self._lock_marks(tx, [stream])
            mark = marks.get(stream)
            if mark is not None and (after := mark.release(seq)) != mark:
                await self._store_marks(tx, {stream: after})

    async def seq_mark(self, stream: str) -> SeqMark | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone("SELECT seq, seen FROM seq_marks WHERE stream = ?", stream)
        mark = None if row is None else SeqMark.from_stored(row["seq"], row["seen"])
        # PostgreSQL creates empty rows to lock them (`_lock_marks`): one is as good as none.
        return None if mark is None or mark == SeqMark() else mark

    async def apply_statuses(self, statuses: Sequence[StatusWrite]) -> list[bool]:
        if not statuses:
            return []
        accepted: list[bool] = []
        async with self._db.transaction() as tx:
            marks = await self._lock_marks(tx, [s.stream for s in statuses])
            changed: dict[str, SeqMark] = {}
            newest: dict[str, StatusWrite] = {}
            for item in statuses:
                after = marks.get(item.stream, SeqMark()).accept(item.seq)
                accepted.append(after is not None)
                if after is None:
                    continue
                marks[item.stream] = changed[item.stream] = after
                best = newest.get(item.vin)
                # Only the newest status of each car is kept, so only that one is written.
                if best is None or (item.updated_at, item.seq) >= (best.updated_at, best.seq):
                    newest[item.vin] = item
            await self._store_marks(tx, changed)
            # INSERT ... SELECT FROM vehicles: a car the registry does not know (no factory data) is not stored,
            # instead of failing the whole batch on the foreign key.
            await tx.executemany(
                "INSERT INTO vehicle_state (vin, privacy_mode, status, updated_at)"
                " SELECT vin, ?, ?, ? FROM vehicles WHERE vin = ?"
                " ON CONFLICT (vin) DO UPDATE SET privacy_mode = excluded.privacy_mode,"
                " status = excluded.status, updated_at = excluded.updated_at"
                " WHERE vehicle_state.updated_at IS NULL OR vehicle_state.updated_at <= excluded.updated_at",
                [(w.privacy_mode, w.status_json, w.updated_at, vin) for vin, w in sorted(newest.items())],
            )
        return accepted

    # -- car services: trips, alerts, bookings, roadside cases -----------------------------------------------
    async def add_trip(self, trip: TripRecord) -> TripRecord:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "INSERT INTO trips (vin, started_at, ended_at, trip, received_at) VALUES (?, ?, ?, ?, ?)"
                " RETURNING id",
                trip.vin, trip.started_at, trip.ended_at, _dumps(trip.trip), trip.received_at,
            )
        assert row is not None  # INSERT ... RETURNING always returns the row
        return dataclasses.replace(trip, id=int(row["id"]))

    async def list_trips(self, vin: str, *, since: float | None = None, limit: int = 50) -> list[TripRecord]:
        async with self._db.statement() as tx:
            rows = await tx.fetchall(
                "SELECT * FROM trips WHERE vin = ? AND started_at >= ? ORDER BY started_at DESC, id DESC LIMIT ?",
                vin, -1.0 if since is None else since, int(limit),
            )
        return [
            TripRecord(
                id=r["id"], vin=r["vin"], started_at=r["started_at"], ended_at=r["ended_at"],
                trip=json.loads(r["trip"]), received_at=r["received_at"],
            )
            for r in rows
        ]

    async def put_alert(self, alert: AlertRecord) -> None:
        a = alert
        async with self._db.statement() as tx:
            await tx.execute(
                "INSERT INTO alerts (vin, user_id, kind, settings, state, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (vin, user_id, kind) DO UPDATE SET settings = excluded.settings,"
                " state = excluded.state, updated_at = excluded.updated_at",
                a.vin, a.user_id, a.kind, _dumps(a.settings), _dumps(a.state), a.updated_at,
            )

    async def list_alerts(self, vin: str, user_id: str | None = None) -> list[AlertRecord]:
        async with self._db.statement() as tx:
            if user_id is None:
                rows = await tx.fetchall("SELECT * FROM alerts WHERE vin = ? ORDER BY user_id, kind", vin)
            else:
                rows = await tx.fetchall(
                    "SELECT * FROM alerts WHERE vin = ? AND user_id = ? ORDER BY kind", vin, user_id
                )
        return [
            AlertRecord(
                vin=r["vin"], user_id=r["user_id"], kind=r["kind"], settings=json.loads(r["settings"]),
                state=json.loads(r["state"]), updated_at=r["updated_at"],
            )
            for r in rows
        ]

    async def delete_alert(self, vin: str, user_id: str, kind: str) -> bool:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "DELETE FROM alerts WHERE vin = ? AND user_id = ? AND kind = ? RETURNING kind", vin, user_id, kind
            )
        return row is not None

    async def set_alert_state(self, vin: str, user_id: str, kind: str, state: dict[str, Any], at: float) -> None:
        async with self._db.statement() as tx:
            await tx.execute(
                "UPDATE alerts SET state = ?, updated_at = ? WHERE vin = ? AND user_id = ? AND kind = ?",
                _dumps(state), at, vin, user_id, kind,
            )

    async def add_booking(self, booking: BookingRecord) -> None:
        b = booking
        async with self._db.statement() as tx:
            await tx.execute(
                "INSERT INTO bookings (id, vin, user_id, date, workshop, reason, state, created_at, cancelled_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                b.id, b.vin, b.user_id, b.date, b.workshop, b.reason, b.state, b.created_at, b.cancelled_at,
            )

    async def list_bookings(self, vin: str) -> list[BookingRecord]:
        async with self._db.statement() as tx:
            rows = await tx.fetchall("SELECT * FROM bookings WHERE vin = ? ORDER BY created_at, id", vin)
        return [_booking(r) for r in rows]

    async def cancel_booking(self, vin: str, booking_id: str, at: float) -> BookingRecord | None:
        async with self._db.statement() as tx:
            row = await tx.fetchone(
                "UPDATE bookings SET state = 'cancelled', cancelled_at = ?"
                " WHERE id = ? AND vin = ? AND state = 'booked' RETURNING *",
                at, booking_id, vin,
            )
        return None if row is None else _booking(row)

    async def add_roadside_case(self, case: RoadsideCaseRecord) -> None:
        c = case
        async with self._db.statement() as tx:
            await tx.execute(
                "INSERT INTO roadside_cases (id, vin, opened_at, state, position, detail) VALUES (?, ?, ?, ?, ?, ?)",
                c.id, c.vin, c.opened_at, c.state, None if c.position is None else _dumps(c.position), c.detail,
            )

    async def list_roadside_cases(self, vin: str, *, limit: int = 20) -> list[RoadsideCaseRecord]:
        async with self._db.statement() as tx:
            rows = await tx.fetchall(
                "SELECT * FROM roadside_cases WHERE vin = ? ORDER BY opened_at DESC, id LIMIT ?", vin, int(limit)
            )
        return [
            RoadsideCaseRecord(
                id=r["id"], vin=r["vin"], opened_at=r["opened_at"], state=r["state"],
                position=None if r["position"] is None else json.loads(r["position"]), detail=r["detail"],
            )
            for r in rows
        ]

    # -- the app clients of users ----------------------------------------------------------------------------
    async def bind_client(self, user_id: str, client_id: str, at: float, *, keep: int = 8) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO user_clients (user_id, client_id, seen_at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, client_id) DO UPDATE SET seen_at = excluded.seen_at"
                " WHERE user_clients.seen_at < excluded.seen_at",
                user_id, client_id, at,
            )
            await tx.execute(
                "DELETE FROM user_clients WHERE user_id = ? AND client_id NOT IN"
                " (SELECT client_id FROM user_clients WHERE user_id = ? ORDER BY seen_at DESC, client_id LIMIT ?)",
                user_id, user_id, int(keep),
            )

    async def list_clients(self, user_id: str, *, limit: int = 8) -> list[str]:
        async with self._db.statement() as tx:
            rows = await tx.fetchall(
                "SELECT client_id FROM user_clients WHERE user_id = ? ORDER BY seen_at DESC, client_id LIMIT ?",
                user_id, int(limit),
            )
        return [str(r["client_id"]) for r in rows]
