"""Event sourcing under row-level security, run AS THE APP ROLE: a NOSUPERUSER NOBYPASSRLS
login that owns nothing. A non-superuser owner role builds the tables (``create_all``, so the
policies and the reader functions are the generated ones) and FORCE'd row-level security binds
it too. Every check reads back what the database holds with raw SQL as the superuser.

A superuser bypasses row-level security, so a test run as one would pass vacuously: here only
the fixtures and the assertions' read-backs use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing_models import Account, events
from eventsourcing_rls_models import (
    ADMIN_ROLE,
    APP_ROLE,
    OWNER_ROLE,
    ROLES,
    RlsBase,
    RlsCheckpoint,
    RlsEvent,
    RlsSnapshot,
    balance_projection,
    line_projection,
    total_projection,
)
from sqlalchemy import URL, Engine, MetaData, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

import sa_patterns
from sa_patterns import ConfigurationError, MissingGrant, TenantMixin, TenantViolation
from sa_patterns.eventsourcing import (
    AsyncProjectionRunner,
    EventMixin,
    EventStore,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    SnapshotMixin,
)
from sa_patterns.eventsourcing.tables import LogReader
from sa_patterns.roles import use_roles
from sa_patterns.schema import diff, quote, registered
from sa_patterns.schema.live import drifts
from sa_patterns.tenancy import tenant_tables
from sa_patterns.testing.rls import assert_rls_ready

#: tenant -> its accounts; "acc-1" exists in every tenant, "acc-3" in tenant 2 only
ACCOUNTS = {1: ["acc-1", "acc-2"], 2: ["acc-1", "acc-2", "acc-3"], 3: ["acc-1"]}
ROUNDS = 3  # round 0 opens and deposits, later rounds deposit, the last also withdraws
EVENTS = {tenant: len(accounts) * (ROUNDS + 2) for tenant, accounts in ACCOUNTS.items()}
TOTAL = sum(EVENTS.values())
READERS = "es_rls_events_log_after(bigint, bigint, integer), es_rls_events_log_end(), es_rls_events_log_tenants()"


@pytest.fixture(scope="module")
def tables(engine: Engine, db_schema: str) -> Iterator[None]:
    """Built as the owner role (which owns the schema) with ``create_all``: the tables, their
    policies, the reader functions and the generated grants (DML and sequences for the app role,
    EXECUTE on the reader functions for it alone)."""
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {quote(OWNER_ROLE)} NOLOGIN NOSUPERUSER NOBYPASSRLS"))
        for role in (APP_ROLE, ADMIN_ROLE):
            conn.execute(text(f"CREATE ROLE {quote(role)} LOGIN NOSUPERUSER NOBYPASSRLS"))
        conn.execute(text(f"ALTER SCHEMA {quote(db_schema)} OWNER TO {quote(OWNER_ROLE)}"))
    try:
        with use_roles(ROLES), engine.begin() as conn:
            conn.execute(text(f"SET LOCAL ROLE {quote(OWNER_ROLE)}"))
            sa_patterns.create_all(conn, RlsBase.metadata)
        yield
    finally:
        with engine.begin() as conn:  # the owner's objects (the schema too) go with it
            for role in (APP_ROLE, ADMIN_ROLE, OWNER_ROLE):
                conn.execute(text(f"DROP OWNED BY {quote(role)}"))
                conn.execute(text(f"DROP ROLE {quote(role)}"))


@pytest.fixture
def app_engine(pg_url: URL, db_schema: str, tables: None, engine: Engine) -> Iterator[Engine]:
    """Logs in *as* the app role (its own URL, not SET ROLE)."""
    eng = create_engine(
        pg_url.set(username=APP_ROLE), connect_args={"options": f"-csearch_path={db_schema},public"}
    )
    try:
        yield eng
    finally:
        eng.dispose()
        with engine.begin() as conn:
            conn.execute(text(
                "TRUNCATE es_rls_events, es_rls_snapshots, es_rls_checkpoints, es_rls_balances, "
                "es_rls_lines, es_rls_totals RESTART IDENTITY"
            ))


def seed(app_engine: Engine) -> dict[tuple[int, str], Decimal]:
    """Three tenants' streams, appended as the app role, one transaction per tenant and round
    (so the log interleaves tenants); returns each (tenant, account)'s balance."""
    factory = sa_patterns.install(sessionmaker(app_engine))
    balances: dict[tuple[int, str], Decimal] = {}
    for round_ in range(ROUNDS):
        for tenant, accounts in ACCOUNTS.items():
            with sa_patterns.tenant_scope(tenant), factory.begin() as session:
                store = EventStore(session, RlsEvent, registry=events, snapshots=RlsSnapshot, snapshot_every=3)
                for account_id in accounts:
                    account = store.load(Account, account_id)
                    if round_ == 0:
                        account.open(f"owner-{tenant}")
                    account.deposit(Decimal(10 * tenant + round_))
                    if round_ == ROUNDS - 1:
                        account.withdraw(Decimal(tenant))
                    store.save(account)
                    balances[tenant, account_id] = account.balance
    return balances


def runner(engine: Engine, *projections: Projection, batch_size: int = 5) -> ProjectionRunner:
    return ProjectionRunner(
        engine, RlsEvent, checkpoints=RlsCheckpoint, registry=events,
        projections=list(projections) or [balance_projection(), line_projection()],
        batch_size=batch_size,
    )


def sql(engine: Engine, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """What the database holds, read as the superuser (which row-level security lets see all)."""
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(statement), params)]


def read_models(engine: Engine) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return (
        sql(engine, "SELECT tenant_id, account_id, balance, events, setting FROM es_rls_balances ORDER BY 1, 2"),
        sql(engine, "SELECT tenant_id, count(*), bool_and(setting = tenant_id::text) FROM es_rls_lines "
                    "GROUP BY 1 ORDER BY 1"),
    )


def expected_models(balances: dict[tuple[int, str], Decimal]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    per_account = ROUNDS + 2
    return (
        [(t, a, b, per_account, str(t)) for (t, a), b in sorted(balances.items())],
        [(t, n, True) for t, n in sorted(EVENTS.items())],
    )


def test_the_app_role_is_really_walled(app_engine: Engine, engine: Engine) -> None:
    with app_engine.connect() as conn:
        who = conn.execute(text(
            "SELECT session_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )).one()
        assert_rls_ready(conn, RlsBase.metadata)  # no way around the policies for this role
    assert tuple(who) == (APP_ROLE, False, False)
    owners = sql(engine, "SELECT DISTINCT tableowner FROM pg_tables WHERE tablename LIKE 'es_rls_%'")
    assert owners == [(OWNER_ROLE,)]


def test_runner_as_the_app_role_applies_each_event_under_its_tenant(app_engine: Engine, engine: Engine) -> None:
    balances = seed(app_engine)
    assert sql(engine, "SELECT tenant_id, count(*) FROM es_rls_events GROUP BY 1 ORDER BY 1") == sorted(EVENTS.items())
    projections = runner(app_engine)
    assert projections.catch_up() == 2 * TOTAL  # two projections, each sees every event
    assert read_models(engine) == expected_models(balances)
    assert projections.run_once() == 0 and projections.catch_up() == 0  # nothing twice
    assert sql(engine, "SELECT name, events_applied FROM es_rls_checkpoints ORDER BY 1") == [
        ("rls_balances", TOTAL), ("rls_lines", TOTAL)
    ]
    # the read models are walled too: the app role without a tenant sees none of their rows
    with app_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM es_rls_balances")).scalar_one() == 0
    # an event appended later is picked up (the last position comes through log_end)
    factory = sa_patterns.install(sessionmaker(app_engine))
    with sa_patterns.tenant_scope(3), factory.begin() as session:
        account = EventStore(session, RlsEvent, registry=events).load(Account, "acc-9")
        account.open("late")
        EventStore(session, RlsEvent, registry=events).save(account)
    assert projections.catch_up() == 2
    assert sql(engine, "SELECT tenant_id, events, setting FROM es_rls_balances WHERE account_id = 'acc-9'") == [
        (3, 1, "3")
    ]


def test_rebuild_as_the_app_role_empties_every_tenant_and_never_doubles(app_engine: Engine, engine: Engine) -> None:
    balances = seed(app_engine)
    projections = runner(app_engine)
    projections.catch_up()
    good = read_models(engine)
    assert good == expected_models(balances)
    # stale rows in every tenant, which only a per-tenant DELETE reaches under RLS as the app role
    with engine.begin() as conn:
        conn.execute(text("UPDATE es_rls_balances SET balance = -1, events = 999"))
        conn.execute(text(
            "INSERT INTO es_rls_balances (tenant_id, account_id, balance, events, setting) "
            "VALUES (1, 'ghost', 1, 1, 'x'), (2, 'ghost', 1, 1, 'x'), (3, 'ghost', 1, 1, 'x')"
        ))
        conn.execute(text("INSERT INTO es_rls_lines (tenant_id, event_id, setting) VALUES (2, 100000, 'x')"))
    totals = runner(app_engine, total_projection())  # one read model for every tenant
    assert totals.catch_up() == TOTAL
    good_totals = sql(engine, "SELECT event_type, events FROM es_rls_totals ORDER BY 1")
    assert sum(n for _, n in good_totals) == TOTAL
    for _ in range(2):
        assert projections.rebuild("rls_balances") == TOTAL
        assert projections.rebuild("rls_lines") == TOTAL
        assert totals.rebuild("rls_totals") == TOTAL
        assert read_models(engine) == good
        # emptied before the replay: a tenant's reset never removes what another's replay wrote
        assert sql(engine, "SELECT event_type, events FROM es_rls_totals ORDER BY 1") == good_totals
        assert sql(engine, "SELECT tenant_id, count(*) FROM es_rls_balances GROUP BY 1 ORDER BY 1") == [
            (t, len(a)) for t, a in sorted(ACCOUNTS.items())
        ]
        assert sql(engine, "SELECT name, events_applied FROM es_rls_checkpoints ORDER BY 1") == [
            ("rls_balances", TOTAL), ("rls_lines", TOTAL), ("rls_totals", TOTAL)
        ]
    assert projections.run_once() == 0 and totals.run_once() == 0


def test_a_failed_rebuild_leaves_the_old_read_model(app_engine: Engine, engine: Engine) -> None:
    seed(app_engine)
    runner(app_engine, balance_projection()).catch_up()
    old = read_models(engine)[0]
    old_checkpoint = sql(engine, "SELECT transaction_id, event_id, events_applied FROM es_rls_checkpoints")
    seen_mid_rebuild: list[list[tuple[Any, ...]]] = []

    def probe(recorded: RecordedEvent[Any]) -> None:
        if recorded.tenant_id == 3 and recorded.version == 3:
            # half way: others still read the complete old read model, not a partial one
            seen_mid_rebuild.append(read_models(engine)[0])
            raise RuntimeError("read model store unavailable")

    failing = runner(app_engine, balance_projection(probe=probe), batch_size=4)
    with pytest.raises(RuntimeError, match="unavailable"):
        failing.rebuild("rls_balances")
    assert seen_mid_rebuild == [old]
    assert read_models(engine)[0] == old
    assert sql(engine, "SELECT transaction_id, event_id, events_applied FROM es_rls_checkpoints") == old_checkpoint
    assert runner(app_engine, balance_projection()).rebuild("rls_balances") == TOTAL
    assert read_models(engine)[0] == old


async def test_async_runner_as_the_app_role(app_engine: Engine, engine: Engine, pg_url: URL, db_schema: str) -> None:
    balances = seed(app_engine)
    async_engine = create_async_engine(
        pg_url.set(username=APP_ROLE), connect_args={"options": f"-csearch_path={db_schema},public"}
    )
    try:
        projections = AsyncProjectionRunner(
            async_engine, RlsEvent, checkpoints=RlsCheckpoint, registry=events,
            projections=[balance_projection(), line_projection()], batch_size=7,
        )
        assert await projections.catch_up() == 2 * TOTAL
        assert read_models(engine) == expected_models(balances)
        for _ in range(2):
            assert await projections.rebuild("rls_balances") == TOTAL
            assert await projections.rebuild("rls_lines") == TOTAL
            assert read_models(engine) == expected_models(balances)
    finally:
        await async_engine.dispose()


def test_streams_and_snapshots_are_behind_the_tenant_wall(app_engine: Engine, engine: Engine) -> None:
    seed(app_engine)
    factory = sa_patterns.install(sessionmaker(app_engine))
    with sa_patterns.tenant_scope(1), factory() as session:
        store = EventStore(session, RlsEvent, registry=events, snapshots=RlsSnapshot)
        assert [(e.tenant_id, e.version) for e in store.read("acc-1")] == [(1, v) for v in range(1, 6)]
        assert store.version("acc-3") == 0  # tenant 2's stream of that id is not there for tenant 1
        for table in ("es_rls_events", "es_rls_snapshots"):
            assert session.execute(text(f"SELECT DISTINCT tenant_id FROM {table}")).all() == [(1,)]
        # appending to (or snapshotting) another tenant's stream is refused by WITH CHECK
        with pytest.raises(TenantViolation, match="row-level security"):
            session.execute(text(
                "INSERT INTO es_rls_events (tenant_id, aggregate_id, version, event_type, data) "
                "VALUES (2, 'acc-3', 6, 'account.opened', '{\"owner\": \"x\"}')"
            ))
        session.rollback()
        with pytest.raises(TenantViolation, match="row-level security"):
            session.execute(text(
                "INSERT INTO es_rls_snapshots (tenant_id, aggregate_type, aggregate_id, version, "
                "schema_version, state) VALUES (2, 'Account', 'acc-3', 5, 1, '{}')"
            ))
        session.rollback()
        # a stream of the same id in tenant 1 is its own stream, starting at version 1
        account = store.load(Account, "acc-3")
        account.open("tenant one")
        store.save(account)
        session.commit()
    assert sql(engine, "SELECT tenant_id, version FROM es_rls_events WHERE aggregate_id = 'acc-3' "
                       "ORDER BY 1, 2") == [(1, 1)] + [(2, v) for v in range(1, 6)]
    with app_engine.connect() as conn:
        # no tenant: nothing; a forged app.all_tenants: still nothing (its policy is the owner's)
        for forged in ("", "on"):
            conn.execute(text("SELECT set_config('app.all_tenants', :v, true)"), {"v": forged})
            for table in ("es_rls_events", "es_rls_snapshots"):
                assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
        conn.rollback()
    # what autogenerate writes: FORCE'd RLS and the tenant policy on both, the owner's read policy
    assert sql(engine, "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                       "WHERE relname IN ('es_rls_events', 'es_rls_snapshots') ORDER BY 1") == [
        ("es_rls_events", True, True), ("es_rls_snapshots", True, True)
    ]
    assert sql(engine, "SELECT tablename, policyname, cmd, roles::text[] FROM pg_policies "
                       "WHERE tablename IN ('es_rls_events', 'es_rls_snapshots') ORDER BY 1, 2") == [
        ("es_rls_events", "es_rls_events_log_reader", "SELECT", [OWNER_ROLE]),
        ("es_rls_events", "es_rls_events_tenant_admin", "ALL", [ADMIN_ROLE]),
        ("es_rls_events", "es_rls_events_tenant_isolation", "ALL", ["public"]),
        ("es_rls_events", "es_rls_events_tenant_owner", "ALL", [OWNER_ROLE]),
        ("es_rls_snapshots", "es_rls_snapshots_tenant_admin", "ALL", [ADMIN_ROLE]),
        ("es_rls_snapshots", "es_rls_snapshots_tenant_isolation", "ALL", ["public"]),
        ("es_rls_snapshots", "es_rls_snapshots_tenant_owner", "ALL", [OWNER_ROLE]),
    ]


def test_the_reader_functions_are_the_only_way_across(engine: Engine, app_engine: Engine) -> None:
    """SECURITY DEFINER, owned by the owner, search_path pinned, EXECUTE for the runner role only."""
    rows = sql(engine, """
        SELECT p.proname, p.prosecdef, p.proowner::regrole::text, p.proconfig,
               ARRAY(SELECT coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC')
                     FROM aclexplode(p.proacl) a ORDER BY 1)
        FROM pg_proc p WHERE p.proname LIKE 'es_rls_events_log_%' ORDER BY 1""")
    pinned = ["search_path=pg_catalog, pg_temp"]
    assert rows == [
        (name, True, OWNER_ROLE, pinned, sorted([APP_ROLE, OWNER_ROLE]))
        for name in ("es_rls_events_log_after", "es_rls_events_log_end", "es_rls_events_log_tenants")
    ]
    seed(app_engine)
    with app_engine.connect() as conn:
        got = conn.execute(text("SELECT tenant_id, count(*) FROM es_rls_events_log_after(0, 0, 1000) GROUP BY 1 ORDER BY 1"))
        assert got.all() == sorted(EVENTS.items())
        # the call leaves no trace: app.all_tenants is back to what it was
        assert conn.execute(text("SELECT current_setting('app.all_tenants', true)")).scalar() in (None, "")
        assert conn.execute(text("SELECT count(*) FROM es_rls_events")).scalar_one() == 0
        tenants = conn.execute(text("SELECT tenant_id FROM es_rls_events_log_tenants() ORDER BY 1"))
        assert tenants.scalars().all() == sorted(ACCOUNTS)
        # a look-alike of the caller's own (a temporary table of that name, with a policy of
        # that name and a forged event) is never what the function reads
        conn.execute(text("CREATE TEMP TABLE es_rls_events AS SELECT * FROM es_rls_events_log_after(0, 0, 0)"))
        conn.execute(text("ALTER TABLE es_rls_events ENABLE ROW LEVEL SECURITY"))
        conn.execute(text("CREATE POLICY es_rls_events_log_reader ON es_rls_events USING (true)"))
        conn.execute(text("INSERT INTO es_rls_events (id, tenant_id, transaction_id) VALUES (-1, 99, 1)"))
        got = conn.execute(text("SELECT tenant_id, count(*) FROM es_rls_events_log_after(0, 0, 1000) GROUP BY 1 ORDER BY 1"))
        assert got.all() == sorted(EVENTS.items())


def test_a_runner_without_the_deliberate_path_raises(app_engine: Engine, engine: Engine, db_schema: str) -> None:
    seed(app_engine)
    # 1. a model that does not know the log is under RLS reads it directly and would see nothing
    unaware = RlsEvent.__table__.to_metadata(MetaData())
    direct = ProjectionRunner(app_engine, unaware, checkpoints=RlsCheckpoint, registry=events,
                              projections=[balance_projection()])
    with pytest.raises(ConfigurationError, match="under row-level security for role") as caught:
        direct.catch_up()
    assert APP_ROLE in str(caught.value) and "__rls__ = True" in str(caught.value)
    # 2. the reader functions, without EXECUTE for the runner's role
    with engine.begin() as conn:
        conn.execute(text(f"REVOKE EXECUTE ON FUNCTION {READERS} FROM {quote(APP_ROLE)}"))
    try:
        with pytest.raises(MissingGrant, match="may not execute its reader functions") as caught:
            runner(app_engine).catch_up()
        assert f"GRANT EXECUTE ON FUNCTION {READERS} TO {APP_ROLE}" in str(caught.value)
        with pytest.raises(MissingGrant, match="may not execute"):
            runner(app_engine).rebuild("rls_balances")
        # on an engine install() has not seen as well (no wall hook naming the grant first)
        fresh = create_engine(app_engine.url, connect_args={"options": f"-csearch_path={db_schema},public"})
        try:
            with pytest.raises(MissingGrant, match="may not execute"):
                runner(fresh).run_once()
        finally:
            fresh.dispose()
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"GRANT EXECUTE ON FUNCTION {READERS} TO {quote(APP_ROLE)}"))
    # nothing was applied, nothing moved
    assert read_models(engine) == ([], [])
    assert sql(engine, "SELECT count(*) FROM es_rls_checkpoints") == [(0,)]


def test_reader_functions_not_migrated_yet_are_named(app_engine: Engine) -> None:
    class Base(DeclarativeBase):
        pass

    class Unmigrated(EventMixin, TenantMixin, Base):
        __tablename__ = "es_rls_unmigrated"

    unmigrated = ProjectionRunner(app_engine, Unmigrated, checkpoints=RlsCheckpoint, registry=events,
                                  projections=[balance_projection()])
    with pytest.raises(ConfigurationError, match="reader functions of the event log es_rls_unmigrated do not exist"):
        unmigrated.catch_up()


def test_a_log_under_rls_needs_snapshots_under_it_too() -> None:
    class Base(DeclarativeBase):
        pass

    class Log(EventMixin, TenantMixin, Base):
        __tablename__ = "es_rls_cfg_events"

    class OpenSnapshot(SnapshotMixin, TenantMixin, Base):
        __tablename__ = "es_rls_cfg_snapshots"
        __rls__ = False

    with pytest.raises(ConfigurationError, match="same tenant wall"):
        EventStore(Session(), Log, registry=events, snapshots=OpenSnapshot)
    with pytest.raises(ConfigurationError, match="__runner_role__ only makes sense"):
        class Plain(EventMixin, Base):
            __tablename__ = "es_rls_cfg_plain"
            __runner_role__ = "someone"


def test_the_doctor_run_as_the_app_role_finds_the_readers_as_declared(app_engine: Engine) -> None:
    """The live comparison (a probe of each declared object, as the doctor runs it) sees the
    reader functions and the owner's read policy exactly as the models declare them."""
    metadata = RlsBase.metadata
    with use_roles(ROLES), app_engine.connect() as conn:
        wanted = registered(metadata)
        changes = diff(conn, wanted, metadata.sorted_tables)
        found = drifts(conn, wanted, changes, [(t.schema, t.name) for t in tenant_tables(metadata)])
        conn.rollback()
    assert {e.name for e in wanted if isinstance(e, LogReader)} == {
        "es_rls_events_log_after", "es_rls_events_log_end", "es_rls_events_log_tenants"
    }
    assert (changes.create, changes.replace, changes.drop) == ([], [], [])
    assert [d.message() for d in found] == []
