"""``TenantMiddleware`` on a plain Starlette app: Starlette's own background tasks, websockets
(scoped for the connection's life, refused at the handshake without a tenant), the resolver's
argument, and lifespan events passing through unscoped. Websockets and lifespan are driven by
their ASGI messages (what a server sends), in the test's task."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_driver import talk, websocket
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from web_models import Note, read_notes

from sa_patterns.context import current_request_metadata, current_tenant
from sa_patterns.integrations.asgi import TenantMiddleware


def subdomain_tenant(connection: HTTPConnection) -> int | None:
    """The tenant is the subdomain: ``t1001.example.com`` → 1001."""
    assert isinstance(connection, HTTPConnection)
    host = connection.url.hostname or ""
    label = host.split(".", 1)[0]
    return int(label[1:]) if label.startswith("t") and label[1:].isdigit() else None


def build_app(async_sessions: async_sessionmaker[AsyncSession], lifespan_seen: list[Any]) -> Starlette:
    async def later(request: Request) -> JSONResponse:
        rid = request.state.request_id

        async def write() -> None:
            async with async_sessions.begin() as s:
                s.add(Note(body=f"bg {rid}"))

        tasks = BackgroundTasks()
        tasks.add_task(write)
        return JSONResponse({"request_id": rid}, background=tasks)

    async def live(websocket: WebSocket) -> None:
        await websocket.accept()
        while (message := await websocket.receive_text()) != "bye":
            notes = await read_notes(async_sessions)
            await websocket.send_json({"tenant": current_tenant(), "message": message, "notes": notes})
        await websocket.close()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        lifespan_seen.append((current_tenant(), current_request_metadata()))
        yield

    app = Starlette(
        routes=[Route("/later", later, methods=["POST"]), WebSocketRoute("/live", live)],
        lifespan=lifespan,
    )
    app.add_middleware(TenantMiddleware, tenant=subdomain_tenant)
    return app


async def test_starlette_background_tasks_run_as_their_request_tenant(
    async_sessions: Any, tenants: tuple[int, ...], written: Any
) -> None:
    app = build_app(async_sessions, [])
    calls = [tenants[i % 3] for i in range(30)]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport) as c:
        responses = await asyncio.gather(*(c.post(f"http://t{t}.example.com/later") for t in calls))
    by_request = {r.json()["request_id"]: t for t, r in zip(calls, responses, strict=True)}
    rows = written("bg ")
    assert len(rows) == 30
    for row in rows:
        rid = row.body.removeprefix("bg ")
        assert row.tenant_id == by_request[rid] and row.request["request_id"] == rid
        assert row.request["method"] == "POST" and row.request["path"] == "/later"


async def test_websocket_is_scoped_for_its_whole_life(async_sessions: Any, tenants: tuple[int, ...]) -> None:
    app = build_app(async_sessions, [])
    sent = await talk(app, websocket(f"t{tenants[0]}.example.com"), [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "one"},
        {"type": "websocket.receive", "text": "two"},
        {"type": "websocket.receive", "text": "bye"},
    ])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.send", "websocket.close"]
    for message, reply in zip(("one", "two"), (json.loads(m["text"]) for m in sent[1:3]), strict=True):
        assert reply["tenant"] == tenants[0] and reply["message"] == message
        assert {row[0] for row in reply["notes"]} == {tenants[0]}
    assert current_tenant() is None


async def test_websocket_without_tenant_is_refused_at_the_handshake(async_sessions: Any) -> None:
    app = build_app(async_sessions, [])
    sent = await talk(app, websocket("www.example.com"), [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "no tenant could be resolved for this request"}]


async def test_lifespan_passes_through_unscoped(async_sessions: Any) -> None:
    lifespan_seen: list[Any] = []
    app = build_app(async_sessions, lifespan_seen)
    sent = await talk(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, [
        {"type": "lifespan.startup"}, {"type": "lifespan.shutdown"},
    ])
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert lifespan_seen == [(None, None)]
