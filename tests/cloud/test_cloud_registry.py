"""The registry itself: URLs, schema migrations, uniqueness rules, and the atomic steps the rules rely on."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from cloud_testkit import FLEET, LEON, START, TABLES, execute_sql

from broker.registry import (
    CommandRecord,
    MailRecord,
    Registry,
    RegistryError,
    RegistryUnavailable,
    SeqMark,
    SessionRecord,
    SqlRegistry,
    UserRecord,
    open_registry,
)
from broker.registry._backends import _pg_sql, _redact_dsn
from broker.registry._schema import MIGRATIONS
from tcu_sim.protocol import CommandState


def _user(n: int, email: str | None = None) -> UserRecord:
    return UserRecord(
        id=f"u{n}", email=email or f"user{n}@example.com", password_hash="$argon2id$x", spin_hash="ab" * 32,
        verified=False, reauth_minutes=None, created_at=START,
    )


def _command(n: int, user: str = "u1", request: str | None = None) -> CommandRecord:
    return CommandRecord(
        id=f"cmd-{n}", user_id=user, request_id=request or f"r{n}", vin=LEON, op="lock", params={},
        state=CommandState.QUEUED, created_at=START, expires_at=START + 60, updated_at=START,
    )


def test_the_sql_registry_implements_the_interface(registry: SqlRegistry) -> None:
    typed: Registry = registry  # mypy checks the structural match
    assert typed.dialect in ("sqlite", "postgresql")


@pytest.mark.parametrize("url", ["", "sqlite", "mysql://host/db", "sqlite://", "file:///x.db"])
async def test_bad_urls_are_refused_with_a_message(url: str) -> None:
    with pytest.raises(RegistryError, match=r"registry URL|unknown scheme"):
        async with open_registry(url):
            pass


async def test_an_unreachable_postgres_is_reported(tmp_path: object) -> None:
    with pytest.raises(RegistryUnavailable, match=r"postgres:\*\*\*@127.0.0.1:1/db"):
        async with open_registry("postgresql://postgres:hunter2@127.0.0.1:1/db"):
            pass


async def test_an_unopenable_sqlite_file_is_reported(tmp_path: object) -> None:
    with pytest.raises(RegistryUnavailable):
        async with open_registry(f"sqlite://{tmp_path}/missing-dir/x.db"):
            pass


async def test_memory_sqlite_works(tmp_path: object) -> None:
    async with open_registry("sqlite://:memory:") as registry:
        assert await registry.create_user(_user(1))
        assert await registry.get_user("u1") == _user(1)


async def test_migrations_are_applied_once_and_recorded(registry_url: str) -> None:
    async with open_registry(registry_url) as registry:
        assert await registry.migrate() == MIGRATIONS[-1][0]
    async with open_registry(registry_url) as registry:
        assert await registry.migrate() == MIGRATIONS[-1][0]


async def test_a_newer_schema_than_the_program_is_refused(registry_url: str) -> None:
    async with open_registry(registry_url) as registry:
        async with registry._db.transaction() as tx:
            await tx.execute("INSERT INTO schema_version (version) VALUES (?)", 999)
        with pytest.raises(RegistryError, match="schema version 999"):
            await registry.migrate()
        async with registry._db.transaction() as tx:
            await tx.execute("DELETE FROM schema_version WHERE version = ?", 999)


@pytest.mark.postgres
async def test_a_fresh_postgres_schema_is_created_by_the_program(postgres_database: str) -> None:
    schema = f"fresh_{secrets.token_hex(4)}"
    execute_sql(postgres_database, f'CREATE SCHEMA "{schema}"')
    try:
        url = f"{postgres_database}?search_path={schema}"
        # Two processes starting at once: the advisory lock lets one migrate, the other sees it done.
        async with open_registry(url) as a, open_registry(url) as b:
            assert list(await asyncio.gather(a.migrate(), b.migrate())) == [MIGRATIONS[-1][0]] * 2
    finally:
        execute_sql(postgres_database, f'DROP SCHEMA "{schema}" CASCADE')


async def test_the_test_cleanup_knows_every_table(registry: SqlRegistry) -> None:
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        if registry.dialect == "sqlite"
        else "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    async with registry._db.transaction() as tx:
        names = {row["name"] for row in await tx.fetchall(query)}
    assert names - {"schema_version"} == set(TABLES)


async def test_sqlite_uses_wal_and_a_busy_timeout(tmp_path: object) -> None:
    async with open_registry(f"sqlite://{tmp_path}/wal.db") as registry:
        async with registry._db.transaction() as tx:
            mode = await tx.fetchone("PRAGMA journal_mode")
            timeout = await tx.fetchone("PRAGMA busy_timeout")
        assert mode is not None
        assert timeout is not None
        assert next(iter(mode.values())) == "wal"
        assert next(iter(timeout.values())) >= 1000


async def test_emails_are_unique_whatever_their_case(registry: SqlRegistry) -> None:
    assert await registry.create_user(_user(1, "Ana@Example.com"))
    assert not await registry.create_user(_user(2, "ana@example.COM"))
    found = await registry.get_user_by_email(" ANA@EXAMPLE.COM ")
    assert found is not None
    assert found.id == "u1"
    assert found.email == "Ana@Example.com"


async def test_records_never_show_hashes(registry: SqlRegistry) -> None:
    user = _user(1)
    session = SessionRecord(token_hash="f" * 64, user_id="u1", created_at=START, last_activity=START)
    mail = MailRecord(at=START, to="a@example.com", subject="Verify", body="code=secret-code")
    for record, hidden in ((user, "$argon2id$"), (user, "ab" * 32), (session, "f" * 64), (mail, "secret-code")):
        assert hidden not in repr(record)


def test_dsn_passwords_are_redacted_and_placeholders_numbered() -> None:
    assert _redact_dsn("postgresql://bob:hunter2@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert _redact_dsn("postgresql://bob@db/x") == "postgresql://bob@db/x"
    assert _pg_sql("SELECT ? , ?, (?)") == "SELECT $1 , $2, ($3)"


async def test_sessions_revoke_all_but_one(registry: SqlRegistry) -> None:
    await registry.create_user(_user(1))
    for n in range(3):
        await registry.create_session(SessionRecord(f"h{n}", "u1", START, START))
    assert await registry.revoke_user_sessions("u1", START + 1, keep="h0") == 2
    assert await registry.revoke_user_sessions("u1", START + 2, keep="h0") == 0
    kept = await registry.get_session("h0")
    assert kept is not None
    assert kept.revoked_at is None
    await registry.touch_session("h0", START + 10)
    await registry.touch_session("h0", START + 5)  # never backwards
    kept = await registry.get_session("h0")
    assert kept is not None
    assert kept.last_activity == START + 10


async def test_counters_and_seq_claims_are_atomic_across_instances(registry_url: str) -> None:
    async with open_registry(registry_url) as a, open_registry(registry_url) as b:
        values = await asyncio.gather(*(r.next_counter("seq:cloud:X") for _ in range(10) for r in (a, b)))
        assert sorted(values) == list(range(1, 21))
        accepted = await asyncio.gather(*(r.claim_seq("car:X", 5) for r in (a, b, a, b)))
        assert sorted(accepted) == [False, False, False, True]
        # Within the window an older seq not seen yet is taken once, by one of them.
        accepted = await asyncio.gather(*(r.claim_seq("car:X", 4) for r in (a, b, a, b)))
        assert sorted(accepted) == [False, False, False, True]
        assert await b.claim_seq("car:X", 6)
        assert await a.seq_mark("car:X") == SeqMark(6, 0b111)


async def test_command_creation_and_transitions_are_compare_and_set(registry_url: str) -> None:
    async with open_registry(registry_url) as a, open_registry(registry_url) as b:
        await a.upsert_vehicles(FLEET)
        await a.create_user(_user(1))
        created = await asyncio.gather(
            *(r.create_command(_command(n, request="same")) for n in range(4) for r in (a, b))
        )
        assert sum(flag for _, flag in created) == 1
        (command_id,) = {c.id for c, _ in created}
        moves = await asyncio.gather(
            *(
                r.transition_command(command_id, state, START + 1, allowed_from=[CommandState.QUEUED])
                for state in (CommandState.SUCCEEDED, CommandState.FAILED, CommandState.TIMED_OUT)
                for r in (a, b)
            )
        )
        assert sum(m is not None for m in moves) == 1
        history = await b.command_history(command_id)
        assert len(history) == 2


async def test_a_reminder_is_recorded_and_mailed_once(registry: SqlRegistry) -> None:
    await registry.upsert_vehicles(FLEET)
    mail = MailRecord(at=START, to="x@example.com", subject="s", body="b")
    results = await asyncio.gather(*(registry.record_reminder(LEON, START, "30d", START, mail) for _ in range(3)))
    assert sorted(results) == [False, False, True]
    assert len(await registry.list_mail("X@example.com")) == 1


async def test_status_keeps_the_newest_and_connection_is_separate(registry: SqlRegistry) -> None:
    await registry.upsert_vehicles(FLEET)
    assert await registry.record_status(LEON, {"n": 2}, "off", START + 2)
    assert not await registry.record_status(LEON, {"n": 1}, "max", START + 1)
    await registry.set_vehicle_online(LEON, False)
    state = await registry.get_vehicle_state(LEON)
    assert state is not None
    assert (state.status, state.privacy_mode, state.online, state.updated_at) == ({"n": 2}, "off", False, START + 2)


async def test_audit_lists_the_newest_entries_oldest_first(registry: SqlRegistry) -> None:
    from broker.registry import AuditRecord

    for n in range(5):
        user_id = "u1" if n % 2 else None
        await registry.add_audit(AuditRecord(at=START + n, action=f"a{n}", outcome="ok", user_id=user_id))
    assert [e.action for e in await registry.list_audit(limit=3)] == ["a2", "a3", "a4"]
    assert [e.action for e in await registry.list_audit(user_id="u1")] == ["a1", "a3"]


async def test_car_context_reads_car_enrolment_licence_and_privacy_at_once(registry: SqlRegistry) -> None:
    from broker.registry import EnrolmentRecord, EnrolmentState, LicenceRecord, Role

    await registry.upsert_vehicles(FLEET)
    await registry.create_user(_user(1))
    assert await registry.get_car_context("VSSZZZ00000000000", "u1") is None
    bare = await registry.get_car_context(LEON, "u1")
    assert bare is not None
    assert (bare.vehicle.vin, bare.enrolment, bare.licence, bare.online, bare.privacy_mode) == (
        LEON, None, None, None, None
    )
    secondary = EnrolmentRecord(LEON, "u1", Role.SECONDARY, EnrolmentState.ACTIVE, "invitation", START)
    await registry.put_enrolment(secondary)
    await registry.ensure_licence(LicenceRecord(LEON, START, START + 10))
    await registry.record_privacy(LEON, "max", START)
    await registry.set_vehicle_online(LEON, True)
    full = await registry.get_car_context(LEON, "u1")
    assert full is not None
    assert full.enrolment is not None
    assert full.enrolment.role is Role.SECONDARY
    assert full.licence == LicenceRecord(LEON, START, START + 10)
    assert (full.online, full.privacy_mode) == (True, "max")
    assert (await registry.get_car_context(LEON, "u2")).enrolment is None  # type: ignore[union-attr]  # car exists
