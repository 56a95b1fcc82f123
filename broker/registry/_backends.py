"""The two database backends behind the registry: SQLite (the standard library's sqlite3) and PostgreSQL (asyncpg).

A backend only runs SQL inside transactions; the registry's queries are written once with `?` placeholders
and the PostgreSQL backend rewrites them to `$1, $2, ...`. Library errors become `RegistryConflict` (a
uniqueness rule refused a write) or `RegistryUnavailable` (cannot connect) here, at the boundary.

SQLite: one connection per registry, WAL journal and a busy timeout so that several processes can share a
file; every step starts with `BEGIN IMMEDIATE`, which takes the database's write lock up front, so a
read-modify-write step is atomic across processes too. Statements run on the event loop's thread; only what
has to wait for another process's lock, and checkpoints, go to a worker thread (see `SqliteBackend`). Tasks of
one process take turns on the connection through an asyncio lock.

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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg

from ._interface import RegistryConflict, RegistryUnavailable

__all__ = ["Backend", "PostgresBackend", "SqliteBackend", "Tx", "background_steps"]

Row = dict[str, Any]
T = TypeVar("T")

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
    """Statements on the backend's connection. Inside a transaction (the write lock is held, nothing waits) they
    run on the calling thread, and so does a query outside one (WAL readers never wait for writers). A single
    writing statement outside a transaction (`autocommit`) may find another process holding the write lock: it
    is tried on the calling thread without waiting and, when the lock is taken (or in `background_steps`), run
    in the backend's worker thread, its rows fetched there in the same hop."""

    def __init__(self, backend: SqliteBackend, *, autocommit: bool) -> None:
        self._db = backend
        self._autocommit = autocommit

    async def _step(self, run: Callable[[], list[Any]], *, write: bool) -> list[Any]:
        if self._autocommit and write:
            return await self._db.without_waiting(run)
        try:
            return run()
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    def _query(self, sql: str, args: Sequence[Any]) -> Callable[[], list[Any]]:
        # Always read to the end: a statement left with rows unread stays "in progress" and blocks COMMIT.
        return lambda: self._db.conn.execute(sql, args).fetchall()

    async def execute(self, sql: str, *args: Any) -> None:
        await self._step(self._query(sql, args), write=not _is_read(sql))

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetchall(sql, *args)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        return [dict(row) for row in await self._step(self._query(sql, args), write=not _is_read(sql))]

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        conn = self._db.conn

        def run() -> list[Any]:
            conn.executemany(sql, rows)
            return []

        if self._autocommit:
            # One statement per row outside a transaction: a busy lock could stop it half-way, so no quick try
            # that might be run again; the worker thread waits for the lock.
            await self._db.in_worker(run)
            return
        await self._step(run, write=True)


def _is_read(sql: str) -> bool:
    """A plain query: in WAL mode it never waits for a writer."""
    return sql.lstrip()[:6].upper() == "SELECT"


def _is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and any(word in str(exc) for word in _SQLITE_BUSY)


#: Set while a background job runs (`background_steps`): its registry steps each go through the worker thread.
_BACKGROUND: ContextVar[bool] = ContextVar("registry_background_steps", default=False)


@contextlib.contextmanager
def background_steps() -> Iterator[None]:
    """Registry steps taken inside (by this task and the tasks it starts) are background work: on SQLite each
    one takes a hop through the worker thread, so a long job (expiry, reminders) gives the event loop back
    between its steps instead of holding it, and runs behind the requests and car messages."""
    token = _BACKGROUND.set(True)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


class SqliteBackend(Backend):
    """A SQLite file (or `:memory:`), its statements run on the event loop's thread; a worker thread for waits.

    Every statement used to go to a worker thread and back (aiosqlite: three hops for a query — execute, fetch,
    close — plus BEGIN and COMMIT), and a hop costs more CPU than a registry statement (issue 11: ~30 µs against
    ~5 µs; 20-odd statements per app command). Now statements run on the loop's thread. What could wait for
    another process's write lock — a transaction's `BEGIN IMMEDIATE`, or a single writing statement — is first
    tried with a busy timeout of 0; only when the lock is taken does it run again in the worker thread with the
    real busy timeout, while the loop goes on. Once a transaction holds the lock, its statements and its COMMIT
    cannot wait. Queries never wait for writers in WAL mode. The event loop never waits for a lock itself.
    Background jobs (`background_steps`) take the worker-thread hop on every step.

    Checkpoints are the other wait (they fsync): SQLite's automatic checkpoint would run inside a COMMIT on the
    loop's thread, so it is off, and the backend checkpoints (and truncates) the WAL in the worker thread once it
    has grown past `checkpoint_bytes` (SQLite's default of 1,000 pages).
    """

    dialect = "sqlite"

    def __init__(
        self, conn: sqlite3.Connection, path: str, worker: ThreadPoolExecutor, *, busy_timeout_ms: int,
        checkpoint_bytes: int,
    ) -> None:
        self.conn = conn
        self._path = path
        self._worker = worker
        self._lock = asyncio.Lock()
        self._busy_ms = int(busy_timeout_ms)
        self._wal = None if path == ":memory:" else Path(f"{path}-wal")
        self._checkpoint_bytes = checkpoint_bytes
        self._next_checkpoint = checkpoint_bytes
        self._changes_seen = 0

    @classmethod
    async def open(
        cls, path: str, *, busy_timeout_ms: int = 10_000, checkpoint_bytes: int = 1000 * 4096
    ) -> SqliteBackend:
        """Open (creating) the database file with WAL and a busy timeout."""
        worker = ThreadPoolExecutor(1, thread_name_prefix="sqlite")

        def connect() -> sqlite3.Connection:
            # isolation_level=None: no implicit transactions; this class issues BEGIN/COMMIT itself.
            # check_same_thread=False: the worker thread and the loop's thread take turns (never at once).
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                if path != ":memory:":
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("PRAGMA synchronous = NORMAL")
                    conn.execute("PRAGMA wal_autocheckpoint = 0")
                conn.execute("PRAGMA foreign_keys = ON")
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = await asyncio.get_running_loop().run_in_executor(worker, connect)
        except sqlite3.Error as exc:
            worker.shutdown(wait=False)
            raise RegistryUnavailable(f"cannot open SQLite database {path!r}: {exc}") from exc
        except BaseException:
            worker.shutdown(wait=False)
            raise
        return cls(conn, path, worker, busy_timeout_ms=busy_timeout_ms, checkpoint_bytes=checkpoint_bytes)

    async def in_worker(self, work: Callable[[], T]) -> T:
        """Run `work` on the connection in the worker thread (where it may wait for another process's lock, up
        to the busy timeout). A cancelled caller still waits for the thread to finish, so that the connection is
        never used by two threads at once."""
        future = asyncio.get_running_loop().run_in_executor(self._worker, work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    async def without_waiting(self, work: Callable[[], T]) -> T:
        """Run `work`, which may need the write lock, on this thread if the lock is free, else (or in
        `background_steps`) in the worker thread. SQLite gives up at once on a busy lock with timeout 0, before
        it changed anything, so the second try starts clean."""
        if not _BACKGROUND.get():
            conn = self.conn
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                return work()
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    raise _sqlite_error(exc) from exc
            finally:
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        return await self.in_worker(work)

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            try:
                await self.without_waiting(functools.partial(self.conn.execute, "BEGIN IMMEDIATE"))
            except asyncio.CancelledError:
                self._rollback()  # the worker may have begun the transaction after all
                raise
            try:
                yield _SqliteTx(self, autocommit=False)
            except BaseException:
                self._rollback()
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                # A failed COMMIT leaves the transaction open: end it, so the next step starts clean.
                self._rollback()
                raise _sqlite_error(exc) from exc
            await self._checkpoint_if_due()

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[Tx]:
        async with self._lock:
            yield _SqliteTx(self, autocommit=True)
            await self._checkpoint_if_due()

    async def _checkpoint_if_due(self) -> None:
        """Checkpoint the WAL in the worker thread once it has grown past `checkpoint_bytes` (looked at after a
        step that changed something). TRUNCATE empties the file, so its size says how much is waiting; when the
        checkpoint cannot finish (another process reading), the next try waits for more growth."""
        changes = self.conn.total_changes
        if self._wal is None or changes == self._changes_seen:
            return
        self._changes_seen = changes
        try:
            size = self._wal.stat().st_size
        except OSError:
            return
        if size < self._next_checkpoint:
            return
        self._next_checkpoint = size + self._checkpoint_bytes
        try:
            busy, _, _ = await self.in_worker(
                lambda: self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            )
        except RegistryUnavailable:
            return
        if not busy:
            self._next_checkpoint = self._checkpoint_bytes

    async def close(self) -> None:
        async with self._lock:
            try:
                await self.in_worker(self.conn.close)
            finally:
                self._worker.shutdown(wait=False)

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
