"""Views through Alembic autogenerate: create, no false diff, replace in place, rebuild with
dependents and matview indexes in pg_depend order, table column changes, downgrade.

A chain is used throughout: view ``region_totals`` ← materialized view ``top_regions`` (with
a unique index) ← view ``top_region_names``. Assertions read the catalog.

Migrations run as the owner role (not a superuser), as a deployment runs them, on a schema
the plugin made for it with nothing built; the catalog is read as the owner too."""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.operations.ops import ModifyTableOps
from sqlalchemy import (
    URL,
    BigInteger,
    Engine,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic
from sa_patterns.alembic.ops import CreateEntityOp, DropEntityOp, ReplaceEntityOp
from sa_patterns.cli.init import init
from sa_patterns.errors import ConfigurationError
from sa_patterns.schema import View as ViewEntity
from sa_patterns.schema import register
from sa_patterns.testing.logins import RunRoles
from sa_patterns.views import MaterializedView, View


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # the role model, nothing built: the migrations build


def build(variant: str = "base") -> MetaData:
    class Base(DeclarativeBase):
        metadata = MetaData()

    class Sale(Base):
        __tablename__ = "sales"
        id: Mapped[int] = mapped_column(primary_key=True)
        region: Mapped[str] = mapped_column(String(20))
        amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
        qty: Mapped[int] = mapped_column(BigInteger if variant == "qty_bigint" else Integer)

    columns = [Sale.region, func.sum(Sale.amount).label("total")]
    if variant == "add_column":
        columns.append(func.count().label("n"))
    query = select(*columns).group_by(Sale.region)
    if variant == "filter":
        query = query.where(Sale.amount > 0)

    class RegionTotals(View, Base):
        __tablename__ = "region_totals"
        __select__ = query
        region: Mapped[str] = mapped_column(primary_key=True)
        total: Mapped[Decimal]

    index_args: tuple[Index, ...] = (Index("top_regions_region", "region", unique=True),)
    if variant == "second_index":
        index_args += (Index("top_regions_total", "total"),)

    class TopRegions(MaterializedView, Base):
        __tablename__ = "top_regions"
        __table_args__ = index_args
        __select__ = select(RegionTotals.region, RegionTotals.total).where(
            RegionTotals.total > (20 if variant == "matview_query" else 10)
        )
        region: Mapped[str] = mapped_column(primary_key=True)
        total: Mapped[Decimal]

    class TopRegionNames(View, Base):
        __tablename__ = "top_region_names"
        __select__ = select(TopRegions.region)
        region: Mapped[str] = mapped_column(primary_key=True)

    class SaleQty(View, Base):
        __tablename__ = "sale_qty"
        # a "%" literal travels through migrations, the savepoint comparison and the catalog
        __select__ = select(Sale.id, Sale.qty).where(Sale.region.not_like("%tmp%"))
        id: Mapped[int] = mapped_column(primary_key=True)
        qty: Mapped[int]

    return Base.metadata


def migrate(engine: Engine, md: MetaData) -> tuple[list[object], list[object]]:
    """Autogenerate against ``md`` and apply; returns (upgrade ops, downgrade ops)."""
    with engine.begin() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        script = produce_migrations(ctx, md)
        run(Operations(ctx), script.upgrade_ops.ops)
        return list(script.upgrade_ops.ops), list(script.downgrade_ops.ops)


def run(op: Operations, ops: list[Any]) -> None:
    for migrate_op in ops:
        if isinstance(migrate_op, ModifyTableOps):
            run(op, migrate_op.ops)
        else:
            op.invoke(migrate_op)


def downgrade(engine: Engine, ops: list[Any]) -> None:
    with engine.begin() as conn:
        run(Operations(MigrationContext.configure(conn)), ops)


def diffs(engine: Engine, md: MetaData) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        return list(compare_metadata(ctx, md))


def relations(engine: Engine) -> dict[str, tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT relname, relkind, oid::int FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
            "AND relkind IN ('r', 'v', 'm', 'i')"
        ))
        return {name: (kind, oid) for name, kind, oid in rows}


def described(ops: list[object]) -> list[tuple[str, str]]:
    out = []
    for op in ops:
        if isinstance(op, (CreateEntityOp, DropEntityOp, ReplaceEntityOp)):
            out.append((type(op).__name__.removesuffix("EntityOp"), op.entity.describe().split(" ", 1)[1]))
        else:
            out.append((type(op).__name__, ""))
    return out


def _drop_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS sales CASCADE"))
        conn.execute(text("DROP TABLE IF EXISTS sa_patterns_matview_refreshes"))


@pytest.fixture
def clean(owner_engine: Engine):  # type: ignore[no-untyped-def]
    # before too: a test that ran earlier in the module may have left the refresh log behind
    _drop_tables(owner_engine)
    yield
    _drop_tables(owner_engine)


def test_lifecycle(owner_engine: Engine, clean) -> None:  # type: ignore[no-untyped-def]
    engine = owner_engine  # migrations and catalog checks: the owner's
    up, _ = migrate(engine, build())
    kinds = described(up)
    # the table and the refresh log (sa_patterns_matview_refreshes) come first
    assert kinds[:2] == [("CreateTableOp", "")] * 2
    assert kinds[2:] == [
        ("Create", "region_totals"), ("Create", "top_regions"), ("Create", "top_region_names"), ("Create", "sale_qty"),
        ("Create", "top_regions_refresh"),  # the materialized view's refresh function
    ]  # declaration order = dependency order, after the table
    rel = relations(engine)
    assert rel["region_totals"][0] == "v" and rel["top_regions"][0] == "m" and rel["top_regions_region"][0] == "i"
    assert diffs(engine, build()) == []  # no false diff

    # 1. same columns, new query: CREATE OR REPLACE in place, nothing else touched
    up, down = migrate(engine, build("filter"))
    assert described(up) == [("Replace", "region_totals")]
    after = relations(engine)
    assert after["region_totals"][1] == rel["region_totals"][1]  # same object, replaced in place
    assert after["top_regions"][1] == rel["top_regions"][1]
    assert diffs(engine, build("filter")) == []
    downgrade(engine, down)
    assert diffs(engine, build()) == []

    # 2. an added column: rebuild the view and everything reading it, indexes included
    up, down = migrate(engine, build("add_column"))
    assert described(up) == [
        ("Drop", "top_region_names"), ("Drop", "top_regions"), ("Drop", "region_totals"),
        ("Create", "region_totals"), ("Create", "top_regions"), ("Create", "top_region_names"),
    ]
    after = relations(engine)
    assert after["top_regions"][1] != rel["top_regions"][1]
    assert after["top_regions_region"][0] == "i"  # the unique index came back with the matview
    with engine.connect() as conn:
        cols = conn.execute(text("SELECT attname FROM pg_attribute WHERE attrelid = 'region_totals'::regclass AND attnum > 0 ORDER BY attnum")).scalars().all()
    assert cols == ["region", "total", "n"]
    assert diffs(engine, build("add_column")) == []
    downgrade(engine, down)
    assert diffs(engine, build()) == []
    assert "top_regions_region" in relations(engine)

    # 3. an index-only change on the matview: the index alone, no rebuild
    before = relations(engine)
    up, down = migrate(engine, build("second_index"))
    assert described(up) == [("Replace", "top_regions")]
    after = relations(engine)
    assert after["top_regions"][1] == before["top_regions"][1] and after["top_regions_total"][0] == "i"
    assert diffs(engine, build("second_index")) == []
    downgrade(engine, down)
    assert "top_regions_total" not in relations(engine)
    assert diffs(engine, build()) == []

    # 3b. a materialized view's query changes: it and its dependent view are rebuilt
    up, down = migrate(engine, build("matview_query"))
    assert described(up) == [
        ("Drop", "top_region_names"), ("Drop", "top_regions"),
        ("Create", "top_regions"), ("Create", "top_region_names"),
    ]
    assert relations(engine)["top_regions_region"][0] == "i"
    assert diffs(engine, build("matview_query")) == []
    downgrade(engine, down)
    assert diffs(engine, build()) == []

    # 4. a table column type change: the views reading the table are rebuilt around the ALTER
    up, down = migrate(engine, build("qty_bigint"))
    names = described(up)
    assert names[0] == ("Drop", "sale_qty") and ("ModifyTableOps", "") in names and names[-1] == ("Create", "sale_qty")
    with engine.connect() as conn:
        qty_type = conn.execute(text("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'sale_qty'::regclass AND attname = 'qty'")).scalar()
    assert qty_type == "bigint"
    assert diffs(engine, build("qty_bigint")) == []
    downgrade(engine, down)
    assert diffs(engine, build()) == []

    # 5. models without the views: dropped dependents first; downgrade recreates them
    class Empty(DeclarativeBase):
        metadata = MetaData()

    up, down = migrate(engine, Empty.metadata)
    dropped = [name for kind, name in described(up) if kind == "Drop"]
    assert set(dropped) == {"sale_qty", "top_region_names", "top_regions", "region_totals", "top_regions_refresh"}
    assert dropped.index("top_region_names") < dropped.index("top_regions") < dropped.index("region_totals")
    assert described(up)[:5] == [("Drop", n) for n in dropped]  # before the table drop
    assert not any(kind in ("v", "m") for kind, _ in relations(engine).values())
    downgrade(engine, down)
    assert diffs(engine, build()) == []


def test_text_differences_postgres_prints_the_same_are_no_diff(owner_engine: Engine, clean) -> None:  # type: ignore[no-untyped-def]
    engine = owner_engine  # migrations and catalog checks: the owner's
    md = build()
    migrate(engine, md)
    # the same query written by hand, differently cased and spaced, with redundant parentheses
    register(md, ViewEntity(None, "sale_qty", definition="select sales.id,   (sales.qty)\n  from sales where (region) not like '%tmp%'"))
    assert diffs(engine, md) == []
    register(md, ViewEntity(None, "sale_qty", definition="SELECT id, qty FROM sales WHERE qty > 1"))
    assert [d[0] for d in diffs(engine, md)] == ["replace_entity"]  # type: ignore[index]


def test_unmanaged_dependent_stops_autogenerate(owner_engine: Engine, clean) -> None:  # type: ignore[no-untyped-def]
    engine = owner_engine  # migrations and catalog checks: the owner's
    migrate(engine, build())
    with engine.begin() as conn:
        conn.execute(text("CREATE VIEW hand_made AS SELECT region FROM region_totals"))
    with pytest.raises(ConfigurationError, match="hand_made reads a view or table this migration must rebuild"):
        diffs(engine, build("add_column"))
    with engine.begin() as conn:
        conn.execute(text("DROP VIEW hand_made"))


def test_command_line_roundtrip(tmp_path: Path, pg_url: URL, db_schema: str, db_roles: RunRoles) -> None:
    """init, revision --autogenerate, upgrade, check, a second revision, downgrade base: the
    owner creates the schema, runs the CLI and reads the catalog."""
    schema = f"{db_schema}_cli"
    owner = db_roles.url(pg_url, db_roles.owner)
    owner_db = create_engine(owner)
    with owner_db.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
    url = owner.update_query_dict({"options": f"-csearch_path={schema}"})
    cfg = Config(str(init(tmp_path / "migrations", metadata="unused:unused")))
    cfg.attributes["target_metadata"] = build()
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    try:
        command.revision(cfg, message="views", autogenerate=True, rev_id="r1")
        script = (tmp_path / "migrations" / "versions" / "r1_views.py").read_text()
        assert "op.create_entity(sa_patterns.schema.MaterializedView(" in script
        assert "CREATE UNIQUE INDEX top_regions_region ON top_regions (region)" in script
        command.upgrade(cfg, "head")
        command.check(cfg)
        cfg.attributes["target_metadata"] = build("add_column")
        cfg.cmd_opts = argparse.Namespace(autogenerate=True)
        command.revision(cfg, message="more", autogenerate=True, rev_id="r2")
        cfg.cmd_opts = None
        command.upgrade(cfg, "head")
        command.check(cfg)
        script2 = (tmp_path / "migrations" / "versions" / "r2_more.py").read_text()
        assert script2.index("op.drop_entity(sa_patterns.schema.View(schema=None, name='top_region_names'") < script2.index("op.drop_entity(sa_patterns.schema.MaterializedView(")
        command.downgrade(cfg, "r1")
        with owner_db.connect() as conn:
            cols = conn.execute(text(f"SELECT attname FROM pg_attribute WHERE attrelid = '{schema}.region_totals'::regclass AND attnum > 0")).scalars().all()
            index = conn.execute(text("SELECT count(*) FROM pg_indexes WHERE schemaname = :s AND indexname = 'top_regions_region'"), {"s": schema}).scalar()
        assert sorted(cols) == ["region", "total"] and index == 1
        command.downgrade(cfg, "base")
        with owner_db.connect() as conn:
            left = conn.execute(text("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = :s AND relkind IN ('v', 'm', 'r')"), {"s": schema}).scalars().all()
        assert left == ["alembic_version"]
    finally:
        with owner_db.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        owner_db.dispose()
