"""A FastAPI app where every request runs as its tenant: TenantMiddleware takes the tenant and
the user from the request (headers here; a JWT claim or a subdomain work the same), names the
request, and resets everything when the request ends. The audit log records who and which
request; background tasks run as their request's tenant. A second app scopes one router with
tenant_dependency instead."""

import asyncio

import httpx
from fastapi import APIRouter, BackgroundTasks, FastAPI
from sqlalchemy import URL, create_engine, func, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from starlette.requests import HTTPConnection

import sa_patterns
from sa_patterns.context import current_tenant
from sa_patterns.integrations.asgi import TenantMiddleware
from sa_patterns.integrations.fastapi import tenant_dependency


class Base(DeclarativeBase):
    pass


class Invoice(sa_patterns.TenantMixin, sa_patterns.Audited, Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    amount: Mapped[int]


def tenant_of(connection: HTTPConnection) -> int | None:
    """The app's own rule. None: the request names no tenant, and gets a 403."""
    value = connection.headers.get("x-tenant")
    return int(value) if value and value.isdigit() else None


async def user_of(connection: HTTPConnection) -> str | None:  # resolvers may be async
    return connection.headers.get("x-user")


def create_app(Session: async_sessionmaker, SyncSession: sessionmaker, counted: list) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TenantMiddleware, tenant=tenant_of, actor=user_of)

    async def count_invoices() -> None:  # after the response, still as the request's tenant
        async with Session() as s:
            counted.append((current_tenant(), await s.scalar(select(func.count(Invoice.id)))))

    @app.post("/invoices")
    async def create_invoice(amount: int, tasks: BackgroundTasks) -> dict:
        async with Session.begin() as s:  # tenant_id filled from the scope
            s.add(Invoice(amount=amount))
        tasks.add_task(count_invoices)
        return {"tenant": current_tenant()}

    @app.get("/invoices")
    def list_invoices() -> list[int]:  # a sync endpoint: the thread pool carries the scope
        with SyncSession() as s:
            return list(s.scalars(select(Invoice.amount).order_by(Invoice.amount)))

    return app


def create_app_with_dependency(Session: async_sessionmaker) -> FastAPI:
    """Per-router scoping: only the routes under /api need (and get) a tenant."""
    api = APIRouter(prefix="/api", dependencies=[tenant_dependency(tenant=tenant_of, actor=user_of)])

    @api.get("/total")
    async def total() -> int:
        async with Session() as s:
            return await s.scalar(select(func.coalesce(func.sum(Invoice.amount), 0)))

    app = FastAPI()
    app.include_router(api)

    @app.get("/health")
    async def health() -> str:  # outside the router: no tenant needed
        return "ok"

    return app


async def run(url: URL, SyncSession: sessionmaker) -> None:
    engine = create_async_engine(url)
    Session = sa_patterns.install(async_sessionmaker(engine, expire_on_commit=False))
    counted: list = []
    app = create_app(Session, SyncSession, counted)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as c:
        # concurrent requests of two tenants: each sees and writes only its own rows
        created = await asyncio.gather(*(
            c.post("/invoices", params={"amount": n}, headers={"x-tenant": str(1 + n % 2), "x-user": "ann"})
            for n in range(10)
        ))
        assert [r.json()["tenant"] for r in created] == [1 + n % 2 for n in range(10)]
        request_id = created[0].headers["x-request-id"]  # generated, echoed, audited
        listed = await c.get("/invoices", headers={"x-tenant": "2"})
        assert listed.json() == [1, 3, 5, 7, 9]
        missing = await c.get("/invoices")  # no tenant: refused before the endpoint runs
        assert missing.status_code == 403
    assert {tenant for tenant, _ in counted} == {1, 2} and all(n <= 5 for _, n in counted)
    assert current_tenant() is None  # nothing outlives a request

    app = create_app_with_dependency(Session)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as c:
        assert (await c.get("/api/total", headers={"x-tenant": "1"})).json() == 20
        assert (await c.get("/api/total")).status_code == 403
        assert (await c.get("/health")).json() == "ok"

    async with engine.connect() as conn:
        entry = (await conn.execute(text(
            "SELECT actor_id, request FROM audit_log WHERE request->>'request_id' = :r"
        ), {"r": request_id})).one()
    assert entry.actor_id == "ann"
    assert entry.request == {"request_id": request_id, "method": "POST", "path": "/invoices"}
    await engine.dispose()


def main(url: URL) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)  # applications: alembic --autogenerate
    asyncio.run(run(url, sa_patterns.install(sessionmaker(engine))))
    engine.dispose()
