"""The toolkit on a SQLModel app, through SQLModel's own API (``select``, ``session.exec``), as
the app role: the tenant filled at flush and filtered, another tenant refused, soft delete and
``hard_delete``, the audit log and history, search, encrypted columns, and the async session.
What the database holds is read with raw SQL (``superuser_sql``: past row-level security)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Session, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel_app import Article, Contact, Item, ItemCreate, Project

import sa_patterns
from sa_patterns import TenantRequired, TenantViolation
from sa_patterns.context import TENANT_SETTING
from sa_patterns.testing.plugin import SQL
from sa_patterns.versioning import revert


def seed(db: Session) -> None:
    """Three tenants, inconsistent on purpose: tenant 1 has two projects and three items (one
    soft-deleted), tenant 2 one project and one item, tenant 3 a project and nothing else."""
    rows = {1: [(1, ["a1", "b1", "gone1"]), (2, [])], 2: [(3, ["a2"])], 3: [(4, [])]}
    for tenant, projects in rows.items():
        with sa_patterns.tenant_scope(tenant):
            for pid, names in projects:
                project = Project(id=pid, name=f"p{pid}")
                project.items = [Item(name=n, project_id=pid, note=f"secret {n}") for n in names]
                db.add(project)
            db.flush()
    with sa_patterns.tenant_scope(1):
        gone = db.exec(select(Item).where(Item.name == "gone1")).one()
        db.delete(gone)
        db.flush()
    db.expunge_all()


def test_the_tenant_is_filled_at_flush_and_each_tenant_sees_its_own(
    db: Session, superuser_sql: SQL, db_schema: str
) -> None:
    seed(db)
    held = superuser_sql(
        "SELECT i.tenant_id, i.name, i.deleted_at IS NOT NULL, p.tenant_id FROM sqm_items i "
        "JOIN sqm_projects p ON p.id = i.project_id ORDER BY i.id"
    )
    assert [tuple(r) for r in held] == [
        (1, "a1", False, 1), (1, "b1", False, 1), (1, "gone1", True, 1), (2, "a2", False, 2)
    ]
    for tenant, names in {1: ["a1", "b1"], 2: ["a2"], 3: []}.items():
        with sa_patterns.tenant_scope(tenant):
            assert [i.name for i in db.exec(select(Item).order_by(col(Item.id)))] == names
            projects = db.exec(select(Project).order_by(col(Project.id))).all()
            assert [len(p.items) for p in projects] == {1: [2, 0], 2: [1], 3: [0]}[tenant]
    with pytest.raises(TenantRequired):
        db.exec(select(Item)).all()
    with sa_patterns.tenant_scope(2):
        assert db.get(Item, 1) is None  # tenant 1's row
    with sa_patterns.all_tenants():  # the app role sees no other tenant even so: RLS holds
        assert db.exec(select(Item)).all() == []
    # the encrypted column: ciphertext in the table, plaintext through the model
    assert superuser_sql(
        "SELECT pg_typeof(note)::text, position(convert_to('secret', 'UTF8') in note) "
        "FROM sqm_items WHERE name = 'a2'"
    ) == [("bytea", 0)]
    with sa_patterns.tenant_scope(2):
        assert db.exec(select(Item.note)).one() == "secret a2"


def test_a_payload_never_chooses_the_tenant(db: Session, superuser_sql: SQL) -> None:
    seed(db)
    payload = ItemCreate.model_validate({"name": "new", "project_id": 3, "tenant_id": 1})
    assert "tenant_id" not in payload.model_dump()  # not a field of the API schema
    with sa_patterns.tenant_scope(2):
        db.add(Item.model_validate(payload))
        db.flush()
    assert superuser_sql("SELECT tenant_id FROM sqm_items WHERE name = 'new'") == [(2,)]
    # a table model built with another tenant's id is refused at flush, as on any model
    with sa_patterns.tenant_scope(2):
        item = db.exec(select(Item).where(Item.name == "a2")).one()
        item.tenant_id = 1
        with pytest.raises(TenantViolation, match="rows never change tenant"):
            db.flush()
        db.rollback()
        db.add(Item(name="forged", project_id=3, tenant_id=1))
        with pytest.raises(TenantViolation, match="tenant_id=1 but tenant 2 is in scope"):
            db.flush()


def test_soft_delete_restore_and_hard_delete(db: Session, superuser_sql: SQL) -> None:
    seed(db)
    with sa_patterns.tenant_scope(1):
        assert db.exec(select(Item).where(col(Item.name) == "gone1")).first() is None
        gone = db.exec(
            select(Item).where(Item.name == "gone1").execution_options(include_deleted=True)
        ).one()
        assert gone.is_deleted and gone.delete_batch is not None
        assert db.exec(select(Item.name).where(Item.is_deleted).execution_options(
            include_deleted=True)).all() == ["gone1"]
        gone.restore()
        db.flush()
        assert superuser_sql("SELECT deleted_at FROM sqm_items WHERE name = 'gone1'") == [(None,)]
        project = db.get(Project, 1)
        assert project is not None
        db.delete(project)  # soft: the project and, through the cascade, nothing else mapped
        db.flush()
        sa_patterns.hard_delete(db, db.exec(select(Item).where(Item.name == "b1")).one())
        db.flush()
    assert [tuple(r) for r in superuser_sql(
        "SELECT name, deleted_at IS NOT NULL FROM sqm_items WHERE tenant_id = 1 ORDER BY id"
    )] == [("a1", False), ("gone1", False)]
    assert superuser_sql("SELECT deleted_at IS NOT NULL FROM sqm_projects WHERE id = 1") == [(True,)]


def test_writes_are_audited_and_versioned(db: Session, superuser_sql: SQL, db_schema: str) -> None:
    with sa_patterns.tenant_scope(3), sa_patterns.actor_scope("alice"):
        db.add(Project(id=4, name="p4"))
        item = Item(name="first", project_id=4)
        db.add(item)
        db.flush()
        item.name = "second"
        db.flush()
        revert(db, item, 1)  # sets the fields back through the model: an ordinary UPDATE
        db.flush()
        db.delete(item)
        db.flush()
        versions = sa_patterns.history(db, item)
        assert [v.values["name"] for v in versions] == ["first", "second", "first", "first"]
        assert [v.values["deleted_at"] is None for v in versions] == [True, True, True, False]
    logged = superuser_sql(
        "SELECT operation, tenant_id, actor_id, new_row->>'name' FROM audit_log "
        "WHERE table_name = :t ORDER BY id", t=f"{db_schema}.sqm_items",
    )
    assert [tuple(r) for r in logged] == [
        ("INSERT", "3", "alice", "first"), ("UPDATE", "3", "alice", "second"),
        ("UPDATE", "3", "alice", "first"), ("SOFT_DELETE", "3", "alice", None),
    ]


def test_search_through_session_exec(db: Session) -> None:
    for tenant, titles in {1: ["PostgreSQL tuning", "Cooking"], 2: ["PostgreSQL at scale"]}.items():
        with sa_patterns.tenant_scope(tenant):
            db.add_all(Article(title=t, body="text") for t in titles)
            db.flush()
    with sa_patterns.tenant_scope(1):
        found = db.exec(Article.search("postgresql")).all()
        assert [a.title for a in found] == ["PostgreSQL tuning"]
        assert db.exec(Article.search("tuning", prefix=True, sort=False)).one().title == "PostgreSQL tuning"


def test_blind_index_equality_through_session_exec(db: Session, superuser_sql: SQL) -> None:
    for tenant in (1, 2):
        with sa_patterns.tenant_scope(tenant):
            db.add_all([Contact(email="ann@example.com"), Contact(email=f"t{tenant}@example.com")])
            db.flush()
    with sa_patterns.tenant_scope(2):
        found = db.exec(select(Contact).where(Contact.email == "ann@example.com")).all()
        assert [(c.email, c.tenant_id) for c in found] == [("ann@example.com", 2)]
        found[0].email = "bob@example.com"  # the digest follows the change
        db.flush()
        assert db.exec(select(Contact.id).where(Contact.email == "ann@example.com")).all() == []
        assert db.exec(select(Contact.id).where(Contact.email == "bob@example.com")).all() == [found[0].id]
    held = superuser_sql("SELECT count(DISTINCT email_bidx), count(*) FILTER (WHERE email_bidx IS NULL) FROM sqm_contacts")
    assert held == [(4, 0)]  # ann, t1, t2, bob: one digest each; every row has one


async def test_async_session(async_db: AsyncSession, async_connection: AsyncConnection) -> None:
    for tenant in (1, 2):
        with sa_patterns.tenant_scope(tenant):
            project = Project(id=tenant, name="p")
            project.items = [Item(name=f"i{tenant}", project_id=tenant)]
            async_db.add(project)
            await async_db.flush()
    with sa_patterns.tenant_scope(2):
        items = (await async_db.exec(select(Item))).all()
        assert [(i.name, i.tenant_id) for i in items] == [("i2", 2)]
        await async_db.delete(items[0])
        await async_db.flush()
        assert (await async_db.exec(select(Item))).all() == []
    with pytest.raises(TenantRequired):
        await async_db.exec(select(Item))
    # the rows as the database holds them, read on the session's connection tenant by tenant
    held = []
    for tenant in (1, 2):
        await async_connection.execute(
            text("SELECT set_config(:name, :value, true)"), {"name": TENANT_SETTING, "value": str(tenant)}
        )
        rows = await async_connection.execute(
            text("SELECT name, tenant_id, deleted_at IS NOT NULL FROM sqm_items")
        )
        held += [tuple(r) for r in rows]
    assert held == [("i1", 1, False), ("i2", 2, True)]
