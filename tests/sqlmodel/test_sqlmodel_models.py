"""What ``sa_patterns.sqlmodel`` declares, at class definition: fields pydantic knows (optional,
so API payloads never need them), a fresh column per table with the mixins' types, the
mixins' columns after the model's own, a UUID tenant through ``tenant_field``, the refusals;
and the error without the sqlmodel package. A UUID tenant is also filled at flush."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import BigInteger, DateTime, MetaData, Text, Uuid
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, select
from sqlmodel.sql.expression import SelectOfScalar
from sqlmodel_app import Article, Item, ItemCreate, Note, Project

import sa_patterns
from sa_patterns import ConfigurationError
from sa_patterns.search import Searchable as CoreSearchable
from sa_patterns.sqlmodel import Searchable, TenantMixin
from sa_patterns.testing.plugin import SQL


def test_the_columns_are_pydantic_fields_none_of_them_required() -> None:
    for name in ("tenant_id", "deleted_at", "deleted_by", "delete_batch"):
        assert name in Item.model_fields and not Item.model_fields[name].is_required()
    assert set(Item.model_json_schema()["required"]) == {"name", "project_id"}
    assert "tenant_id" not in ItemCreate.model_json_schema()["properties"]
    item = Item(name="x", project_id=1)
    assert (item.tenant_id, item.deleted_at, item.is_deleted) == (None, None, False)


def test_each_table_gets_its_own_columns_of_the_mixins_types() -> None:
    items, projects = Item.__table__.c, Project.__table__.c  # type: ignore[attr-defined]
    assert items.tenant_id is not projects.tenant_id
    for c in (items.tenant_id, projects.tenant_id, Article.__table__.c.tenant_id):  # type: ignore[attr-defined]
        assert isinstance(c.type, BigInteger) and not c.nullable and c.index
    assert isinstance(items.deleted_at.type, DateTime) and items.deleted_at.type.timezone
    assert isinstance(items.deleted_by.type, Text) and isinstance(items.delete_batch.type, Uuid)
    assert all(items[c].nullable for c in ("deleted_at", "deleted_by", "delete_batch"))
    # after the model's own columns, as on a DeclarativeBase
    assert [c.name for c in projects] == ["id", "name", "deleted_at", "deleted_by", "delete_batch", "tenant_id"]
    assert Item.__sa_tenant_kind__ == "int" and Note.__sa_tenant_kind__ == "uuid"
    assert isinstance(Note.__table__.c.tenant_id.type, Uuid)  # type: ignore[attr-defined]


def test_search_is_the_core_search_as_a_sqlmodel_select() -> None:
    class Own(SQLModel, registry=registry(metadata=MetaData())):
        pass

    class Page(Searchable, Own, table=True):
        __tablename__ = "sqm_pages"
        __searchable__ = {"title": "A", "body": "B"}
        __search_trigram__ = ("title",)
        id: int | None = Field(default=None, primary_key=True)
        title: str
        body: str

    def shape(stmt: object) -> str:  # the SQL, each bound parameter a "?"
        return re.sub(r"%\(\w+\)s", "?", str(stmt.compile(dialect=postgresql.dialect())))  # type: ignore[attr-defined]

    core = CoreSearchable.search.__func__  # type: ignore[attr-defined]
    for options in ({}, {"prefix": True}, {"fuzzy": True}, {"sort": False}, {"config": "simple"}):
        ours = Page.search("postgres tuning", **options)
        assert isinstance(ours, SelectOfScalar)
        assert shape(ours) == shape(core(Page, "postgres tuning", **options)), options


def test_tenant_type_is_refused_naming_tenant_field() -> None:
    class Own(SQLModel, registry=registry(metadata=MetaData())):
        pass

    with pytest.raises(ConfigurationError, match=r"tenant_id: uuid.UUID \| None = tenant_field\(Uuid\)"):

        class Refused(TenantMixin, Own, table=True):
            __tablename__ = "sqm_refused"
            __tenant_type__ = Uuid
            id: int | None = Field(default=None, primary_key=True)


def test_without_the_sqlmodel_package_the_import_says_so() -> None:
    run = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['sqlmodel'] = None; import sa_patterns.sqlmodel"],
        capture_output=True, text=True, check=False,
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("sa_patterns.errors.ConfigurationError: sa_patterns.sqlmodel needs the sqlmodel package")
    assert "pip install sqlmodel" in last


def test_a_uuid_tenant_is_filled_at_flush(db: Session, superuser_sql: SQL) -> None:
    tenants = [uuid.uuid4(), uuid.uuid4()]
    for tenant in tenants:
        with sa_patterns.tenant_scope(tenant):
            db.add(Note(body=str(tenant)))
            db.flush()
    with sa_patterns.tenant_scope(tenants[1]):
        assert [(n.body, n.tenant_id) for n in db.exec(select(Note))] == [(str(tenants[1]), tenants[1])]
    held = superuser_sql("SELECT tenant_id, body FROM sqm_notes ORDER BY id")
    assert [tuple(r) for r in held] == [(t, str(t)) for t in tenants]
