"""`Registry.apply_statuses`: a batch of car statuses applied in ONE transaction — seqs claimed in their
anti-replay windows and each car's newest status stored together, or nothing at all — on SQLite and PostgreSQL.
Also the upgrade of seq marks kept before the window existed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from cloud_testkit import BORN, FLEET, LEON, UNKNOWN_VIN

from broker.registry import RegistryUnavailable, SeqMark, SqlRegistry, StatusWrite, open_registry
from broker.registry._schema import MIGRATIONS


def _status(vin: str, seq: int, at: float) -> StatusWrite:
    return StatusWrite(f"car:{vin}:status", seq, vin, json.dumps({"seq": seq, "at": at}), "off", at)


async def _stored(registry: SqlRegistry, vin: str) -> dict[str, Any] | None:
    state = await registry.get_vehicle_state(vin)
    return None if state is None else state.status


async def test_duplicates_in_a_batch_are_dropped_late_ones_accepted_and_the_newest_kept(registry: SqlRegistry) -> None:
    await registry.upsert_vehicles(FLEET)
    batch = [
        _status(LEON, 1, 100), _status(LEON, 1, 100), _status(LEON, 3, 300), _status(LEON, 2, 200),
        _status(BORN, 7, 50), _status(LEON, 3, 300),
    ]
    assert await registry.apply_statuses(batch) == [True, False, True, True, True, False]
    assert await _stored(registry, LEON) == {"seq": 3, "at": 300}
    assert await _stored(registry, BORN) == {"seq": 7, "at": 50}
    assert await registry.seq_mark(f"car:{LEON}:status") == SeqMark(3, 0b111)


async def test_across_batches_a_seq_counts_once_and_an_older_status_never_replaces_a_newer(
    registry: SqlRegistry,
) -> None:
    await registry.upsert_vehicles(FLEET)
    assert await registry.apply_statuses([_status(LEON, 5, 500), _status(LEON, 6, 600)]) == [True, True]
    # Redelivered, replayed, and one that arrives late (seq 4, older content): only that one is new.
    again = [_status(LEON, 6, 600), _status(LEON, 5, 500), _status(LEON, 4, 400)]
    assert await registry.apply_statuses(again) == [False, False, True]
    assert await _stored(registry, LEON) == {"seq": 6, "at": 600}
    # Far behind the window: refused, however new it claims to be.
    assert await registry.apply_statuses([_status(LEON, 200, 2000)]) == [True]
    assert await registry.apply_statuses([_status(LEON, 7, 9999)]) == [False]
    assert await _stored(registry, LEON) == {"seq": 200, "at": 2000}


async def test_a_car_without_factory_data_is_claimed_not_stored_and_does_not_fail_the_batch(
    registry: SqlRegistry,
) -> None:
    await registry.upsert_vehicles(FLEET)
    assert await registry.apply_statuses([_status(UNKNOWN_VIN, 1, 1), _status(LEON, 1, 1)]) == [True, True]
    assert await registry.get_vehicle_state(UNKNOWN_VIN) is None
    assert await _stored(registry, LEON) == {"seq": 1, "at": 1}


class _FailingTx:
    """A transaction that fails at the statement touching `table`, after everything before it ran."""

    def __init__(self, tx: Any, table: str) -> None:
        self._tx = tx
        self._table = table

    def _check(self, sql: str) -> None:
        if self._table in sql:
            raise RegistryUnavailable(f"injected failure at {self._table}")

    async def execute(self, sql: str, *args: Any) -> None:
        self._check(sql)
        await self._tx.execute(sql, *args)

    async def fetchone(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return await self._tx.fetchone(sql, *args)

    async def fetchall(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return await self._tx.fetchall(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._check(sql)
        await self._tx.executemany(sql, rows)


@contextlib.contextmanager
def failing_at(registry: SqlRegistry, table: str) -> Any:
    """Make every transaction of `registry` fail when it reaches a statement on `table`."""
    db = registry._db
    original = db.transaction

    @contextlib.asynccontextmanager
    async def transaction() -> AsyncIterator[Any]:
        async with original() as tx:
            yield _FailingTx(tx, table)

    db.transaction = transaction  # type: ignore[method-assign]  # a fault injected for this test only
    try:
        yield
    finally:
        db.transaction = original  # type: ignore[method-assign]


async def test_a_failure_mid_batch_leaves_nothing_half_applied(registry: SqlRegistry) -> None:
    await registry.upsert_vehicles(FLEET)
    batch = [_status(LEON, 1, 100), _status(BORN, 1, 100)]
    # The seq marks are written, then the status write fails: the marks must go with it.
    with failing_at(registry, "vehicle_state"), pytest.raises(RegistryUnavailable):
        await registry.apply_statuses(batch)
    assert await registry.seq_mark(f"car:{LEON}:status") is None
    assert await registry.seq_mark(f"car:{BORN}:status") is None
    assert await registry.get_vehicle_state(LEON) is None
    # Applied again once the store works: accepted (not taken for duplicates), once.
    assert await registry.apply_statuses(batch) == [True, True]
    assert await registry.apply_statuses(batch) == [False, False]
    assert await _stored(registry, BORN) == {"seq": 1, "at": 100}


async def test_a_claim_released_after_a_failed_application_is_accepted_again(registry: SqlRegistry) -> None:
    assert await registry.claim_seq("car:X:events", 10)
    assert await registry.claim_seq("car:X:events", 8)
    await registry.release_seq("car:X:events", 8)
    assert await registry.claim_seq("car:X:events", 8)
    assert not await registry.claim_seq("car:X:events", 8)
    assert not await registry.claim_seq("car:X:events", 10)
    await registry.release_seq("car:X:unknown", 1)  # nothing to release: nothing happens
    assert await registry.seq_mark("car:X:unknown") is None


async def test_marks_kept_before_the_upgrade_refuse_everything_up_to_them(tmp_path: object) -> None:
    url = f"sqlite://{tmp_path}/v1.db"
    # Back to schema version 1, as an installation before the window existed had it.
    async with open_registry(url) as registry, registry._db.transaction() as tx:
        for table in ("trips", "alerts", "bookings", "roadside_cases", "user_clients", "seq_marks"):
            await tx.execute(f"DROP TABLE {table}")
        await tx.execute("CREATE TABLE seq_marks (stream TEXT PRIMARY KEY, seq BIGINT NOT NULL)")
        await tx.execute("ALTER TABLE commands DROP COLUMN client_id")
        await tx.execute("DELETE FROM schema_version WHERE version > 1")
        await tx.execute("INSERT INTO seq_marks (stream, seq) VALUES (?, ?)", "car:X:events", 10)
    async with open_registry(url) as registry:
        assert await registry.migrate() == MIGRATIONS[-1][0]
        assert not await registry.claim_seq("car:X:events", 9)
        assert not await registry.claim_seq("car:X:events", 10)
        assert await registry.claim_seq("car:X:events", 11)
