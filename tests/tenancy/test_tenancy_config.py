"""Misuse is refused at class-definition time, with a message that says how to fix it."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Float, Integer, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from tenancy_models import Project, StrDoc, Task, UuidDoc

import sa_patterns
from sa_patterns import ConfigurationError, TenantMixin, tenant_foreign_key, tenant_unique
from sa_patterns.tenancy import tenant_tables


class Base(DeclarativeBase):
    pass


def test_unsupported_tenant_type() -> None:
    with pytest.raises(ConfigurationError, match="use BigInteger"):

        class Bad(TenantMixin, Base):
            __tablename__ = "tn_cfg_bad"
            __tenant_type__ = Float
            id: Mapped[int] = mapped_column(primary_key=True)


def test_not_a_type() -> None:
    with pytest.raises(ConfigurationError, match="must be a SQLAlchemy type"):

        class Bad(TenantMixin, Base):
            __tablename__ = "tn_cfg_bad2"
            __tenant_type__ = "bigint"
            id: Mapped[int] = mapped_column(primary_key=True)


def test_admin_role_needs_rls() -> None:
    with pytest.raises(ConfigurationError, match="only makes sense with __rls__"):

        class Bad(TenantMixin, Base):
            __tablename__ = "tn_cfg_bad3"
            __rls__ = False
            __rls_admin_role__ = "admin"
            id: Mapped[int] = mapped_column(primary_key=True)


def test_helpers_refuse_wrong_arguments() -> None:
    with pytest.raises(ConfigurationError):
        tenant_unique()
    with pytest.raises(ConfigurationError, match="as many columns"):
        tenant_foreign_key(["a", "b"], "projects.id")
    with pytest.raises(ConfigurationError, match="one table"):
        tenant_foreign_key(["a", "b"], ["projects.id", "other.id"])


def test_integer_tenant_type_and_bookkeeping_outside_table_info() -> None:
    class Small(TenantMixin, Base):
        __tablename__ = "tn_cfg_small"
        __tenant_type__ = Integer()
        id: Mapped[int] = mapped_column(primary_key=True)

    assert isinstance(Small.__table__.c.tenant_id.type, Integer)
    # Alembic renders Table.info into create_table(): nothing of ours may be there
    for model in (Project, Task, UuidDoc, StrDoc, Small):
        assert model.__table__.info == {}
    assert sorted(t.name for t in tenant_tables(Project.metadata)) == [
        "tn_projects", "tn_str_docs", "tn_tasks", "tn_uuid_docs"]


def _statements(session: Session) -> list[str]:
    seen: list[str] = []
    event.listen(session.connection(), "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


@pytest.mark.parametrize("tenant", [2**63, -(2**63) - 1, str(2**63), "9999999999999999999"])
def test_tenant_id_beyond_bigint_is_refused_before_sql(session: Session, tenant: object) -> None:
    """PostgreSQL's own error (bigint out of range, or a numeric compared with bigint) would
    come from the database; the toolkit names the value and the column type instead."""
    statements = _statements(session)
    with sa_patterns.tenant_scope(tenant):  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=re.escape(repr(tenant))):
            session.scalars(select(Project)).all()
        session.add(Project(id=900, name="too big"))
        with pytest.raises(
            ConfigurationError,
            match=re.escape(f"tenant id {tenant!r} is out of range for an integer tenant column (bigint"),
        ):
            session.flush()
        session.expunge_all()
    session.info["tenant_id"] = tenant
    try:
        session.add(Project(id=901, name="too big"))
        with pytest.raises(ConfigurationError, match=re.escape("out of range for an integer tenant column (bigint")):
            session.flush()
        session.expunge_all()
    finally:
        del session.info["tenant_id"]
    assert statements == []
