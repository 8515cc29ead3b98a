"""The SQLModel app served by FastAPI (driven through ``httpx.ASGITransport``; its sync endpoints
run in FastAPI's thread pool), three tenants taking turns through the ``X-Tenant`` header: a payload never chooses its tenant, each tenant lists and reads its own
items only, a delete is a soft delete; what the database holds is read with raw SQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from sqlmodel_app import Article, Project, make_app

import sa_patterns
from sa_patterns.testing.plugin import SQL


@pytest.fixture
async def client(sessions: sessionmaker[Session]) -> AsyncIterator[httpx.AsyncClient]:
    with sessions() as db:  # the projects and articles the items belong to
        for tenant, pid in ((1, 1), (2, 2), (3, 3)):
            with sa_patterns.tenant_scope(tenant):
                db.add(Project(id=pid, name=f"p{pid}"))
                db.add(Article(title=f"PostgreSQL for tenant {tenant}", body="rls"))
                db.flush()
        db.commit()
    transport = httpx.ASGITransport(app=make_app(sessions))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
        yield c


async def test_each_tenant_through_the_api(client: httpx.AsyncClient, superuser_sql: SQL) -> None:
    async def post(tenant: int, body: dict[str, object]) -> dict[str, object]:
        response = await client.post("/items", json=body, headers={"X-Tenant": str(tenant)})
        assert response.status_code == 200, response.text
        data: dict[str, object] = response.json()
        return data

    # tenant 1 writes two items, one with a forged tenant_id (ignored: not in ItemCreate)
    first = await post(1, {"name": "a", "project_id": 1})
    forged = await post(1, {"name": "b", "project_id": 1, "tenant_id": 2})
    assert "tenant_id" not in forged
    await post(2, {"name": "c", "project_id": 2, "note": "for 2 only"})
    assert [tuple(r) for r in superuser_sql("SELECT name, tenant_id FROM sqm_items ORDER BY id")] == [
        ("a", 1), ("b", 1), ("c", 2)
    ]

    async def names(tenant: int) -> list[object]:
        listed = await client.get("/items", headers={"X-Tenant": str(tenant)})
        return [i["name"] for i in listed.json()]

    assert (await names(1), await names(2), await names(3)) == (["a", "b"], ["c"], [])
    assert (await client.get(f"/items/{first['id']}", headers={"X-Tenant": "2"})).status_code == 404
    assert (await client.get(f"/items/{first['id']}", headers={"X-Tenant": "1"})).json()["name"] == "a"

    assert (await client.delete(f"/items/{first['id']}", headers={"X-Tenant": "3"})).status_code == 404
    assert (await client.delete(f"/items/{first['id']}", headers={"X-Tenant": "1"})).status_code == 204
    assert await names(1) == ["b"]
    assert superuser_sql("SELECT deleted_at IS NOT NULL FROM sqm_items WHERE name = 'a'") == [(True,)]

    found = await client.get("/search", params={"q": "postgresql tenant"}, headers={"X-Tenant": "3"})
    assert found.json() == [3]  # tenant 3's article, not the two others
