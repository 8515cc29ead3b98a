"""Refreshing materialized views: dependency order from pg_depend, concurrent refresh under
readers, the CLI, and the pg_cron migration op.

The materialized views of the dependency graph are made by hand (DDL, the owner role's): with
no refresh function, PostgreSQL refreshes them only for their owner, so those refreshes are the
owner's (``owner_session``, ``owner_connection``, the CLI with the owner's login). Models built
the toolkit's way get a refresh function: the concurrency test's writer and readers are the
plugin's app role (NOSUPERUSER NOBYPASSRLS, owning nothing)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import URL, Connection, Engine, Index, MetaData, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
import sa_patterns.alembic
from sa_patterns.alembic.schedule import ScheduleRefreshOp, UnscheduleRefreshOp, refresh_command
from sa_patterns.cli import main as cli
from sa_patterns.errors import ConfigurationError
from sa_patterns.schema import quote_literal
from sa_patterns.schema.access import manage_access
from sa_patterns.testing.logins import RunRoles
from sa_patterns.views import MaterializedView


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # the role model, nothing built: each test makes what it refreshes


# r_b reads the view r_link, which was re-pointed at r_c *after* r_b was created: the right
# order (r_c, then r_b) contradicts both creation (oid) order and name order.
GRAPH = """
CREATE TABLE r_base (id serial PRIMARY KEY, k int NOT NULL, v int NOT NULL);
INSERT INTO r_base (k, v) SELECT g % 3, g FROM generate_series(1, 30) g;
CREATE VIEW r_link AS SELECT 0 AS k, 0 AS total;
CREATE MATERIALIZED VIEW r_b AS SELECT k, total * 2 AS doubled FROM r_link;
CREATE UNIQUE INDEX r_b_k ON r_b (k);
CREATE MATERIALIZED VIEW r_c AS SELECT k, sum(v)::int AS total FROM r_base GROUP BY k;
CREATE UNIQUE INDEX r_c_k ON r_c (k);
CREATE OR REPLACE VIEW r_link AS SELECT k, total FROM r_c;
"""


def build_graph(conn: Connection) -> None:
    for statement in GRAPH.strip().split(";\n"):
        conn.execute(text(statement))
    conn.execute(text("INSERT INTO r_base (k, v) VALUES (0, 1000)"))  # after both were filled


def expected_doubled(conn: Connection) -> dict[int, int]:
    return {k: 2 * t for k, t in conn.execute(text("SELECT k, sum(v) FROM r_base GROUP BY k"))}


def test_refresh_all_follows_pg_depend(owner_session: Session, owner_connection: Connection, db_schema: str) -> None:
    """The owner's: it made the views, which have no refresh function."""
    session, connection = owner_session, owner_connection
    build_graph(connection)
    oids = dict(connection.execute(text("SELECT relname, oid::int FROM pg_class WHERE relname IN ('r_b', 'r_c') AND relnamespace = current_schema()::regnamespace")).all())
    assert oids["r_b"] < oids["r_c"]  # creation order would refresh r_b first: wrong
    refreshed = sa_patterns.refresh_all(session, schemas=[db_schema])
    assert refreshed == [f"{db_schema}.r_c", f"{db_schema}.r_b"]
    # one pass was enough: r_b already sees the fresh r_c
    assert dict(connection.execute(text("SELECT k, doubled FROM r_b")).all()) == expected_doubled(connection)
    assert sa_patterns.refresh_all(session, concurrently=True, schemas=[db_schema]) == refreshed


async def test_refresh_all_async(owner_async_session: AsyncSession, db_schema: str) -> None:
    """The owner's: it made the views, which have no refresh function."""
    async_session = owner_async_session
    await async_session.run_sync(lambda s: build_graph(s.connection()))
    refreshed = await sa_patterns.refresh_all(async_session, concurrently=True, schemas=[db_schema])
    assert refreshed == [f"{db_schema}.r_c", f"{db_schema}.r_b"]
    rows = (await async_session.execute(text("SELECT k, doubled FROM r_b"))).all()
    expected = await async_session.run_sync(lambda s: expected_doubled(s.connection()))
    assert dict(rows) == expected  # type: ignore[arg-type]


def test_refresh_all_concurrently_checks_every_view_first(
    owner_session: Session, owner_connection: Connection, db_schema: str
) -> None:
    """The owner's: it made the views (and drops an index)."""
    session, connection = owner_session, owner_connection
    build_graph(connection)
    connection.execute(text("DROP INDEX r_b_k"))
    before = connection.execute(text("SELECT count(*) FROM r_c")).scalar()
    connection.execute(text("INSERT INTO r_base (k, v) VALUES (7, 7)"))
    with pytest.raises(ConfigurationError, match=r"nothing refreshed, .*r_b lack\(s\) a unique index"):
        sa_patterns.refresh_all(session, concurrently=True, schemas=[db_schema])
    assert connection.execute(text("SELECT count(*) FROM r_c")).scalar() == before  # r_c untouched


def test_refresh_of_a_missing_view_says_how_to_fix(session: Session) -> None:
    class B(DeclarativeBase):
        metadata = MetaData()

    class Thing(B):
        __tablename__ = "r_things"
        id: Mapped[int] = mapped_column(primary_key=True)

    class NeverMigrated(MaterializedView, B):
        __tablename__ = "r_never_migrated"
        __select__ = select(Thing.id)
        id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(ConfigurationError, match="does not exist in this database; apply the migrations"):
        NeverMigrated.refresh(session)


def test_cli_refresh(
    owner_engine: Engine, pg_url: URL, db_roles: RunRoles, db_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The owner's views (committed, dropped after), refreshed by the CLI logged in as the owner."""
    engine = owner_engine
    owner_url = db_roles.url(pg_url, db_roles.owner).render_as_string(hide_password=False)
    with engine.begin() as conn:
        build_graph(conn)
    try:
        assert cli(["refresh", "--concurrently", "--schema", db_schema, "--url", owner_url]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [f"refreshed concurrently {db_schema}.r_c", f"refreshed concurrently {db_schema}.r_b"]
        with engine.connect() as conn:  # committed
            assert dict(conn.execute(text("SELECT k, doubled FROM r_b")).all()) == expected_doubled(conn)
            conn.execute(text("DROP INDEX r_c_k"))
            conn.commit()
        assert cli(["refresh", "--concurrently", "--schema", db_schema, "--url", owner_url]) == 2
        assert "r_c lack(s) a unique index" in capsys.readouterr().err
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE r_base CASCADE"))
            conn.execute(text("DROP MATERIALIZED VIEW IF EXISTS r_b, r_c CASCADE"))


def test_cli_failure_is_two_lines_and_the_traceback_is_for_debug(capsys: pytest.CaptureFixture[str]) -> None:
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"  # nothing listens on port 1
    assert cli(["refresh", "--url", unreachable]) == 1
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert len(lines) == 2 and captured.out == ""
    assert lines[0].startswith(f"sa-patterns refresh: cannot connect to {unreachable}: ")
    assert "point to it" in lines[1] and "--debug" in lines[1]
    with pytest.raises(OperationalError):
        cli(["refresh", "--url", unreachable, "--debug"])
    assert cli(["refresh", "--url", "mysql://nobody@127.0.0.1/x"]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 2 and "must point at PostgreSQL" in captured.err


def test_schedule_refresh_op_sql() -> None:
    """pg_cron is not installed on the shared server (it needs shared_preload_libraries and a
    restart), so this checks the SQL the op emits, in offline (--sql) mode."""
    buffer = io.StringIO()
    ctx = MigrationContext.configure(dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer})
    op = Operations(ctx)
    op.schedule_refresh("sales daily", "*/15 * * * *", schema="rep'orts", concurrently=True)  # type: ignore[attr-defined]
    op.schedule_refresh("totals", "30 seconds", database="app", job_name="totals")  # type: ignore[attr-defined]
    op.unschedule_refresh("sales daily", schema="rep'orts")  # type: ignore[attr-defined]
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    assert lines == [
        "SELECT cron.schedule('sa_patterns refresh \"rep''orts\".\"sales daily\"', '*/15 * * * *', "
        "'REFRESH MATERIALIZED VIEW CONCURRENTLY \"rep''orts\".\"sales daily\"');",
        "SELECT cron.schedule_in_database('totals', '30 seconds', 'REFRESH MATERIALIZED VIEW totals', 'app');",
        "SELECT cron.unschedule('sa_patterns refresh \"rep''orts\".\"sales daily\"');",
    ]
    scheduled = ScheduleRefreshOp("totals", "0 * * * *")
    assert isinstance(scheduled.reverse(), UnscheduleRefreshOp)
    assert scheduled.reverse().reverse() is scheduled
    assert scheduled.to_diff_tuple() == ("schedule_refresh", "sa_patterns refresh totals", "0 * * * *")


def test_scheduled_command_is_valid_sql(owner_connection: Connection) -> None:
    """The command pg_cron would run is a REFRESH that PostgreSQL accepts, run as the views'
    owner (the only role PostgreSQL lets refresh them; pg_cron runs a job as its owner)."""
    connection = owner_connection
    build_graph(connection)
    scheduled = ScheduleRefreshOp("r_c", "* * * * *", concurrently=True).sql()
    command = refresh_command("r_c", concurrently=True)
    assert quote_literal(command) in scheduled
    connection.execute(text(command))
    assert connection.execute(text("SELECT count(*) FROM r_c")).scalar() == 3


# -- reliability -------------------------------------------------------------------------------


class RBase(DeclarativeBase):
    metadata = MetaData()


class Ledger(RBase):
    __tablename__ = "rel_ledger"
    id: Mapped[int] = mapped_column(primary_key=True)
    grp: Mapped[int]
    amount: Mapped[int]
    gen: Mapped[int]


class LedgerSummary(MaterializedView, RBase):
    __tablename__ = "rel_ledger_summary"
    __table_args__ = (Index("rel_ledger_summary_grp", "grp", unique=True),)
    __select__ = select(
        Ledger.grp,
        func.sum(Ledger.amount).label("total"),
        func.min(Ledger.gen).label("gen_min"),
        func.max(Ledger.gen).label("gen_max"),
        func.count().label("n"),
    ).group_by(Ledger.grp)
    grp: Mapped[int] = mapped_column(primary_key=True)
    total: Mapped[int]
    gen_min: Mapped[int]
    gen_max: Mapped[int]
    n: Mapped[int]


manage_access(RBase.metadata)  # the app role's grants, EXECUTE on the refresh function included

GROUPS, PER_GROUP, GENERATIONS, READERS = 200, 25, 6, 4


@pytest.fixture
def ledger(owner_engine: Engine, engine: Engine) -> Iterator[int]:
    """RBase built by the owner (committed); seeded and first refreshed by the app role; the
    owner drops it after (not drop_all: that would revoke the schema's access too)."""
    with owner_engine.begin() as conn:
        sa_patterns.create_all(conn, RBase.metadata)
    try:
        with sa_patterns.install(sessionmaker(engine)).begin() as session:
            session.execute(text(
                "INSERT INTO rel_ledger (id, grp, amount, gen) "
                "SELECT g, g % :groups, 100, 0 FROM generate_series(1, :rows) g"
            ), {"groups": GROUPS, "rows": GROUPS * PER_GROUP})
            LedgerSummary.refresh(session)
        yield GROUPS * PER_GROUP * 100
    finally:
        with owner_engine.begin() as conn:
            conn.execute(text("DROP TABLE rel_ledger CASCADE"))
            conn.execute(text("DROP FUNCTION rel_ledger_summary_refresh(boolean)"))
            conn.execute(text("DROP TABLE sa_patterns_matview_refreshes"))


def test_concurrent_refresh_never_shows_readers_a_half_refreshed_view(engine: Engine, ledger: int) -> None:
    """4 readers loop over the view while it is refreshed CONCURRENTLY after each of several
    writes. Each write moves money between groups (the total never changes) and stamps every
    row with a new generation, so a reader seeing a mix of old and new rows would see two
    generations or a wrong total. Writer and readers are the app role; the refreshes go
    through the view's refresh function."""
    total = ledger
    done = threading.Event()
    seen: list[set[int]] = [set() for _ in range(READERS)]
    problems: list[str] = []
    reads = [0] * READERS

    def reader(i: int) -> None:
        try:
            with engine.connect() as conn:
                while not done.is_set():
                    with conn.begin():
                        groups, got, low, high, rows = conn.execute(text(
                            "SELECT count(*), sum(total), min(gen_min), max(gen_max), sum(n) FROM rel_ledger_summary"
                        )).one()
                    reads[i] += 1
                    seen[i].add(low)
                    if (groups, got, rows) != (GROUPS, total, GROUPS * PER_GROUP) or low != high:
                        problems.append(f"reader {i}: groups={groups} total={got} gens={low}..{high} rows={rows}")
        except Exception as exc:  # surfaced by the assertion below
            problems.append(f"reader {i} failed: {exc!r}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    for t in threads:
        t.start()
    Session = sessionmaker(engine)
    sa_patterns.install(Session)
    try:
        for gen in range(1, GENERATIONS + 1):
            with Session.begin() as session:
                session.execute(text(
                    "UPDATE rel_ledger SET gen = :gen, amount = amount + CASE WHEN grp % 2 = 0 THEN 1 ELSE -1 END"
                ), {"gen": gen})
                LedgerSummary.refresh(session, concurrently=True)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert problems == []
    assert all(reads), reads
    with engine.connect() as conn:
        assert conn.execute(text("SELECT min(gen_min), max(gen_max) FROM rel_ledger_summary")).one() == (GENERATIONS, GENERATIONS)
    # the readers did read while refreshes happened: together they saw several generations
    assert len(set().union(*seen)) >= 2
