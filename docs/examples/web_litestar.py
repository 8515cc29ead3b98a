"""A Litestar app where every request runs as its tenant: TenantPlugin adds the middleware
(after authentication, so a resolver can read connection.user); here the tenant is the
subdomain. Background tasks and sync handlers run as their request's tenant."""

import asyncio

from litestar import Litestar, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.connection import ASGIConnection
from litestar.testing import AsyncTestClient
from sqlalchemy import URL, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
from sa_patterns.context import current_tenant
from sa_patterns.integrations.litestar import TenantPlugin


class Base(DeclarativeBase):
    pass


class Ticket(sa_patterns.TenantMixin, Base):
    __tablename__ = "tickets"
    __tenant_type__ = String(63)  # tenants are subdomains
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


def tenant_of(connection: ASGIConnection) -> str | None:
    """acme.example.com → "acme"; the bare domain names no tenant (403)."""
    labels = (connection.url.hostname or "").split(".")
    return labels[0] if len(labels) == 3 else None


def create_app(Session: sessionmaker, seen: list) -> Litestar:
    def log_size() -> None:  # a background task: after the response, as the request's tenant
        with Session() as s:
            seen.append((current_tenant(), s.scalar(select(func.count(Ticket.id)))))

    @post("/tickets/{title:str}", sync_to_thread=True)
    def open_ticket(request: Request) -> Response[dict]:
        with Session.begin() as s:
            s.add(Ticket(title=request.path_params["title"]))
        return Response({"tenant": current_tenant()}, background=BackgroundTask(log_size))

    @get("/tickets", sync_to_thread=True)
    def tickets() -> list[str]:
        with Session() as s:
            return list(s.scalars(select(Ticket.title).order_by(Ticket.title)))

    return Litestar([open_ticket, tickets], plugins=[TenantPlugin(tenant=tenant_of)])


async def run(Session: sessionmaker) -> None:
    seen: list = []
    acme, globex = {"host": "acme.example.com"}, {"host": "globex.example.com"}
    async with AsyncTestClient(create_app(Session, seen)) as c:
        await asyncio.gather(
            c.post("/tickets/printer", headers=acme),
            c.post("/tickets/vpn", headers=globex),
            c.post("/tickets/coffee", headers=acme),
        )
        assert (await c.get("/tickets", headers=acme)).json() == ["coffee", "printer"]
        assert (await c.get("/tickets", headers=globex)).json() == ["vpn"]
        assert (await c.get("/tickets", headers={"host": "example.com"})).status_code == 403
    assert sorted(tenant for tenant, _ in seen) == ["acme", "acme", "globex"]


def main(url: URL) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)  # applications: alembic --autogenerate
    asyncio.run(run(sa_patterns.install(sessionmaker(engine))))
    engine.dispose()
