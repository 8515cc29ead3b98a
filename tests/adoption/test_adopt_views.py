"""A view and materialized views added over populated tables: the revision autogenerate writes
runs while a writer writes both tables and a reader reads them, each statement under
``lock_timeout = 200ms``, and each materialized view's query takes 0.6 s (a ``pg_sleep`` in it).
``CREATE MATERIALIZED VIEW ... WITH DATA`` holds ACCESS SHARE on the tables it reads, so the
writer goes on; the materialized view over a row-level-security table needs a refresh policy on
it (ACCESS EXCLUSIVE), so it is created empty and populated after the transaction
(``op.populate_materialized_view``): no writer statement waits on the policy during the
population. Afterwards the views are readable and hold what their queries return, a concurrent
refresh works (its unique index is valid), a second autogenerate is empty, the linter finds
nothing blocking, and the downgrade drops them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, MetaData, text
from test_adopt_history import AlembicProject, Load, project_url

N_ROWS = 3000

MODELS = '''
from sqlalchemy import Index, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import MaterializedView, TenantMixin, View


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "av_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[int]
    amount: Mapped[int]


class Doc(TenantMixin, Base):
    __tablename__ = "av_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))

{views}
'''

VIEWS = '''
SLOW = select(func.pg_sleep(0.6)).scalar_subquery().is_not(None)


class Totals(View, Base):
    __tablename__ = "av_totals"
    __select__ = select(Order.customer, func.sum(Order.amount).label("total")).group_by(Order.customer)
    customer: Mapped[int] = mapped_column(primary_key=True)
    total: Mapped[int]


class StoredTotals(MaterializedView, Base):
    __tablename__ = "av_stored_totals"
    __table_args__ = (Index("av_stored_totals_customer", "customer", unique=True),)
    __select__ = (select(Order.customer, func.sum(Order.amount).label("total"))
                  .where(SLOW).group_by(Order.customer))
    customer: Mapped[int] = mapped_column(primary_key=True)
    total: Mapped[int]

'''

WALLED = '''

class DocKinds(MaterializedView, Base):
    __tablename__ = "av_doc_kinds"
    __table_args__ = (Index("av_doc_kinds_kind", "kind", unique=True),)
    __select__ = select(Doc.kind, func.count().label("n")).where(SLOW).group_by(Doc.kind)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    n: Mapped[int]
'''


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # nothing built by the plugin: the migrations build


@pytest.fixture
def project(tmp_path: Path, owner_engine: Engine, db_schema: str, superuser_engine: Engine) -> Iterator[AlembicProject]:
    proj = AlembicProject(tmp_path, project_url(owner_engine, db_schema), MODELS.format(views=""))
    proj.revision("base")
    proj.ok("alembic", "upgrade", "head")
    with owner_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
        conn.execute(text("INSERT INTO av_orders SELECT g, g % 50, g % 7 FROM generate_series(1, :n) g"), {"n": N_ROWS})
        conn.execute(text("INSERT INTO av_docs (id, tenant_id, kind) SELECT g, 1 + g % 3, 'k' || g % 5 "
                          "FROM generate_series(1, :n) g"), {"n": N_ROWS})
    yield proj
    with superuser_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        conn.execute(text("DROP VIEW IF EXISTS av_totals"))
        for view in ("av_stored_totals", "av_doc_kinds"):
            conn.execute(text(f"DROP MATERIALIZED VIEW IF EXISTS {view} CASCADE"))
        for table in ("av_orders", "av_docs", "alembic_version", "sa_patterns_matview_refreshes"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        for function in ("av_stored_totals_refresh", "av_doc_kinds_refresh"):
            conn.execute(text(f"DROP FUNCTION IF EXISTS {function}(boolean)"))


def write(conn: Connection, rng: random.Random) -> None:
    conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
    if rng.random() < 0.5:
        conn.execute(text("UPDATE av_orders SET amount = amount + 1 WHERE id = :id"), {"id": rng.randint(1, N_ROWS)})
    else:
        conn.execute(text("UPDATE av_docs SET kind = 'k' || (:k)::text WHERE id = :id"),
                     {"id": rng.randint(1, N_ROWS), "k": rng.randint(0, 4)})


def read(conn: Connection, rng: random.Random) -> None:
    conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
    conn.execute(text("SELECT count(*) FROM av_orders WHERE id > :lo"), {"lo": rng.randint(0, N_ROWS)})
    conn.execute(text("SELECT count(*) FROM av_docs WHERE id > :lo"), {"lo": rng.randint(0, N_ROWS)})


@pytest.mark.parametrize("walled", [False, True], ids=["plain", "over_rls"])
def test_views_over_populated_tables_block_no_writer(
    walled: bool, project: AlembicProject, superuser_engine: Engine, engine: Engine, db_schema: str
) -> None:
    project.models(MODELS.format(views=VIEWS + (WALLED if walled else "")))
    path = project.revision("adopt")
    upgrade = project.upgrade_ops(path)
    if not walled:
        # nothing else locked: filled in the transaction, under ACCESS SHARE on av_orders (0.6 s,
        # while the writer's statements wait at most 200 ms)
        assert not [line for line in upgrade if "materialized_view" in line], upgrade
    else:
        # the refresh policy on av_docs locks it until the commit: both materialized views are
        # created empty in that transaction and populated after it (their queries run unlocked)
        assert [line for line in upgrade if line.startswith("op.create_materialized_view_empty(")] == [
            "op.create_materialized_view_empty(sa_patterns.schema.MaterializedView(schema=None,",
            "op.create_materialized_view_empty(sa_patterns.views.RlsMaterializedView(schema=None,"]
        assert upgrade[-2:] == [
            "op.populate_materialized_view('av_stored_totals', refresh_function='av_stored_totals_refresh')",
            "op.populate_materialized_view('av_doc_kinds', refresh_function='av_doc_kinds_refresh')"]

    writer, reader = Load(project.url, write), Load(project.url, read, seed=7)
    for load in (writer, reader):
        load.start()
        assert load.started.wait(10)
    try:
        project.ok("alembic", "upgrade", "head")
    finally:
        writer.finish(0)
        reader.finish(0)
    assert writer.errors == [] and reader.errors == [], [str(e)[:400] for e in (writer.errors + reader.errors)[:3]]
    print(f"\nwriter: {writer.done} writes, longest {writer.longest * 1000:.0f} ms; reader: {reader.done} reads")

    # readable by the application, and refreshed concurrently (the unique indexes are valid)
    views = ["av_stored_totals", "av_doc_kinds"] if walled else ["av_stored_totals"]
    with engine.begin() as conn:
        for view in views:
            conn.execute(text(f"SELECT {view}_refresh(true)"))
    with superuser_engine.connect() as conn:
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        assert sorted(conn.execute(text("SELECT customer, total FROM av_totals")).all()) == sorted(
            conn.execute(text("SELECT customer, sum(amount) FROM av_orders GROUP BY 1")).all())
        assert sorted(conn.execute(text("SELECT customer, total FROM av_stored_totals")).all()) == sorted(
            conn.execute(text("SELECT customer, sum(amount) FROM av_orders GROUP BY 1")).all())
        if walled:  # every tenant's rows (the refresh policy let the owner read them all)
            assert sorted(conn.execute(text("SELECT kind, n FROM av_doc_kinds")).all()) == sorted(
                conn.execute(text("SELECT kind, count(*) FROM av_docs GROUP BY 1")).all())
            assert conn.scalar(text("SELECT sum(n) FROM av_doc_kinds")) == N_ROWS
        assert conn.scalar(text(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "WHERE c.relname = ANY(:v) AND i.indisunique AND i.indisvalid"), {"v": views}) == len(views)

    assert "No new upgrade operations detected" in project.ok("alembic", "check")
    assert project.blocking_findings(path) == []
    offline = project.ok("alembic", "upgrade", "base:head", "--sql")
    assert ("WITH NO DATA" in offline) is walled
    assert ("SELECT av_doc_kinds_refresh(false)" in offline) is walled

    project.ok("alembic", "downgrade", "-1")
    with superuser_engine.connect() as conn:
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        assert [conn.scalar(text("SELECT to_regclass(:n)"), {"n": n})
                for n in ("av_totals", "av_stored_totals", "av_doc_kinds")] == [None, None, None]
        assert conn.scalar(text("SELECT count(*) FROM pg_policies WHERE policyname LIKE '%matview_refresh'")) == 0
