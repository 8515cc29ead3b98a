"""EventStore against PostgreSQL: versions, conflicts from the constraints, snapshots, replay,
upcasting, synchronous projections, append-only log, tenant-keyed streams; sync and async."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing_models import (
    Account,
    BankEvent,
    BankSnapshot,
    Base,
    Deposited,
    Opened,
    TenantBankEvent,
    TenantBankSnapshot,
    TenantBase,
    Withdrawn,
    balance_projection,
    balances,
    events,
)
from pydantic import BaseModel
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import sa_patterns
from sa_patterns import ConcurrencyConflict, ConfigurationError, TenantRequired
from sa_patterns.eventsourcing import (
    EventRegistry,
    EventStore,
    VersionConflict,
)
from sa_patterns.schema import create_all
from sa_patterns.testing.plugin import SQL


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        create_all(conn, Base.metadata)
        create_all(conn, TenantBase.metadata)
    yield


def store(session: Session, **kw: Any) -> EventStore:
    return EventStore(session, BankEvent, registry=events, snapshots=BankSnapshot, **kw)


def test_append_assigns_versions_and_stores_typed_json(session: Session, sql: SQL) -> None:
    s = store(session)
    first = s.append("acc-1", [Opened("ann"), Deposited(Decimal("10.50"))], expected_version=0)
    assert [e.version for e in first] == [1, 2]
    more = s.append("acc-1", Withdrawn(Decimal("3")), expected_version=2)
    assert more[0].version == 3
    rows = sql(
        "SELECT version, previous_version, event_type, schema_version, data, "
        "transaction_id = (pg_current_xact_id()::text::bigint) AS this_tx "
        "FROM es_bank_events WHERE aggregate_id = 'acc-1' ORDER BY version"
    )
    assert [(r.version, r.previous_version) for r in rows] == [(1, None), (2, 1), (3, 2)]
    assert [r.event_type for r in rows] == ["account.opened", "account.deposited", "account.withdrawn"]
    assert rows[1].schema_version == 2
    assert rows[1].data == {"amount": "10.50", "note": ""}  # Decimal kept exact, as a string
    assert all(r.this_tx for r in rows)
    read = s.read("acc-1")
    assert [type(e.data) for e in read] == [Opened, Deposited, Withdrawn]
    assert read[1].data.amount == Decimal("10.50")
    assert s.version("acc-1") == 3 and s.version("nobody") == 0


def test_same_expected_version_conflicts_via_unique_constraint(session: Session, sql: SQL) -> None:
    s = store(session)
    s.append("acc-2", Opened("bob"), expected_version=0)
    session.commit()  # the fixture's savepoint: lets us continue after the failed statement
    with pytest.raises(VersionConflict) as info:
        s.append("acc-2", Deposited(Decimal(1)), expected_version=0)
    assert isinstance(info.value, ConcurrencyConflict)
    assert info.value.aggregate_id == "acc-2" and info.value.expected_version == 0
    assert "another writer" in str(info.value) and "[sap10]" in str(info.value)
    assert info.value.__cause__.orig.sqlstate == "23505"
    session.rollback()
    assert sql("SELECT count(*) FROM es_bank_events WHERE aggregate_id = 'acc-2'")[0][0] == 1


def test_expected_version_ahead_of_stream_is_refused_by_the_gapless_key(session: Session) -> None:
    s = store(session)
    s.append("acc-3", Opened("cy"), expected_version=0)
    session.commit()
    with pytest.raises(VersionConflict, match="leave a gap") as info:
        s.append("acc-3", Deposited(Decimal(1)), expected_version=5)
    assert info.value.__cause__.orig.sqlstate == "23503"
    session.rollback()
    assert s.version("acc-3") == 1


def test_raw_sql_cannot_create_a_gap_or_edit_the_log(connection: Connection) -> None:
    connection.execute(text(
        "INSERT INTO es_bank_events (aggregate_id, version, event_type, data) "
        "VALUES ('raw', 1, 'account.opened', '{\"owner\": \"x\"}')"
    ))
    for statement, sqlstate in [
        ("INSERT INTO es_bank_events (aggregate_id, version, event_type, data) "
         "VALUES ('raw', 3, 'account.opened', '{}')", "23503"),
        ("UPDATE es_bank_events SET data = '{}' WHERE aggregate_id = 'raw'", "P0001"),
        ("DELETE FROM es_bank_events WHERE aggregate_id = 'raw'", "P0001"),
    ]:
        savepoint = connection.begin_nested()
        with pytest.raises(DBAPIError) as info:
            connection.execute(text(statement))
        savepoint.rollback()
        assert info.value.orig.sqlstate == sqlstate, statement


def test_expected_version_none_appends_at_the_end(session: Session) -> None:
    s = store(session)
    s.append("acc-4", Opened("di"), expected_version=None)
    recorded = s.append("acc-4", [Deposited(Decimal(1)), Deposited(Decimal(2))], expected_version=None)
    assert [e.version for e in recorded] == [2, 3]


def test_bad_input_is_refused_with_a_teaching_error(session: Session) -> None:
    s = store(session)
    for bad in (-1, True, "1"):
        with pytest.raises(ConfigurationError, match="expected_version"):
            s.append("acc-x", Opened("x"), expected_version=bad)  # type: ignore[arg-type]

    @dataclass
    class Unregistered:
        x: int

    with pytest.raises(ConfigurationError, match="not a registered event"):
        s.append("acc-x", Unregistered(1), expected_version=0)
    assert s.append("acc-x", [], expected_version=0) == []
    with pytest.raises(ConfigurationError, match="snapshot_every"):
        EventStore(session, BankEvent, registry=events, snapshot_every=10)
    with pytest.raises(ConfigurationError, match="EventMixin"):
        EventStore(session, BankSnapshot, registry=events)
    with pytest.raises(ConfigurationError, match="both be tenant-scoped"):
        EventStore(session, BankEvent, registry=events, snapshots=TenantBankSnapshot)


def test_mixin_refuses_a_channel_name_over_63_bytes() -> None:
    from sqlalchemy.orm import DeclarativeBase

    from sa_patterns.eventsourcing import EventMixin

    class Scratch(DeclarativeBase):
        pass

    with pytest.raises(ConfigurationError, match="1 to 63 bytes"):
        type("LongChannel", (EventMixin, Scratch), {"__tablename__": "evs", "__event_channel__": "c" * 64})


def test_table_names_up_to_the_identifier_limit_work_end_to_end(
    session: Session, connection: Connection, sql: SQL
) -> None:
    """Names derived from a table's (constraints, indexes, triggers, the snapshot upsert's
    target) go through ident(): 63-character table names get distinct names that PostgreSQL
    keeps whole, and the store still finds its constraints by name."""
    from sqlalchemy.orm import DeclarativeBase

    from sa_patterns.eventsourcing import EventMixin, SnapshotMixin

    class Long(DeclarativeBase):
        pass

    events_table, snapshots_table = "e" * 63, "s" * 63
    long_events = type("LongEvents", (EventMixin, Long), {"__tablename__": events_table})
    long_snapshots = type("LongSnapshots", (SnapshotMixin, Long), {"__tablename__": snapshots_table})
    create_all(connection, Long.metadata)
    s = EventStore(session, long_events, registry=events, snapshots=long_snapshots, snapshot_every=1)
    account = s.load(Account, "long")
    account.open("ivy")
    s.save(account)
    account.deposit(Decimal(3))
    s.save(account)  # the second snapshot is an upsert on the snapshot table's key, by name
    assert sql(f'SELECT version FROM "{snapshots_table}" WHERE aggregate_id = \'long\'')[0][0] == 2
    session.commit()
    with pytest.raises(VersionConflict):
        s.append("long", Deposited(Decimal(1)), expected_version=1)  # the unique key, by name
    session.rollback()
    with pytest.raises(VersionConflict, match="leave a gap"):
        s.append("long", Deposited(Decimal(1)), expected_version=7)  # the gapless key, by name
    session.rollback()
    tables = [events_table, snapshots_table]
    for catalog in (
        "SELECT conname FROM pg_constraint WHERE conrelid = ANY(CAST(:t AS regclass[])) "
        "UNION ALL SELECT tgname FROM pg_trigger WHERE tgrelid = ANY(CAST(:t AS regclass[])) "
        "AND NOT tgisinternal",
        "SELECT relname FROM pg_class JOIN pg_index ON indexrelid = pg_class.oid "
        "WHERE indrelid = ANY(CAST(:t AS regclass[]))",
    ):
        names = [r[0] for r in sql(catalog, t=tables)]
        assert len(names) >= 5 and len(set(names)) == len(names), names
        assert all(len(n.encode()) <= 63 for n in names)


def test_registry_refuses_non_events_duplicates_and_missing_upcasters() -> None:
    reg = EventRegistry()
    with pytest.raises(ConfigurationError, match="@dataclass"):
        reg.add(int)

    @dataclass
    class A:
        x: int

    @dataclass
    class B:
        x: int

    reg.add(A, "a", version=3)
    with pytest.raises(ConfigurationError, match="already used"):
        reg.add(B, "a")
    with pytest.raises(ConfigurationError, match="no upcaster from version 1"):
        reg.deserialise("a", 1, {"x": 1})
    with pytest.raises(ConfigurationError, match="newer than"):
        reg.deserialise("a", 4, {"x": 1})
    with pytest.raises(ConfigurationError, match="not registered"):
        reg.deserialise("zzz", 1, {})
    with pytest.raises(ConfigurationError, match="upcaster"):
        reg.add(A, "a", version=3)
        reg.deserialise("a", 3, {"x": 1, "dropped": 2})


def test_upcasting_old_rows_on_read(session: Session, connection: Connection) -> None:
    # a v1 Deposited row written by an old release stored integer cents
    connection.execute(text(
        "INSERT INTO es_bank_events (aggregate_id, version, event_type, schema_version, data) VALUES "
        "('old', 1, 'account.opened', 1, '{\"owner\": \"eve\"}'), "
        "('old', 2, 'account.deposited', 1, '{\"cents\": 1234}')"
    ))
    account = store(session).load(Account, "old")
    assert account.balance == Decimal("12.34") and account.version == 2


def test_pydantic_events_roundtrip(session: Session, sql: SQL) -> None:
    class Renamed(BaseModel):
        id: uuid.UUID
        name: str

    reg = EventRegistry()
    reg.add(Renamed, "renamed")
    s = EventStore(session, BankEvent, registry=reg)
    ident = uuid.uuid4()
    s.append("p-1", Renamed(id=ident, name="z"), expected_version=0)
    assert sql("SELECT data FROM es_bank_events WHERE aggregate_id = 'p-1'")[0][0] == {
        "id": str(ident), "name": "z"
    }
    assert s.read("p-1")[0].data == Renamed(id=ident, name="z")


def test_snapshot_path_equals_replay_from_zero(session: Session, sql: SQL) -> None:
    s = store(session, snapshot_every=100)
    account = s.load(Account, "snap")
    account.open("fay")
    s.save(account)
    for i in range(1, 250):
        account.deposit(Decimal(i) / 4)
        if i % 7 == 0:
            account.withdraw(Decimal(1))
        if i % 10 == 0:
            s.save(account)
    s.save(account)
    rows = sql(
        "SELECT version, schema_version, state FROM es_bank_snapshots WHERE aggregate_id = 'snap'"
    )
    assert len(rows) == 1 and rows[0].version in range(200, 300)
    assert rows[0].state["owner"] == "fay"
    with_snapshot = s.load(Account, "snap")
    from_zero = s.load(Account, "snap", snapshots=False)
    assert with_snapshot.version == from_zero.version == account.version
    assert vars(with_snapshot) == vars(from_zero)
    assert isinstance(with_snapshot.balance, Decimal)
    # only the events after the snapshot were read on the snapshot path
    assert len(s.read("snap", after_version=rows[0].version)) == account.version - rows[0].version


def test_snapshot_of_another_shape_is_ignored(session: Session, connection: Connection) -> None:
    s = store(session, snapshot_every=2)
    account = s.load(Account, "shape")
    account.open("gus")
    account.deposit(Decimal(5))
    s.save(account)
    connection.execute(text(
        "UPDATE es_bank_snapshots SET schema_version = 99, state = '{\"garbage\": true}' "
        "WHERE aggregate_id = 'shape'"
    ))
    loaded = s.load(Account, "shape")
    assert loaded.balance == Decimal(5) and loaded.owner == "gus"
    with pytest.raises(ConfigurationError, match="save\\(\\) it first"):
        loaded.deposit(Decimal(1))
        s.snapshot(loaded)


def test_sync_projection_commits_and_rolls_back_with_the_append(session: Session) -> None:
    projection = balance_projection()
    s = store(session, projections=[projection])
    s.append("proj", [Opened("hal"), Deposited(Decimal(7))], expected_version=0)
    assert balances(session)["proj"] == (Decimal("7.00"), 2, 2)
    session.commit()
    nested = session.begin_nested()
    s.append("proj", Withdrawn(Decimal(2)), expected_version=2)
    assert balances(session)["proj"] == (Decimal("5.00"), 3, 3)
    nested.rollback()
    assert balances(session)["proj"] == (Decimal("7.00"), 2, 2)
    assert s.version("proj") == 2


def test_metadata_carries_actor_and_request(session: Session, sql: SQL) -> None:
    s = store(session)
    with sa_patterns.actor_scope("clerk-7", request_id="r-1"):
        s.append("meta", Opened("ida"), expected_version=0, metadata={"reason": "kyc"})
    row = sql("SELECT metadata FROM es_bank_events WHERE aggregate_id = 'meta'")[0]
    assert row.metadata == {"actor_id": "clerk-7", "request": {"request_id": "r-1"}, "reason": "kyc"}


def test_tenant_streams_are_keyed_by_tenant(session: Session, sql: SQL) -> None:
    """With TenantMixin the stream key is (tenant_id, aggregate_id) and a tenant is required."""
    s = EventStore(session, TenantBankEvent, registry=events, snapshots=TenantBankSnapshot,
                   snapshot_every=1)
    with pytest.raises(TenantRequired):
        s.append("acc", Opened("t"), expected_version=0)
    for tenant in (1, 2):
        with sa_patterns.tenant_scope(tenant):
            account = s.load(Account, "acc")
            account.open(f"owner-{tenant}")
            account.deposit(Decimal(tenant))
            s.save(account)
    with sa_patterns.tenant_scope(2):
        assert s.load(Account, "acc").balance == Decimal(2)
        assert [e.tenant_id for e in s.read("acc")] == [2, 2]
        # the installed session's tenant filter applies to ORM reads of the log too
        assert {e.tenant_id for e in session.scalars(select(TenantBankEvent))} == {2}
    rows = sql("SELECT tenant_id, aggregate_id, version FROM es_tenant_events ORDER BY 1, 3")
    assert [tuple(r) for r in rows] == [(1, "acc", 1), (1, "acc", 2), (2, "acc", 1), (2, "acc", 2)]
    keys = sql(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname IN "
        "('es_tenant_events_stream_key', 'es_tenant_events_gapless_fk') ORDER BY conname"
    )
    assert "(tenant_id, aggregate_id, previous_version)" in keys[0][0]
    assert keys[1][0] == "UNIQUE (tenant_id, aggregate_id, version)"
    assert len(sql("SELECT 1 FROM es_tenant_snapshots")) == 2


def test_schema_objects_in_the_catalog(sql: SQL) -> None:
    indexes = {r[0] for r in sql("SELECT indexname FROM pg_indexes WHERE tablename = 'es_bank_events'")}
    assert {"ix_es_bank_events_event_type", "ix_es_bank_events_recorded_at",
            "ix_es_bank_events_position", "es_bank_events_stream_key"} <= indexes
    triggers = {r[0] for r in sql(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'es_bank_events'::regclass AND NOT tgisinternal"
    )}
    assert triggers == {"es_bank_events_notify", "es_bank_events_append_only"}


async def test_async_store_append_conflict_and_load(async_session: AsyncSession) -> None:
    from sa_patterns.eventsourcing import AsyncEventStore

    s = AsyncEventStore(async_session, BankEvent, registry=events, snapshots=BankSnapshot,
                        snapshot_every=3, projections=[balance_projection()])
    account = await s.load(Account, "async-1")
    account.open("jo")
    for amount in (5, 6, 7):
        account.deposit(Decimal(amount))
    await s.save(account)
    assert account.version == 4 and await s.version("async-1") == 4
    loaded = await s.load(Account, "async-1")
    replayed = await s.load(Account, "async-1", snapshots=False)
    assert vars(loaded) == vars(replayed) and loaded.balance == Decimal(18)
    assert [e.version for e in await s.read("async-1", after_version=2)] == [3, 4]
    await async_session.commit()
    with pytest.raises(VersionConflict):
        await s.append("async-1", Withdrawn(Decimal(1)), expected_version=3)
    await async_session.rollback()
    rows = (await async_session.execute(text(
        "SELECT balance, events FROM es_balances WHERE account_id = 'async-1'"
    ))).one()
    assert tuple(rows) == (Decimal("18.00"), 4)
