"""Materialized views under the database wall, in the recommended deployment: the schema built
by autogenerate as the owner (a NOSUPERUSER role owning every object, RLS forced on the tenant
tables), the application logged in as the app role (NOSUPERUSER NOBYPASSRLS, owning nothing).

A superuser skips RLS, so nothing here runs as one except the seeding and the checks of what the
database holds (raw SQL read back as the superuser, who sees every row)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.operations.ops import ModifyTableOps
from sqlalchemy import (
    URL,
    BigInteger,
    Engine,
    Index,
    MetaData,
    String,
    create_engine,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
import sa_patterns.alembic
from sa_patterns import MissingGrant, TenantMixin, TenantRequired
from sa_patterns.cli import main as cli
from sa_patterns.health import (
    check_matview_freshness,
    check_matviews_populated,
    check_toolkit_objects,
)
from sa_patterns.roles import RoleNames, use_roles
from sa_patterns.schema import quote
from sa_patterns.views import MaterializedView, View

SUFFIX = uuid.uuid4().hex[:8]
ROLES = RoleNames(owner=f"sap_vw_owner_{SUFFIX}", app=f"sap_vw_app_{SUFFIX}", admin=f"sap_vw_admin_{SUFFIX}")


def build(variant: str = "base") -> SimpleNamespace:
    """The models: sales per tenant; a tenant materialized view of totals per region; a tenant
    materialized view reading that one; an aggregate over every tenant (no tenant_id)."""

    class Base(DeclarativeBase):
        metadata = MetaData()

    legacy = variant == "legacy"  # as before the wall: no RLS, materialized views not per tenant

    class Sale(TenantMixin, Base):
        __tablename__ = "vw_sales"
        __rls__ = not legacy
        id: Mapped[int] = mapped_column(primary_key=True)
        region: Mapped[str] = mapped_column(String(20))
        amount: Mapped[int]

    query = select(
        Sale.tenant_id, Sale.region, func.sum(Sale.amount).label("total"), func.count().label("n")
    ).group_by(Sale.tenant_id, Sale.region)
    if variant == "positive":
        query = query.where(Sale.amount > 0)

    class RegionTotals(MaterializedView, Base):
        __tablename__ = "vw_region_totals"
        __tenant_scoped__ = False if legacy else None
        __table_args__ = (Index("vw_region_totals_key", "tenant_id", "region", unique=True),)
        __select__ = query
        tenant_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        region: Mapped[str] = mapped_column(primary_key=True)
        total: Mapped[int]
        n: Mapped[int]

    class TenantSummary(MaterializedView, Base):
        """Reads the tenant materialized view (through its tenant view)."""

        __tablename__ = "vw_tenant_summary"
        __tenant_scoped__ = False if legacy else None
        __table_args__ = (Index("vw_tenant_summary_key", "tenant_id", unique=True),)
        __select__ = select(
            RegionTotals.tenant_id, func.count().label("regions"), func.sum(RegionTotals.total).label("total")
        ).group_by(RegionTotals.tenant_id)
        tenant_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        regions: Mapped[int]
        total: Mapped[int]

    class Overall(MaterializedView, Base):
        """No tenant_id: one row about every tenant, readable by every reader."""

        __tablename__ = "vw_overall"
        __table_args__ = (Index("vw_overall_one", "one", unique=True),)
        __select__ = select(literal(1).label("one"), func.count().label("sales"), func.sum(Sale.amount).label("total"))
        one: Mapped[int] = mapped_column(primary_key=True)
        sales: Mapped[int]
        total: Mapped[int | None]

    class AverageSale(View, Base):
        """A plain view reading a materialized view: rebuilt with it."""

        __tablename__ = "vw_average_sale"
        __select__ = select(Overall.one, (Overall.total / Overall.sales).label("average"))
        one: Mapped[int] = mapped_column(primary_key=True)
        average: Mapped[int | None]

    return SimpleNamespace(
        metadata=Base.metadata, Sale=Sale, RegionTotals=RegionTotals, TenantSummary=TenantSummary, Overall=Overall,
        AverageSale=AverageSale,
    )


M = build()
STORED = "vw_region_totals_all_tenants"  # where the tenant materialized view keeps every row


def run(op: Operations, ops: list[Any]) -> None:
    for migrate_op in ops:
        if isinstance(migrate_op, ModifyTableOps):
            run(op, migrate_op.ops)
        else:
            op.invoke(migrate_op)


def migrate(engine: Engine, md: MetaData) -> list[Any]:
    """Autogenerate against ``md`` and apply it (as the engine's role); the downgrade ops back."""
    with use_roles(ROLES), engine.begin() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        script = produce_migrations(ctx, md)
        run(Operations(ctx), script.upgrade_ops.ops)
        return list(script.downgrade_ops.ops)


def downgrade(engine: Engine, ops: list[Any]) -> None:
    with use_roles(ROLES), engine.begin() as conn:
        run(Operations(MigrationContext.configure(conn)), ops)


def diffs(engine: Engine, md: MetaData) -> list[Any]:
    with use_roles(ROLES), engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        return list(compare_metadata(ctx, md))


def login(pg_url: URL, schema: str, role: str, **kw: Any) -> Engine:
    """Log in *as* the role (a superuser session with SET ROLE could RESET it)."""
    return create_engine(pg_url.set(username=role), connect_args={"options": f"-csearch_path={schema}"}, **kw)


SEED = (
    "INSERT INTO vw_sales (id, tenant_id, region, amount) VALUES "
    "(1, 1, 'north', 10), (2, 1, 'north', 5), (3, 1, 'south', 7), (4, 2, 'north', 100), (5, 2, 'east', 1)"
)


@pytest.fixture(scope="module")
def superuser(pg_url: URL, db_schema: str) -> Iterator[Engine]:
    engine = create_engine(pg_url, connect_args={"options": f"-csearch_path={db_schema}"})
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def roles(superuser: Engine, db_schema: str) -> Iterator[RoleNames]:
    with superuser.begin() as conn:
        for role in (ROLES.owner, ROLES.app, ROLES.admin):
            conn.execute(text(f"CREATE ROLE {quote(role)} LOGIN NOSUPERUSER NOBYPASSRLS"))
    try:
        yield ROLES
    finally:
        with superuser.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {quote(db_schema)} CASCADE; CREATE SCHEMA {quote(db_schema)}"))
            for role in (ROLES.app, ROLES.admin, ROLES.owner):
                conn.execute(text(f"DROP OWNED BY {quote(role)}; DROP ROLE {quote(role)}"))


@pytest.fixture(scope="module")
def owner(pg_url: URL, db_schema: str, superuser: Engine, roles: RoleNames) -> Iterator[Engine]:
    """The schema built by autogenerate, as the owner, and seeded (as the superuser)."""
    with superuser.begin() as conn:
        conn.execute(text(f"ALTER SCHEMA {quote(db_schema)} OWNER TO {quote(ROLES.owner)}"))
    engine = login(pg_url, db_schema, ROLES.owner)
    migrate(engine, M.metadata)
    with superuser.begin() as conn:
        conn.execute(text(SEED))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def app(pg_url: URL, db_schema: str, owner: Engine) -> Iterator[Engine]:
    engine = login(pg_url, db_schema, ROLES.app)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def admin(pg_url: URL, db_schema: str, owner: Engine) -> Iterator[Engine]:
    engine = login(pg_url, db_schema, ROLES.admin)
    yield engine
    engine.dispose()


def installed(engine: Engine) -> sessionmaker[Session]:
    return sa_patterns.install(sessionmaker(engine))  # type: ignore[return-value]


def stored(superuser: Engine, relation: str = STORED) -> list[tuple[Any, ...]]:
    """What the database holds, read as the superuser (who sees every row)."""
    with superuser.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {relation} ORDER BY 1, 2"))]


def sale(superuser: Engine, id_: int, tenant: int, region: str, amount: int) -> None:
    with superuser.begin() as conn:
        conn.execute(
            text("INSERT INTO vw_sales (id, tenant_id, region, amount) VALUES (:i, :t, :r, :a)"),
            {"i": id_, "t": tenant, "r": region, "a": amount},
        )


def forget(superuser: Engine, *ids: int) -> None:
    with superuser.begin() as conn:
        conn.execute(text("DELETE FROM vw_sales WHERE id = ANY(:ids)"), {"ids": list(ids)})


def reads(engine: Engine, sql: str, **settings: str) -> list[tuple[Any, ...]]:
    """``sql`` run by the engine's role with these transaction-local settings."""
    with engine.begin() as conn:
        for name, value in settings.items():
            conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name.replace("__", "."), "v": value})
        return [tuple(r) for r in conn.execute(text(sql))]


# -- the deployment ---------------------------------------------------------------------------


def test_the_schema_is_the_owners_and_the_app_role_is_walled(superuser: Engine, owner: Engine) -> None:
    with superuser.connect() as conn:
        who = conn.execute(text(
            "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname IN (:o, :a) ORDER BY rolname = :o"
        ), {"o": ROLES.owner, "a": ROLES.app}).all()
        assert [tuple(r) for r in who] == [(ROLES.app, False, False), (ROLES.owner, False, False)]
        owners = dict(conn.execute(text(
            "SELECT relname, pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
            "AND relname IN ('vw_sales', :s, 'vw_region_totals')"
        ), {"s": STORED}).all())
        assert owners == {"vw_sales": ROLES.owner, STORED: ROLES.owner, "vw_region_totals": ROLES.owner}
        forced = conn.execute(text("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'vw_sales'::regclass")).scalar()
        assert forced is True
        kinds = dict(conn.execute(text(
            "SELECT relname, relkind::text || coalesce(array_to_string(reloptions, ','), '') FROM pg_class "
            "WHERE relnamespace = current_schema()::regnamespace AND relname LIKE 'vw_%' AND relkind IN ('v', 'm')"
        )).all())
    assert kinds == {
        STORED: "m", "vw_region_totals": "vsecurity_barrier=true",
        "vw_tenant_summary_all_tenants": "m", "vw_tenant_summary": "vsecurity_barrier=true",
        "vw_overall": "m",  # no tenant_id: a plain materialized view
        "vw_average_sale": "v",
    }


def test_the_refresh_functions(superuser: Engine, owner: Engine) -> None:
    """SECURITY DEFINER, owned by the owner, search_path pinned, EXECUTE for app and admin only."""
    with superuser.connect() as conn:
        rows = conn.execute(text(
            "SELECT p.proname, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner), "
            "  has_function_privilege(:app, p.oid, 'EXECUTE'), has_function_privilege(:admin, p.oid, 'EXECUTE'), "
            "  EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0) "
            "FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace AND p.proname LIKE '%_refresh' "
            "ORDER BY 1"
        ), {"app": ROLES.app, "admin": ROLES.admin}).all()
    assert [tuple(r) for r in rows] == [
        (f"{name}_refresh", True, ["search_path=pg_catalog, pg_temp"], ROLES.owner, True, True, False)
        for name in sorted((STORED, "vw_overall", "vw_tenant_summary_all_tenants"))
    ]


def test_a_plain_refresh_by_the_owner_stores_no_tenant(superuser: Engine, owner: Engine) -> None:
    """Why the functions exist: FORCE binds the owner, whom PostgreSQL refreshes as, to the tenant
    policies, and a refresh has no tenant. (A superuser's REFRESH runs as the owner too.)"""
    with owner.begin() as conn:
        conn.execute(text(f"REFRESH MATERIALIZED VIEW {STORED}"))
    assert stored(superuser) == []
    with superuser.begin() as conn:
        conn.execute(text(f"REFRESH MATERIALIZED VIEW {STORED}"))
    assert stored(superuser) == []


# -- refresh as the app role ------------------------------------------------------------------

ALL_REGIONS = [(1, "north", 15, 2), (1, "south", 7, 1), (2, "east", 1, 1), (2, "north", 100, 1)]


def test_the_app_role_refreshes_every_tenants_rows(superuser: Engine, app: Engine, db_schema: str) -> None:
    with superuser.begin() as conn:
        conn.execute(text("TRUNCATE sa_patterns_matview_refreshes"))
    Session = installed(app)
    with sa_patterns.tenant_scope(1), Session() as s:  # the tenant in scope limits nothing
        M.RegionTotals.refresh(s)
        s.commit()
    assert stored(superuser) == ALL_REGIONS
    sale(superuser, 6, 2, "east", 4)
    try:
        with Session() as s:
            M.RegionTotals.refresh(s, concurrently=True)
            s.commit()
        assert stored(superuser) == [*ALL_REGIONS[:2], (2, "east", 5, 2), ALL_REGIONS[3]]
        # the bookkeeping the function does: the refresh log (sa-patterns doctor reads it)
        assert [name for name, _ in stored(superuser, "sa_patterns_matview_refreshes")] == [f"{db_schema}.{STORED}"]
    finally:
        forget(superuser, 6)


def test_refresh_all_as_the_app_role(superuser: Engine, app: Engine, db_schema: str) -> None:
    with Session(app) as s:
        names = sa_patterns.refresh_all(s, concurrently=True, schemas=[db_schema])
        s.commit()
    assert sorted(names) == sorted(f"{db_schema}.{n}" for n in (STORED, "vw_tenant_summary_all_tenants", "vw_overall"))
    assert names.index(f"{db_schema}.{STORED}") < names.index(f"{db_schema}.vw_tenant_summary_all_tenants")
    assert stored(superuser) == ALL_REGIONS
    # read through the tenant view of vw_region_totals: every tenant while refreshing
    assert stored(superuser, "vw_tenant_summary_all_tenants") == [(1, 2, 22), (2, 2, 101)]
    assert stored(superuser, "vw_overall") == [(1, 5, 123)]
    logged = {name for name, _ in stored(superuser, "sa_patterns_matview_refreshes")}
    assert logged == set(names)


def test_the_refresh_log_is_the_owners_to_write(app: Engine) -> None:
    with app.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sa_patterns_matview_refreshes")).scalar() >= 0
        # (MissingGrant on an engine an installed session used: install() names the grant)
        with pytest.raises((ProgrammingError, MissingGrant), match="permission denied for table"):
            conn.execute(text("UPDATE sa_patterns_matview_refreshes SET refreshed_at = now()"))


def test_the_doctor_as_the_app_role_finds_nothing_wrong(pg_url: URL, db_schema: str, refreshed: None) -> None:
    doctor = login(pg_url, db_schema, ROLES.app)  # its own engine, as sa-patterns doctor has
    try:
        with use_roles(ROLES), doctor.connect() as conn:
            ctx = SimpleNamespace(connection=conn, metadata=M.metadata, options={"matview_max_age": 3600})
            assert check_toolkit_objects(ctx) == []  # comments and live definitions, as migrated
            assert check_matviews_populated(ctx) == []
            assert check_matview_freshness(ctx) == []  # the functions' bookkeeping
    finally:
        doctor.dispose()


# -- reading as the app role ------------------------------------------------------------------


@pytest.fixture(scope="module")
def refreshed(app: Engine, db_schema: str) -> None:
    with Session(app) as s:
        sa_patterns.refresh_all(s, schemas=[db_schema])
        s.commit()


RAW = "SELECT tenant_id, region, total, n FROM vw_region_totals ORDER BY 1, 2"


def test_raw_sql_by_the_app_role_sees_its_tenant_only(app: Engine, refreshed: None) -> None:
    assert reads(app, RAW, app__tenant_id="1") == ALL_REGIONS[:2]
    assert reads(app, RAW, app__tenant_id="2") == ALL_REGIONS[2:]
    assert reads(app, RAW) == []  # no tenant: nothing
    assert reads(app, "SELECT tenant_id, regions FROM vw_tenant_summary", app__tenant_id="2") == [(2, 2)]
    # the settings anyone can set open nothing: they count for the admin role and the owner only
    forged = {"app__all_tenants": "on", "sa_patterns__refresh": "on"}
    assert reads(app, RAW, **forged) == []
    assert reads(app, RAW, app__tenant_id="1", **forged) == ALL_REGIONS[:2]


def test_the_stored_rows_are_not_the_app_roles_to_read(app: Engine, refreshed: None) -> None:
    denied = f"permission denied for materialized view {STORED}"
    with app.connect() as conn, pytest.raises((ProgrammingError, MissingGrant), match=denied):
        conn.execute(text(f"SELECT * FROM {STORED}"))


def test_a_leaky_function_sees_no_other_tenants_row(app: Engine, refreshed: None) -> None:
    """security_barrier: the reader's own conditions run after the tenant filter, however cheap
    the planner thinks they are (a temporary function, which any role may create)."""
    with app.begin() as conn:
        conn.execute(text(
            "CREATE FUNCTION pg_temp.peek(t bigint) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS "
            "$$ BEGIN IF t <> 1 THEN RAISE EXCEPTION 'saw tenant %', t; END IF; RETURN true; END $$"
        ))
        conn.execute(text("SELECT set_config('app.tenant_id', '1', true)"))
        rows = conn.execute(text("SELECT region FROM vw_region_totals WHERE pg_temp.peek(tenant_id) ORDER BY 1"))
        assert rows.scalars().all() == ["north", "south"]


@pytest.fixture
def owners_view(owner: Engine) -> Iterator[str]:
    """A plain view the owner owns over a tenant table (security_invoker off): it reads the table
    with the owner's policies, but its reader stays who it is."""
    with owner.begin() as conn:
        conn.execute(text("CREATE VIEW vw_owners_sales AS SELECT id, tenant_id FROM vw_sales"))
        conn.execute(text(f"GRANT SELECT ON vw_owners_sales TO {quote(ROLES.app)}"))
    yield "SELECT tenant_id FROM vw_owners_sales ORDER BY id"
    with owner.begin() as conn:
        conn.execute(text("DROP VIEW vw_owners_sales"))


def test_forging_the_refresh_setting_opens_no_table(app: Engine, owners_view: str, refreshed: None) -> None:
    """The refresh policy asks for the owner's rights, not only the setting (anyone may set it):
    through a view the owner owns, the app role is still itself."""
    assert reads(app, owners_view, app__tenant_id="2", sa_patterns__refresh="on") == [(2,), (2,)]
    assert reads(app, "SELECT tenant_id FROM vw_sales", sa_patterns__refresh="on") == []


def test_forging_all_tenants_opens_no_table(app: Engine, owners_view: str, refreshed: None) -> None:
    """The same wall for app.all_tenants, which the app role sets whenever it runs in
    all_tenants(): no policy may honour it for the owner without asking for the owner's rights,
    or every view the owner owns shows (and, updatable, lets write) every tenant's rows."""
    assert reads(app, owners_view, app__tenant_id="2", app__all_tenants="on") == [(2,), (2,)]


def test_the_admin_role_sees_every_tenant_inside_all_tenants(admin: Engine, refreshed: None) -> None:
    assert reads(admin, RAW, app__all_tenants="on") == ALL_REGIONS
    assert reads(admin, RAW, app__tenant_id="2") == ALL_REGIONS[2:]
    assert reads(admin, RAW) == []
    with sa_patterns.all_tenants(), installed(admin)() as s:
        assert len(s.scalars(select(M.RegionTotals)).all()) == 4


def test_orm_reads_are_scoped_like_a_tenant_model(app: Engine, admin: Engine, refreshed: None) -> None:
    Session = installed(app)
    with sa_patterns.tenant_scope(2), Session() as s:
        rows = s.scalars(select(M.RegionTotals).order_by(M.RegionTotals.region)).all()
        assert [(r.tenant_id, r.region, r.total) for r in rows] == [(2, "east", 1), (2, "north", 100)]
        assert s.get(M.RegionTotals, (1, "north")) is None
        assert s.scalars(select(M.TenantSummary.total)).all() == [101]
        assert s.scalars(select(M.Overall.total)).all() == [123]  # not per tenant: every reader
    with Session() as s, pytest.raises(TenantRequired):
        s.scalars(select(M.RegionTotals)).all()
    # the ORM's own filter, where the database shows every row: the admin role with
    # app.all_tenants on in the database, tenant 1 in the ORM's scope
    with sa_patterns.tenant_scope(1), installed(admin)() as s:
        s.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
        assert s.execute(text("SELECT count(*) FROM vw_region_totals")).scalar() == 4
        assert {r.tenant_id for r in s.scalars(select(M.RegionTotals))} == {1}


# -- the command line -------------------------------------------------------------------------


def test_cli_refresh_as_the_app_role(
    pg_url: URL, db_schema: str, superuser: Engine, app: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_url.set(username=ROLES.app).update_query_dict({"options": f"-csearch_path={db_schema}"})
    sale(superuser, 7, 1, "west", 3)
    try:
        assert cli(["refresh", "--concurrently", "--schema", db_schema, "--url", url.render_as_string(hide_password=False)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == f"refreshed concurrently {db_schema}.{STORED}" and len(out) == 3
        assert (1, "west", 3, 1) in stored(superuser)
    finally:
        forget(superuser, 7)
        assert cli(["refresh", "--schema", db_schema, "--url", url.render_as_string(hide_password=False)]) == 0
        capsys.readouterr()


def test_cli_refresh_of_a_view_the_app_role_may_not_refresh(
    pg_url: URL, db_schema: str, owner: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """A materialized view made by hand has no refresh function: two lines, what and what to do."""
    with owner.begin() as conn:
        conn.execute(text("CREATE MATERIALIZED VIEW vw_by_hand AS SELECT 1 AS one"))
    try:
        url = pg_url.set(username=ROLES.app).update_query_dict({"options": f"-csearch_path={db_schema}"})
        assert cli(["refresh", "--schema", db_schema, "--url", url.render_as_string(hide_password=False)]) == 2
        captured = capsys.readouterr()
        lines = (captured.out + captured.err).splitlines()
        assert len(lines) == 2 and captured.out == ""
        assert f"role {ROLES.app} may not refresh materialized view {db_schema}.vw_by_hand" in lines[0]
        assert "refresh it as its owner" in lines[0]
    finally:
        with owner.begin() as conn:
            conn.execute(text("DROP MATERIALIZED VIEW vw_by_hand"))


# -- migrations -------------------------------------------------------------------------------


def assert_empty(superuser: Engine, schema: str) -> None:
    """No relation, function or policy left in ``schema``."""
    with superuser.connect() as conn:
        left = conn.execute(text(
            "SELECT relname FROM pg_class WHERE relnamespace = CAST(:s AS regnamespace) AND relkind IN ('r', 'v', 'm') "
            "UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = CAST(:s AS regnamespace) "
            "UNION ALL SELECT polname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid "
            "WHERE c.relnamespace = CAST(:s AS regnamespace)"
        ), {"s": schema}).scalars().all()
    assert left == []


def test_autogenerate_round_trip(pg_url: URL, db_schema: str, superuser: Engine, roles: RoleNames) -> None:
    """In a schema of its own: upgrade, nothing more to generate; a changed query rebuilds the
    tenant materialized view, its tenant view and the view reading it, with every tenant's rows
    (creation runs like a refresh); downgrade to nothing. Then the same from a deployment made
    before the wall."""
    schema = f"{db_schema}_rt"
    with superuser.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {quote(schema)} AUTHORIZATION {quote(ROLES.owner)}"))
    engine = login(pg_url, schema, ROLES.owner)
    try:
        base = build()
        down = migrate(engine, base.metadata)
        assert diffs(engine, base.metadata) == []
        with superuser.begin() as conn:
            conn.execute(text(f"SET LOCAL search_path = {quote(schema)}"))
            conn.execute(text(SEED.replace("(5, 2, 'east', 1)", "(5, 2, 'east', -1)")))
        changed = build("positive")
        down_changed = migrate(engine, changed.metadata)
        assert diffs(engine, changed.metadata) == []
        with superuser.connect() as conn:
            rows = conn.execute(text(f"SELECT tenant_id, region, total FROM {quote(schema)}.{STORED} ORDER BY 1, 2")).all()
            summary = conn.execute(text(f"SELECT tenant_id, total FROM {quote(schema)}.vw_tenant_summary_all_tenants ORDER BY 1")).all()
        assert [tuple(r) for r in rows] == [(1, "north", 15), (1, "south", 7), (2, "north", 100)]
        assert [tuple(r) for r in summary] == [(1, 22), (2, 100)]
        downgrade(engine, down_changed)
        assert diffs(engine, base.metadata) == []
        downgrade(engine, down)
        assert_empty(superuser, schema)
        # a deployment from before the wall: its materialized views become tenant ones (and
        # one stays common), rebuilt with the views reading them, then back again
        legacy = build("legacy")
        down_legacy = migrate(engine, legacy.metadata)
        with superuser.begin() as conn:
            conn.execute(text(f"SET LOCAL search_path = {quote(schema)}"))
            conn.execute(text(SEED))
        down_walled = migrate(engine, base.metadata)
        assert diffs(engine, base.metadata) == []
        with superuser.connect() as conn:
            kinds = dict(conn.execute(text(
                "SELECT relname, relkind FROM pg_class WHERE relnamespace = CAST(:s AS regnamespace) AND relkind IN ('v', 'm')"
            ), {"s": schema}).all())
            overall = conn.execute(text(f"SELECT total FROM {quote(schema)}.vw_overall")).scalar()
        assert kinds == {
            STORED: "m", "vw_region_totals": "v", "vw_tenant_summary_all_tenants": "m", "vw_tenant_summary": "v",
            "vw_overall": "m", "vw_average_sale": "v",
        }
        assert overall == 123  # rebuilt as the owner under forced RLS: every tenant's rows
        downgrade(engine, down_walled)
        assert diffs(engine, legacy.metadata) == []
        downgrade(engine, down_legacy)
        assert_empty(superuser, schema)
    finally:
        engine.dispose()
        with superuser.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE"))
