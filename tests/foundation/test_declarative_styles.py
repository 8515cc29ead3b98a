"""The mixins work whatever declarative style maps the model, or refuse it at class definition.

``DeclarativeBase`` maps a class inside ``__init_subclass__``; ``declarative_base()``,
``registry.mapped``, ``registry.map_declaratively`` and SQLModel map it afterwards, when a set-up
written in ``__init_subclass__`` alone found no table and silently did nothing (tenant B's rows
inside ``tenant_scope(A)``, no audit triggers, no RLS). Each style here gets the same tenant +
soft-delete + audited model, checked against what PostgreSQL holds; on SQLModel, with the
counterparts of :mod:`sa_patterns.sqlmodel` (tests/sqlmodel runs a SQLModel app).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlmodel
from sqlalchemy import Column, Engine, Integer, MetaData, Table, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    declarative_base,
    mapped_column,
    registry,
)

import sa_patterns
import sa_patterns.sqlmodel as sa_sqlmodel
from sa_patterns import (
    Audited,
    ConfigurationError,
    EventMixin,
    Partitioned,
    Searchable,
    SoftDeleteMixin,
    TenantMixin,
    TenantRequired,
    Versioned,
    View,
    history,
    soft_unique,
)
from sa_patterns.partitioning import hash_partition, partition_specs
from sa_patterns.schema.registry import registered
from sa_patterns.tenancy import is_tenant_table
from sa_patterns.testing.plugin import SQL
from sa_patterns.versioning import history_table

META = MetaData()


class Base(DeclarativeBase):
    metadata = META


class ViaBase(SoftDeleteMixin, TenantMixin, Audited, Base):
    __tablename__ = "ds_base"
    __rls__ = True
    __table_args__ = (soft_unique("name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class ViaBaseMixinsLast(Base, SoftDeleteMixin, TenantMixin, Audited):
    __tablename__ = "ds_base_last"
    __rls__ = True
    __table_args__ = (soft_unique("name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


Legacy: Any = declarative_base(metadata=META)


class ViaLegacy(SoftDeleteMixin, TenantMixin, Audited, Legacy):
    __tablename__ = "ds_legacy"
    __rls__ = True
    __table_args__ = (soft_unique("name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


mapper_registry = registry(metadata=META)


@mapper_registry.mapped
class ViaDecorator(SoftDeleteMixin, TenantMixin, Audited):
    __tablename__ = "ds_decorator"
    __rls__ = True
    __table_args__ = (soft_unique("name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class ViaMapDeclaratively(SoftDeleteMixin, TenantMixin, Audited):
    __tablename__ = "ds_map_declaratively"
    __rls__ = True
    __table_args__ = (soft_unique("name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


mapper_registry.map_declaratively(ViaMapDeclaratively)

sqlmodel_registry = registry(metadata=META)  # created with the other styles' tables


class SQLModelBase(sqlmodel.SQLModel, registry=sqlmodel_registry):
    pass


class ViaSQLModel(
    sa_sqlmodel.SoftDeleteMixin, sa_sqlmodel.TenantMixin, sa_sqlmodel.Audited, SQLModelBase, table=True
):
    __tablename__ = "ds_sqlmodel"
    __rls__ = True
    __table_args__ = (soft_unique("name"),)
    id: int | None = sqlmodel.Field(default=None, primary_key=True)
    name: str


STYLES: dict[str, Any] = {
    "DeclarativeBase": ViaBase,
    "DeclarativeBase, mixins after the base": ViaBaseMixinsLast,
    "declarative_base()": ViaLegacy,
    "registry.mapped": ViaDecorator,
    "registry.map_declaratively": ViaMapDeclaratively,
    "SQLModel (sa_patterns.sqlmodel)": ViaSQLModel,
}
style = pytest.mark.parametrize("model", list(STYLES.values()), ids=list(STYLES))


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, META)
    yield


def _seed(sql: SQL, model: Any) -> str:
    """Rows of two tenants, one of them soft-deleted, written in raw SQL."""
    name = model.__table__.name
    sql(
        f"INSERT INTO {name} (id, tenant_id, name, deleted_at) VALUES "
        "(1, 1, 'a', NULL), (2, 1, 'b', now()), (3, 2, 'c', NULL)"
    )
    return name


@style
def test_tenant_filtering_and_fail_closed(model: Any, session: Session, sql: SQL) -> None:
    _seed(sql, model)
    with sa_patterns.tenant_scope(1):
        assert session.scalars(select(model.id).order_by(model.id)).all() == [1]
        assert session.get(model, 3) is None  # tenant 2's row
    with sa_patterns.tenant_scope(2):
        assert [m.name for m in session.scalars(select(model))] == ["c"]
    with pytest.raises(TenantRequired):
        session.scalars(select(model)).all()
    with sa_patterns.all_tenants():
        assert session.scalars(select(model.id).order_by(model.id)).all() == [1, 3]


@style
def test_writes_fill_the_tenant_soft_delete_and_are_audited(
    model: Any, session: Session, sql: SQL, db_schema: str
) -> None:
    name = model.__table__.name
    with sa_patterns.tenant_scope(2):
        row = model(id=10, name="new")
        session.add(row)
        session.flush()
        session.delete(row)
        session.flush()
    assert sql(f"SELECT tenant_id, deleted_at IS NOT NULL FROM {name} WHERE id = 10") == [(2, True)]
    logged = sql(
        "SELECT operation, tenant_id FROM audit_log WHERE table_name = :t ORDER BY id",
        t=f"{db_schema}.{name}",
    )
    assert [tuple(r) for r in logged] == [("INSERT", "2"), ("SOFT_DELETE", "2")]
    session.add(model(id=11, name="none"))
    with pytest.raises(TenantRequired):
        session.flush()


@style
def test_create_all_writes_triggers_soft_unique_index_and_rls(
    model: Any, sql: SQL, db_schema: str
) -> None:
    name = model.__table__.name
    triggers = {r[0] for r in sql(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(:t) AND NOT tgisinternal",
        t=f"{db_schema}.{name}",
    )}
    assert {f"{name}_audit_ins", f"{name}_audit_upd", f"{name}_audit_del"} <= triggers
    indexes = [r[0] for r in sql(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = :s AND tablename = :t", s=db_schema, t=name
    )]
    assert any(
        "UNIQUE" in d and "(tenant_id, name)" in d and "WHERE (deleted_at IS NULL)" in d
        for d in indexes
    ), indexes
    assert sql(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass(:t)",
        t=f"{db_schema}.{name}",
    ) == [(True, True)]
    assert sql(
        "SELECT policyname FROM pg_policies WHERE schemaname = :s AND tablename = :t ORDER BY 1",
        s=db_schema, t=name,
    ) == [(f"{name}_tenant_admin",), (f"{name}_tenant_isolation",), (f"{name}_tenant_owner",)]


# --------------------------------------------------------------------------------------------
# the other mixins that set up a class, in the styles that map after __init_subclass__

OTHERS = MetaData()
LegacyOthers: Any = declarative_base(metadata=OTHERS)
others_registry = registry(metadata=OTHERS)


class LegacyArticle(Versioned, Searchable, LegacyOthers):
    __tablename__ = "ds_legacy_articles"
    __searchable__ = {"title": "A"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


@others_registry.mapped
class DecoratedArticle(Versioned, Searchable):
    __tablename__ = "ds_decorated_articles"
    __searchable__ = {"title": "A"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


class LegacyTitles(View, LegacyOthers):
    __tablename__ = "ds_legacy_titles"
    __select__ = select(LegacyArticle.id, LegacyArticle.title)
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


class LegacyEvents(EventMixin, LegacyOthers):
    __tablename__ = "ds_legacy_events"


@others_registry.mapped
class DecoratedReadings(Partitioned):
    __tablename__ = "ds_decorated_readings"
    __partition_by__ = hash_partition("sensor", modulus=4)
    sensor: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(primary_key=True)


def test_the_other_mixins_set_up_in_every_style() -> None:
    for model in (LegacyArticle, DecoratedArticle):
        assert history_table(model).name == f"{model.__table__.name}_history"
        assert "search_vector" in model.__table__.c
    assert LegacyTitles.__view_entity__.name == "ds_legacy_titles"
    assert "ds_legacy_events_stream_key" in {c.name for c in LegacyEvents.__table__.constraints}
    assert "ds_decorated_readings" in partition_specs(OTHERS)
    names = {e.name for e in registered(OTHERS) if hasattr(e, "name")}
    assert {
        "ds_legacy_articles_history_ins", "ds_decorated_articles_history_ins",
        "ds_legacy_events_notify", "ds_legacy_events_append_only",
        "ds_decorated_readings_maintain_partitions",
    } <= names, names


def test_an_imperative_mapping_is_enrolled_and_needs_its_tenant_column() -> None:
    metadata = MetaData()
    imperative = registry(metadata=metadata)

    class Scoped(TenantMixin):
        pass

    imperative.map_imperatively(
        Scoped,
        Table(
            "ds_imperative", metadata,
            Column("id", Integer, primary_key=True),
            Column("tenant_id", Integer, nullable=False, index=True),
        ),
    )
    assert is_tenant_table(metadata.tables["ds_imperative"])

    class Unscoped(TenantMixin):
        pass

    with pytest.raises(ConfigurationError, match="has no tenant_id column"):
        imperative.map_imperatively(
            Unscoped, Table("ds_imperative_bad", metadata, Column("id", Integer, primary_key=True))
        )
    imperative.dispose()


# --------------------------------------------------------------------------------------------
# SQLModel: the mixins with Mapped[...] columns are refused, naming their counterpart in
# sa_patterns.sqlmodel where there is one; column-less ones work as they are


@pytest.mark.parametrize(
    ("mixin", "message"),
    [
        (TenantMixin, r"TenantMixin declares its columns as SQLAlchemy Mapped.*from sa_patterns\.sqlmodel import TenantMixin"),
        (SoftDeleteMixin, r"from sa_patterns\.sqlmodel import SoftDeleteMixin"),
        (EventMixin, r"EventMixin does not support SQLModel.*no counterpart.*DeclarativeBase"),
    ],
    ids=lambda m: getattr(m, "__name__", "message"),
)
def test_sqlmodel_refuses_mixins_with_columns(mixin: type, message: str) -> None:
    class Own(sqlmodel.SQLModel, registry=registry(metadata=MetaData())):
        pass

    with pytest.raises(ConfigurationError, match=message):

        class Refused(mixin, Audited, Own, table=True):
            __tablename__ = "ds_sqlmodel_refused"
            id: int | None = sqlmodel.Field(default=None, primary_key=True)
            name: str


def test_one_counterpart_does_not_let_another_mixin_through() -> None:
    class Own(sqlmodel.SQLModel, registry=registry(metadata=MetaData())):
        pass

    with pytest.raises(ConfigurationError, match=r"from sa_patterns\.sqlmodel import TenantMixin"):

        class Mixed(sa_sqlmodel.SoftDeleteMixin, TenantMixin, Own, table=True):
            __tablename__ = "ds_sqlmodel_mixed"
            id: int | None = sqlmodel.Field(default=None, primary_key=True)


class SQLModelNote(Audited, Versioned, SQLModelBase, table=True):
    __tablename__ = "ds_sqlmodel_notes"
    id: int | None = sqlmodel.Field(default=None, primary_key=True)
    body: str


def test_sqlmodel_audited_and_versioned(session: Session, sql: SQL, db_schema: str) -> None:
    note = SQLModelNote(id=1, body="first")
    session.add(note)
    session.flush()
    note.body = "second"
    session.flush()
    assert [v.values["body"] for v in history(session, note)] == ["first", "second"]
    logged = sql("SELECT operation FROM audit_log WHERE table_name = :t ORDER BY id", t=f"{db_schema}.ds_sqlmodel_notes")
    assert [r[0] for r in logged] == ["INSERT", "UPDATE"]
