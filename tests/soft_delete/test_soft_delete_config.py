"""Configuration is checked when classes are defined or mappers configured, and errors teach."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, ForeignKey, String, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    configure_mappers,
    mapped_column,
    relationship,
    sessionmaker,
)

import sa_patterns
from sa_patterns import ConfigurationError, SoftDeleteMixin, TenantMixin, soft_unique
from sa_patterns.testing.plugin import SQL


def test_cascade_to_a_non_soft_deletable_child_is_refused() -> None:
    class Base(DeclarativeBase):
        pass

    class Parent(SoftDeleteMixin, Base):
        __tablename__ = "sd_cfg_parent"
        id: Mapped[int] = mapped_column(primary_key=True)
        children: Mapped[list[Child]] = relationship(cascade="all, delete-orphan")

    class Child(Base):
        __tablename__ = "sd_cfg_child"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int] = mapped_column(ForeignKey("sd_cfg_parent.id"))

    with pytest.raises(ConfigurationError, match=r"Parent\.children cascades deletes to Child"):
        configure_mappers()
    Base.registry.dispose()


def test_the_check_reaches_single_table_subclasses() -> None:
    class Base(DeclarativeBase):
        pass

    class Doc(SoftDeleteMixin, Base):
        __tablename__ = "sd_cfg_doc"
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(String(10))
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "doc"}

    class Report(Doc):
        __mapper_args__ = {"polymorphic_identity": "report"}
        pages: Mapped[list[Page]] = relationship(cascade="all, delete")

    class Page(Base):
        __tablename__ = "sd_cfg_page"
        id: Mapped[int] = mapped_column(primary_key=True)
        doc_id: Mapped[int] = mapped_column(ForeignKey("sd_cfg_doc.id"))

    with pytest.raises(ConfigurationError, match=r"Report\.pages cascades deletes to Page"):
        configure_mappers()
    Base.registry.dispose()


def test_a_plain_relationship_to_a_non_soft_child_is_fine() -> None:
    class Base(DeclarativeBase):
        pass

    class Owner(SoftDeleteMixin, Base):
        __tablename__ = "sd_cfg_owner"
        id: Mapped[int] = mapped_column(primary_key=True)
        things: Mapped[list[Thing]] = relationship()  # save-update, merge: no delete

    class Thing(Base):
        __tablename__ = "sd_cfg_thing"
        id: Mapped[int] = mapped_column(primary_key=True)
        owner_id: Mapped[int] = mapped_column(ForeignKey("sd_cfg_owner.id"))

    Base.registry.configure()
    Base.registry.dispose()


def test_soft_unique_needs_the_mixin() -> None:
    class Base(DeclarativeBase):
        pass

    with pytest.raises(ConfigurationError, match=r"no deleted_at column\. Add SoftDeleteMixin"):

        class Plain(Base):
            __tablename__ = "sd_cfg_plain"
            __table_args__ = (soft_unique("email"),)
            id: Mapped[int] = mapped_column(primary_key=True)
            email: Mapped[str] = mapped_column(String(50))


def test_soft_unique_wants_column_names() -> None:
    with pytest.raises(ConfigurationError, match="column names as strings"):
        soft_unique()


class TBase(DeclarativeBase):
    pass


class Member(SoftDeleteMixin, TenantMixin, TBase):
    """With the real TenantMixin: soft_unique includes tenant_id; both filters compose."""

    __tablename__ = "sd_cfg_member"
    __table_args__ = (soft_unique("email"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(50))


@pytest.fixture(scope="module")
def member_table(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, TBase.metadata)
    yield


def test_soft_unique_with_tenant_mixin(member_table: None, sql: SQL) -> None:
    (indexdef,) = sql(
        "SELECT pg_get_indexdef(CAST('uq_sd_cfg_member_email_live' AS regclass))")[0]
    assert "(tenant_id, email) WHERE (deleted_at IS NULL)" in indexdef
    sql("INSERT INTO sd_cfg_member (id, tenant_id, email, deleted_at) VALUES "
        "(1, 1, 'a', now()), (2, 1, 'a', NULL), (3, 2, 'a', NULL)")  # no conflict


def test_tenant_and_soft_delete_filters_compose(
    member_table: None, session_factory: sessionmaker[Session], sql: SQL
) -> None:
    sql("INSERT INTO sd_cfg_member (id, tenant_id, email, deleted_at) VALUES "
        "(1, 1, 'a', now()), (2, 1, 'b', NULL), (3, 2, 'c', NULL)")
    with sa_patterns.tenant_scope(1), session_factory() as s:
        assert s.scalars(select(Member.id)).all() == [2]
        assert sorted(s.scalars(select(Member.id).execution_options(include_deleted=True))) == [
            1, 2]
        s.delete(s.get(Member, 2))
        s.flush()
        assert s.scalars(select(Member.id)).all() == []
        s.commit()
    assert sql("SELECT id FROM sd_cfg_member WHERE deleted_at IS NULL") == [(3,)]


def test_bulk_soft_delete_stays_in_the_tenant(
    member_table: None, session_factory: sessionmaker[Session], sql: SQL
) -> None:
    from sqlalchemy import delete

    sql("INSERT INTO sd_cfg_member (id, tenant_id, email) VALUES (1, 1, 'a'), (2, 2, 'a')")
    with sa_patterns.tenant_scope(1), session_factory() as s:
        s.execute(delete(Member))
        s.commit()
    assert sql("SELECT id, deleted_at IS NOT NULL FROM sd_cfg_member ORDER BY id") == [
        (1, True), (2, False)]
    with session_factory() as s, pytest.raises(sa_patterns.TenantRequired):
        s.execute(delete(Member))
