"""The SQLite backend runs statements on the event loop's thread and only waits in its worker thread (issue 11):
a step with the lock free never leaves the loop's thread, one in `background_steps` always goes through the worker;
the loop goes on while another connection — as another cloud process would — holds the write lock; a wait past the
busy timeout is `RegistryUnavailable` and changes nothing; a cancelled wait leaves no transaction open; the WAL is
checkpointed without SQLite's automatic checkpoint."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from broker.registry import RegistryUnavailable, SqlRegistry, background_steps
from broker.registry._backends import SqliteBackend


@asynccontextmanager
async def _registry(path: Path, **options: int) -> AsyncIterator[SqlRegistry]:
    registry = SqlRegistry(await SqliteBackend.open(str(path), **options))
    try:
        await registry.migrate()
        yield registry
    finally:
        await registry.close()


@contextmanager
def _other_process_writing(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock (as another cloud process in a step would)."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


async def test_steps_run_on_the_loops_thread_unless_they_are_background_work(tmp_path: Path) -> None:
    async with _registry(tmp_path / "r.db") as registry:
        backend = registry._db
        assert isinstance(backend, SqliteBackend)
        ran: list[tuple[str, str]] = []
        backend.conn.set_trace_callback(lambda sql: ran.append((threading.current_thread().name, sql.split()[0])))
        assert await registry.next_counter("c") == 1  # a writing statement
        assert await registry.claim_seq("car:X", 1)  # a transaction
        assert await registry.seq_mark("car:X") is not None  # a query
        assert {thread for thread, _ in ran} == {threading.current_thread().name}
        ran.clear()
        with background_steps():
            assert await registry.next_counter("c") == 2
            assert await registry.claim_seq("car:X", 2)
        in_worker = [sql for thread, sql in ran if thread.startswith("sqlite")]
        assert "INSERT" in in_worker  # the counter's upsert
        assert "BEGIN" in in_worker  # the claim's transaction
        ran.clear()
        # Several rows outside a transaction are several statements: never tried inline (a busy lock half-way
        # through would have the retry write the first rows twice).
        async with backend.statement() as tx:
            await tx.executemany("INSERT INTO counters (name, value) VALUES (?, ?)", [("a", 1), ("b", 2)])
        assert [thread.startswith("sqlite") for thread, sql in ran if sql == "INSERT"] == [True, True]


async def test_a_step_waits_for_another_process_without_stopping_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with _registry(db) as registry:
        assert await registry.next_counter("c") == 1
        with _other_process_writing(db) as other:
            single = asyncio.create_task(registry.next_counter("c"))  # a statement of its own
            claim = asyncio.create_task(registry.claim_seq("car:X", 1))  # a transaction
            ticks = 0
            for _ in range(50):  # the loop keeps running other tasks while both wait for the lock
                await asyncio.sleep(0)
                ticks += 1
            assert ticks == 50
            assert not single.done()
            assert not claim.done()
            other.execute("COMMIT")
            async with asyncio.timeout(30):
                assert await single == 2
                assert await claim is True
        assert await registry.seq_mark("car:X") is not None


async def test_a_wait_past_the_busy_timeout_is_unavailable_and_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with _registry(db, busy_timeout_ms=50) as registry:
        assert await registry.next_counter("c") == 1
        with _other_process_writing(db):
            with pytest.raises(RegistryUnavailable, match="locked"):
                await registry.next_counter("c")
            with pytest.raises(RegistryUnavailable, match="locked"):
                await registry.claim_seq("car:X", 1)
        assert await registry.next_counter("c") == 2
        assert await registry.seq_mark("car:X") is None


async def test_a_cancelled_wait_leaves_no_transaction_open(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with _registry(db) as registry:
        backend = registry._db
        assert isinstance(backend, SqliteBackend)
        with _other_process_writing(db) as other:
            claim = asyncio.create_task(registry.claim_seq("car:X", 1))
            for _ in range(5):
                await asyncio.sleep(0)
            claim.cancel()
            other.execute("COMMIT")  # the worker thread's BEGIN now succeeds, after its caller gave up
            with pytest.raises(asyncio.CancelledError):
                await claim
        assert not backend.conn.in_transaction
        assert await registry.seq_mark("car:X") is None
        assert await registry.claim_seq("car:X", 1) is True


async def test_the_wal_is_checkpointed_by_the_backend(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with _registry(db, checkpoint_bytes=1024 * 1024) as registry:
        backend = registry._db
        assert isinstance(backend, SqliteBackend)
        async with backend.statement() as tx:
            auto = await tx.fetchone("PRAGMA wal_autocheckpoint")
        assert auto is not None
        assert next(iter(auto.values())) == 0  # never inside a COMMIT on the loop's thread
        for n in range(1500):  # > 5 MB of WAL without checkpoints
            await registry.next_counter(f"counter-{n:05d}-" + "x" * 400)
        wal = os.stat(f"{db}-wal").st_size
        assert wal < 2 * 1024 * 1024, wal  # a checkpointed WAL is written from its start again
