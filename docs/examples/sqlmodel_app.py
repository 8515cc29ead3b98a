"""A FastAPI app on SQLModel (async sessions) with tenant scoping, soft delete and the audit log:
the mixins come from sa_patterns.sqlmodel, and the client never sends (nor chooses) a tenant_id."""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException
from sqlalchemy import URL, MetaData, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

import sa_patterns
from sa_patterns import TenantViolation, soft_unique
from sa_patterns.sqlmodel import Audited, SoftDeleteMixin, TenantMixin


class Base(SQLModel, registry=registry(metadata=MetaData())):
    """An app usually puts its tables in SQLModel.metadata; this example keeps its own."""


class TodoBase(SQLModel):  # what a client sends: no tenant_id, no soft-delete columns
    title: str
    done: bool = False


class Todo(SoftDeleteMixin, TenantMixin, Audited, TodoBase, Base, table=True):
    __table_args__ = (soft_unique("title"),)  # unique per tenant among live rows
    id: int | None = Field(default=None, primary_key=True)


class TodoCreate(TodoBase):
    pass


class TodoPublic(TodoBase):
    id: int


def make_app(Sessions: async_sessionmaker[AsyncSession]) -> FastAPI:
    app = FastAPI()

    async def db(x_tenant: Annotated[int, Header()]) -> AsyncIterator[AsyncSession]:
        # the tenant comes from the request (in production: from the verified token)
        async with Sessions() as session:
            session.info["tenant_id"] = x_tenant
            yield session

    Db = Annotated[AsyncSession, Depends(db)]

    @app.post("/todos", response_model=TodoPublic)
    async def create(payload: TodoCreate, session: Db) -> Todo:
        todo = Todo.model_validate(payload)  # tenant_id is filled at flush
        session.add(todo)
        await session.commit()
        return todo

    @app.get("/todos", response_model=list[TodoPublic])
    async def list_todos(session: Db) -> list[Todo]:
        return list(await session.exec(select(Todo).order_by(Todo.id)))

    @app.delete("/todos/{todo_id}", status_code=204)
    async def delete(todo_id: int, session: Db) -> None:
        todo = await session.get(Todo, todo_id)  # another tenant's todo: None
        if todo is None:
            raise HTTPException(404)
        await session.delete(todo)  # a soft delete
        await session.commit()

    return app


async def run(url: URL) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:  # applications: alembic revision --autogenerate
        await conn.run_sync(sa_patterns.create_all, Base.metadata)
    Sessions = sa_patterns.install(async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False))
    app = make_app(Sessions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as c:
        # a forged tenant_id in the body is not a field of TodoCreate: ignored
        for tenant, title in ((1, "write docs"), (1, "ship"), (2, "other tenant's")):
            body = {"title": title, "tenant_id": 2}
            assert (await c.post("/todos", json=body, headers={"x-tenant": str(tenant)})).status_code == 200
        titles = [t["title"] for t in (await c.get("/todos", headers={"x-tenant": "1"})).json()]
        assert titles == ["write docs", "ship"]
        assert (await c.delete("/todos/3", headers={"x-tenant": "1"})).status_code == 404
        assert (await c.delete("/todos/1", headers={"x-tenant": "1"})).status_code == 204
        titles = [t["title"] for t in (await c.get("/todos", headers={"x-tenant": "1"})).json()]
        assert titles == ["ship"]

    # a table model built with another tenant's id is refused at flush
    async with Sessions() as session:
        session.info["tenant_id"] = 1
        session.add(Todo(title="intruder", tenant_id=2))
        try:
            await session.flush()
            raise AssertionError("unreachable")
        except TenantViolation:
            await session.rollback()

    # what the database holds: the soft-deleted row and the audit log
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT tenant_id, title, deleted_at IS NOT NULL FROM todo ORDER BY id"))
        assert [tuple(r) for r in rows] == [
            (1, "write docs", True), (1, "ship", False), (2, "other tenant's", False)
        ]
        logged = await conn.execute(text("SELECT operation FROM audit_log WHERE tenant_id = '1' ORDER BY id"))
        assert [r[0] for r in logged] == ["INSERT", "INSERT", "SOFT_DELETE"]
    await engine.dispose()


def main(url: URL) -> None:
    asyncio.run(run(url))
