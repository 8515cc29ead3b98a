"""View models: queried like models, related both ways, read-only, validated at class time.

Every claim is checked against what PostgreSQL holds (catalog, raw SELECT on the view).

The ORM work runs as the plugin's app role (NOSUPERUSER NOBYPASSRLS, owning nothing) on the
schema create_all built as the owner role, refreshes included (through the views' refresh
functions). DDL (models a test declares itself, metadata.create_all) is the owner's; the
catalog is read as the superuser inside the test's transaction or as the owner."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from sqlalchemy import (
    Engine,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    String,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
    sessionmaker,
)

import sa_patterns
from sa_patterns.errors import ConfigurationError, ReadOnlyError
from sa_patterns.schema import NOT_A_TABLE, RowLevelSecurity, registered
from sa_patterns.schema import MaterializedView as MaterializedViewEntity
from sa_patterns.schema import View as ViewEntity
from sa_patterns.schema.access import manage_access
from sa_patterns.views import MaterializedView, MatviewRefresh, View, compile_definition


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    totals: Mapped[CustomerTotals | None] = relationship(viewonly=True)


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    note: Mapped[str] = mapped_column(String(50), default="")


class CustomerTotals(View, Base):
    __tablename__ = "customer_totals"
    # a literal with "%" on purpose: it must survive DDL formatting untouched
    __select__ = (
        select(
            Order.customer_id,
            func.count(Order.id).label("orders"),
            func.sum(Order.amount).label("total"),
        )
        .where(Order.note.not_like("%void%"))
        .group_by(Order.customer_id)
    )
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    orders: Mapped[int]
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    customer: Mapped[Customer] = relationship(viewonly=True)


class BigSpenders(MaterializedView, Base):
    """A materialized view over a view: declaration order is dependency order."""

    __tablename__ = "big_spenders"
    __table_args__ = (Index("big_spenders_customer", "customer_id", unique=True),)
    __select__ = select(CustomerTotals.customer_id, CustomerTotals.total).where(
        CustomerTotals.total >= 100
    )
    customer_id: Mapped[int] = mapped_column(primary_key=True)
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata




@contextmanager
def owner_built(owner_engine: Engine, metadata: MetaData, *, drop: str) -> Iterator[None]:
    """Models a test declares itself, built by the owner (DDL) and committed so the app role's
    own connection sees them; ``drop`` (the owner's) removes them after. manage_access() on
    them: the grants a deployment's migration writes for the app role."""
    manage_access(metadata)
    with owner_engine.begin() as conn:
        sa_patterns.create_all(conn, metadata)
    try:
        yield
    finally:
        with owner_engine.begin() as conn:
            conn.exec_driver_sql(drop)


def seed(session: Session) -> None:
    session.add_all([Customer(id=1, name="ada"), Customer(id=2, name="bob"), Customer(id=3, name="cy")])
    session.flush()
    session.add_all(
        [
            Order(customer_id=1, amount=Decimal("60.00")),
            Order(customer_id=1, amount=Decimal("70.00")),
            Order(customer_id=2, amount=Decimal("5.00")),
            Order(customer_id=2, amount=Decimal("500.00"), note="100% void"),
        ]
    )
    session.flush()


def test_registered_as_view_objects_not_tables(superuser_sql) -> None:  # type: ignore[no-untyped-def]
    """The catalog, read as the superuser."""
    sql = superuser_sql
    assert CustomerTotals.__table__.info[NOT_A_TABLE] is True
    assert BigSpenders.__table__.info[NOT_A_TABLE] is True
    kinds = {type(e) for e in registered(Base.metadata)}
    assert kinds == {ViewEntity, MaterializedViewEntity, MatviewRefresh}  # + its refresh function
    rows = dict(sql("SELECT relname, relkind FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relname IN ('customer_totals', 'big_spenders')"))
    assert rows == {"customer_totals": "v", "big_spenders": "m"}
    idx = sql("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'big_spenders'")
    assert [r[0] for r in idx] and "UNIQUE INDEX big_spenders_customer" in idx[0][0]
    # the "%" literal reached PostgreSQL intact
    viewdef = sql("SELECT pg_get_viewdef('customer_totals'::regclass)")[0][0]
    assert "'%void%'" in viewdef


def test_definition_is_the_compiled_select() -> None:
    definition = CustomerTotals.__view_entity__.definition
    assert definition == compile_definition(CustomerTotals.__select__, "customer_totals")
    assert definition.startswith("SELECT orders.customer_id")
    assert "NOT LIKE '%void%'" in definition  # literal, single "%"


def test_query_like_a_model(session: Session, sql) -> None:  # type: ignore[no-untyped-def]
    seed(session)
    rows = session.scalars(select(CustomerTotals).order_by(CustomerTotals.customer_id)).all()
    assert [(r.customer_id, r.orders, r.total) for r in rows] == [
        (1, 2, Decimal("130.00")),
        (2, 1, Decimal("5.00")),
    ]
    raw = sql("SELECT customer_id, orders, total FROM customer_totals ORDER BY customer_id")
    assert [tuple(r) for r in raw] == [(r.customer_id, r.orders, r.total) for r in rows]
    # filters, aggregates and joins compose like on a table
    top = session.scalar(select(Customer.name).join(CustomerTotals).where(CustomerTotals.total > 100))
    assert top == "ada"


def test_relationships_both_ways(session: Session) -> None:
    seed(session)
    customers = session.scalars(
        select(Customer).options(selectinload(Customer.totals)).order_by(Customer.id)
    ).all()
    assert [c.totals.total if c.totals else None for c in customers] == [Decimal("130.00"), Decimal("5.00"), None]
    totals = session.get(CustomerTotals, 2)
    assert totals is not None and totals.customer.name == "bob"


def test_materialized_view_refresh_in_session(session: Session, sql) -> None:  # type: ignore[no-untyped-def]
    seed(session)
    assert session.scalars(select(BigSpenders)).all() == []  # created before the data
    BigSpenders.refresh(session)  # flushes first, then refreshes in this transaction
    assert [(r.customer_id, r.total) for r in session.scalars(select(BigSpenders))] == [(1, Decimal("130.00"))]
    session.add(Order(customer_id=3, amount=Decimal("1000.00")))
    BigSpenders.refresh(session, concurrently=True)
    raw = sql("SELECT customer_id FROM big_spenders ORDER BY 1")
    assert [r[0] for r in raw] == [1, 3]


def test_orm_writes_are_refused(session: Session, superuser_sql) -> None:  # type: ignore[no-untyped-def]
    seed(session)
    session.add(CustomerTotals(customer_id=3, orders=1, total=Decimal(1)))
    with pytest.raises(ReadOnlyError, match="CustomerTotals maps the view customer_totals"):
        session.flush()
    session.rollback()
    seed(session)
    row = session.get(CustomerTotals, 1)
    assert row is not None
    row.total = Decimal("1.00")
    with pytest.raises(ReadOnlyError, match="Write to the tables it reads instead"):
        session.flush()
    session.rollback()
    seed(session)
    row = session.get(CustomerTotals, 1)
    session.delete(row)
    with pytest.raises(ReadOnlyError):
        session.flush()
    session.rollback()
    for statement in (
        update(CustomerTotals).values(total=0),
        delete(BigSpenders),
        insert(CustomerTotals).values(customer_id=9, orders=0, total=0),
    ):
        with pytest.raises(ReadOnlyError):
            session.execute(statement)
    with pytest.raises(ReadOnlyError, match=r"BigSpenders.refresh\(session\)"):
        session.execute(delete(BigSpenders))
    assert superuser_sql("SELECT count(*) FROM customers")[0][0] == 0  # nothing reached the database


def test_writes_refused_without_install(connection) -> None:  # type: ignore[no-untyped-def]
    """The per-class mapper guard holds even on a session nobody installed."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as plain:
        plain.add(CustomerTotals(customer_id=1, orders=1, total=Decimal(1)))
        with pytest.raises(ReadOnlyError):
            plain.flush()


async def test_async_query_relationship_refresh_and_refusal(async_session: AsyncSession) -> None:
    async_session.add_all([Customer(id=1, name="ada"), Customer(id=2, name="bob")])
    await async_session.flush()
    async_session.add_all([Order(customer_id=1, amount=Decimal("150")), Order(customer_id=2, amount=Decimal("1"))])
    await async_session.flush()
    rows = (
        await async_session.scalars(
            select(CustomerTotals).options(selectinload(CustomerTotals.customer)).order_by(CustomerTotals.customer_id)
        )
    ).all()
    assert [(r.customer.name, r.total) for r in rows] == [("ada", Decimal("150.00")), ("bob", Decimal("1.00"))]
    await BigSpenders.refresh(async_session, concurrently=True)
    assert (await async_session.scalars(select(BigSpenders.customer_id))).all() == [1]
    refreshed = await sa_patterns.refresh_all(async_session)
    assert [name.rsplit(".", 1)[-1] for name in refreshed] == ["big_spenders"]
    raw = await async_session.execute(text("SELECT count(*) FROM big_spenders"))
    assert raw.scalar_one() == 1
    async_session.add(CustomerTotals(customer_id=2, orders=0, total=Decimal(0)))
    with pytest.raises(ReadOnlyError):
        await async_session.flush()


def test_security_invoker_defaults_on_over_rls_tables() -> None:
    class B(DeclarativeBase):
        pass

    class Secret(B):
        __tablename__ = "secrets"
        id: Mapped[int] = mapped_column(primary_key=True)

    sa_patterns.schema.register(B.metadata, RowLevelSecurity(None, "secrets"))

    class SecretIds(View, B):
        __tablename__ = "secret_ids"
        __select__ = select(Secret.id)
        id: Mapped[int] = mapped_column(primary_key=True)

    class PlainIds(View, B):
        __tablename__ = "plain_ids"
        __security_invoker__ = False
        __select__ = select(Secret.id)
        id: Mapped[int] = mapped_column(primary_key=True)

    assert isinstance(SecretIds.__view_entity__, ViewEntity)
    assert SecretIds.__view_entity__.security_invoker is True
    assert "WITH (security_invoker = true)" in SecretIds.__view_entity__.create_sql()[0]
    assert PlainIds.__view_entity__.create_sql()[0].startswith("CREATE VIEW plain_ids AS")


def _base() -> tuple[type[DeclarativeBase], type[DeclarativeBase]]:
    class B(DeclarativeBase):
        metadata = MetaData()

    class Thing(B):
        __tablename__ = "things"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    return B, Thing


def test_bad_input_is_refused_at_class_definition() -> None:
    B, Thing = _base()
    with pytest.raises(ConfigurationError, match="needs __select__ = select"):
        class NoSelect(View, B):
            __tablename__ = "no_select"
            id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(ConfigurationError, match=r"maps column\(s\) label that its __select__ does not produce"):
        class Missing(View, B):
            __tablename__ = "missing"
            __select__ = select(Thing.id, Thing.name)  # type: ignore[attr-defined]
            id: Mapped[int] = mapped_column(primary_key=True)
            label: Mapped[str]

    with pytest.raises(ConfigurationError, match="more than once"):
        class Dupes(View, B):
            __tablename__ = "dupes"
            __select__ = select(Thing.id, Thing.name.label("id"))  # type: ignore[attr-defined]
            id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(ConfigurationError, match="subclass MaterializedView instead"):
        class Indexed(View, B):
            __tablename__ = "indexed"
            __table_args__ = (Index("indexed_id", "id"),)
            __select__ = select(Thing.id)  # type: ignore[attr-defined]
            id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(ConfigurationError, match="plain views only"):
        class Invoker(MaterializedView, B):
            __tablename__ = "invoker"
            __security_invoker__ = True
            __select__ = select(Thing.id)  # type: ignore[attr-defined]
            id: Mapped[int] = mapped_column(primary_key=True)


def test_with_no_data_then_first_refresh(owner_engine: Engine, engine: Engine) -> None:
    """__with_data__ = False creates the view empty; a concurrent refresh of a never-populated
    view (which PostgreSQL refuses) is sent as a plain first refresh. The owner builds the
    models (committed, dropped after); the app role inserts and refreshes on its own
    connection, rolled back."""
    B, Thing = _base()

    class Lazy(MaterializedView, B):
        __tablename__ = "lazy_things"
        __with_data__ = False
        __table_args__ = (Index("lazy_things_id", "id", unique=True),)
        __select__ = select(Thing.id)  # type: ignore[attr-defined]
        id: Mapped[int] = mapped_column(primary_key=True)

    drop = "DROP TABLE things CASCADE; DROP FUNCTION lazy_things_refresh(boolean)"
    with owner_built(owner_engine, B.metadata, drop=drop), engine.connect() as connection:
        factory = sa_patterns.install(sessionmaker(bind=connection, join_transaction_mode="create_savepoint"))
        with factory() as session:
            connection.execute(text("INSERT INTO things (id, name) VALUES (1, 'x')"))
            populated = "SELECT relispopulated FROM pg_class WHERE oid = 'lazy_things'::regclass"
            assert connection.execute(text(populated)).scalar() is False
            Lazy.refresh(session, concurrently=True)
            assert connection.execute(text(populated)).scalar() is True
            assert session.scalars(select(Lazy.id)).all() == [1]
            Lazy.refresh(session, concurrently=True)  # now really concurrent
        connection.rollback()


def test_concurrent_refresh_needs_a_unique_index(session: Session) -> None:
    B, Thing = _base()

    class NoUnique(MaterializedView, B):
        __tablename__ = "no_unique"
        __table_args__ = (Index("no_unique_id", "id"),)  # not unique
        __select__ = select(Thing.id)  # type: ignore[attr-defined]
        id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(ConfigurationError, match="needs a unique index") as info:
        NoUnique.refresh(session, concurrently=True)
    assert "Index('ix_name', 'col', unique=True)" in str(info.value)


def test_plain_metadata_create_all_uses_create_view_on_sqlalchemy_21(owner_connection) -> None:  # type: ignore[no-untyped-def]
    """On 2.1 the mapped Table carries CreateView: even metadata.create_all makes a view. DDL:
    the owner's, rolled back."""
    connection = owner_connection
    from sqlalchemy.sql import ddl

    B, Thing = _base()

    class Names(View, B):
        __tablename__ = "names"
        __select__ = select(Thing.id, Thing.name)  # type: ignore[attr-defined]
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    nested = connection.begin_nested()
    if hasattr(ddl, "CreateView"):
        B.metadata.create_all(connection)
        kind = connection.execute(text("SELECT relkind FROM pg_class WHERE oid = 'names'::regclass")).scalar()
        assert kind == "v"
    else:  # SQLAlchemy 2.0: only sa_patterns.create_all / migrations know it is a view
        sa_patterns.create_all(connection, B.metadata)
        kind = connection.execute(text("SELECT relkind FROM pg_class WHERE oid = 'names'::regclass")).scalar()
        assert kind == "v"
    nested.rollback()
