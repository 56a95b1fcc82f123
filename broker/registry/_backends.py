"""The two database backends behind the registry: SQLite (aiosqlite) and PostgreSQL (asyncpg).

A backend only runs SQL inside transactions; the registry's queries are written once with `?` placeholders
and the PostgreSQL backend rewrites them to `$1, $2, ...`. Library errors become `RegistryConflict` (a
uniqueness rule refused a write) or `RegistryUnavailable` (cannot connect) here, at the boundary.

SQLite: one connection per registry, WAL journal and a busy timeout so that several processes can share a
file; every step starts with `BEGIN IMMEDIATE`, which takes the database's write lock up front, so a
read-modify-write step is atomic across processes too. Tasks of one process take turns on the connection
through an asyncio lock.

PostgreSQL: a connection pool; each step is one transaction, and read-modify-write steps lock their row
(`SELECT ... FOR UPDATE`).

Failures a retry may cure — the database busy or locked past the timeout, a lost connection, a deadlock or a
serialisation failure between concurrent processes — become `RegistryUnavailable`, so that a caller can tell
them from bugs (which propagate unchanged) and try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiosqlite
import asyncpg

from ._interface import RegistryConflict, RegistryUnavailable

__all__ = ["Backend", "PostgresBackend", "SqliteBackend", "Tx"]

Row = dict[str, Any]

# SQLite's words for "another connection holds the lock" (after the busy timeout): worth another try.
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
# asyncpg's errors a retry may cure: the connection went away, or concurrent transactions collided.
_PG_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    OSError,
    TimeoutError,
)


def _sqlite_error(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError):
        return RegistryConflict(str(exc))
    if isinstance(exc, sqlite3.OperationalError) and any(word in str(exc) for word in _SQLITE_BUSY):
        return RegistryUnavailable(f"SQLite: {exc}")
    return exc


class Tx(Protocol):
    """SQL access inside one transaction."""

    async def execute(self, sql: str, *args: Any) -> None:
        """Run a statement."""
        ...

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        """Run a query; its first row or None."""
        ...

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        """Run a query; all its rows."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per parameter row (in one round trip where the driver can)."""
        ...


class Backend(ABC):
    """A database the registry runs its SQL on."""

    dialect: str
    #: Appended to a SELECT that must lock its row until the transaction ends (empty where the whole database
    #: is locked by the transaction anyway).
    for_update: str = ""

    @abstractmethod
    def transaction(self) -> Any:
        """`async with backend.transaction() as tx:` — commit on exit, roll back on an exception."""

    @abstractmethod
    def statement(self) -> Any:
        """`async with backend.statement() as tx:` — for ONE statement, which is atomic by itself (autocommit)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""


class _SqliteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            await self._conn.execute(sql, args)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetchall(sql, *args)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        try:
            async with self._conn.execute(sql, args) as cursor:
                rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc
        return [dict(row) for row in rows]

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        try:
            await self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc


class SqliteBackend(Backend):
    """A SQLite file (or `:memory:`) through aiosqlite."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self._path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str, *, busy_timeout_ms: int = 10_000) -> SqliteBackend:
        """Open (creating) the database file with WAL and a busy timeout."""
        # isolation_level=None: no implicit transactions; this class issues BEGIN/COMMIT itself.
        conn = aiosqlite.connect(path, isolation_level=None)
        try:
            await conn
        except sqlite3.Error as exc:
            # aiosqlite stops its worker thread after a failed connect without waiting for it; wait here, so
            # that the thread does not report to an event loop that may be gone by then.
            await asyncio.to_thread(conn._thread.join, 5.0)
            raise RegistryUnavailable(f"cannot open SQLite database {path!r}: {exc}") from exc
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if path != ":memory:":
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        return cls(conn, path)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _sqlite_error(exc) from exc
            try:
                yield _SqliteTx(self._conn)
            except BaseException:
                # Shielded: a cancelled caller must not leave the shared connection inside a transaction.
                await asyncio.shield(self._conn.execute("ROLLBACK"))
                raise
            else:
                try:
                    await asyncio.shield(self._conn.execute("COMMIT"))
                except sqlite3.Error as exc:
                    # A failed COMMIT leaves the transaction open: end it, so the next step starts clean.
                    with contextlib.suppress(sqlite3.Error):
                        await asyncio.shield(self._conn.execute("ROLLBACK"))
                    raise _sqlite_error(exc) from exc

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[Tx]:
        async with self._lock:
            yield _SqliteTx(self._conn)

    async def close(self) -> None:
        await self._conn.close()

    def __repr__(self) -> str:
        return f"SqliteBackend({self._path!r})"


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """`?` placeholders → `$1, $2, ...` (the registry's SQL has no `?` inside string literals)."""
    parts = sql.split("?")
    out = [parts[0]]
    for n, part in enumerate(parts[1:], start=1):
        out.append(f"${n}{part}")
    return "".join(out)


class _PgTx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            await self._conn.execute(_pg_sql(sql), *args)
        except asyncpg.UniqueViolationError as exc:
            raise RegistryConflict(str(exc)) from exc

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        try:
            row = await self._conn.fetchrow(_pg_sql(sql), *args)
        except asyncpg.UniqueViolationError as exc:
            raise RegistryConflict(str(exc)) from exc
        return None if row is None else dict(row)

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        try:
            rows = await self._conn.fetch(_pg_sql(sql), *args)
        except asyncpg.UniqueViolationError as exc:
            raise RegistryConflict(str(exc)) from exc
        return [dict(row) for row in rows]

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        try:
            await self._conn.executemany(_pg_sql(sql), rows)
        except asyncpg.UniqueViolationError as exc:
            raise RegistryConflict(str(exc)) from exc


class PostgresBackend(Backend):
    """A PostgreSQL database through an asyncpg pool."""

    dialect = "postgresql"
    for_update = " FOR UPDATE"

    def __init__(self, pool: asyncpg.Pool, dsn_for_repr: str) -> None:
        self._pool = pool
        self._dsn = dsn_for_repr

    @classmethod
    async def open(cls, dsn: str, *, pool_size: int = 10, timeout_s: float = 10.0) -> PostgresBackend:
        """Connect a pool to `dsn`."""
        shown = _redact_dsn(dsn)
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=pool_size, timeout=timeout_s, reset=_no_session_state
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise RegistryUnavailable(f"cannot connect to PostgreSQL at {shown}: {exc}") from exc
        return cls(pool, shown)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield _PgTx(conn)
        except _PG_TRANSIENT as exc:
            raise RegistryUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[Tx]:
        try:
            async with self._pool.acquire() as conn:
                yield _PgTx(conn)
        except _PG_TRANSIENT as exc:
            raise RegistryUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresBackend({self._dsn!r})"


async def _no_session_state(_: asyncpg.Connection) -> None:
    """Pool reset hook. The registry never leaves session state behind (no SET, LISTEN, session advisory lock,
    open cursor), so the default reset query would only add a round trip to every registry step; an open
    transaction is still rolled back by asyncpg itself before this hook runs."""


def _redact_dsn(dsn: str) -> str:
    """The DSN without a password, for messages and reprs."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else dsn
