"""A Litestar app scoped by ``TenantPlugin``: concurrent requests of three tenants on async and
sync (``sync_to_thread``) handlers, background tasks, streams, errors, a missing tenant (403
through Litestar's exception handling, before any SQL) and a leaked scope, through Litestar's
test client. What each request wrote, with its audit entry, is read back as the superuser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from asgi_driver import talk, websocket
from litestar import Litestar, Response, WebSocket, get, post, websocket_listener
from litestar.background_tasks import BackgroundTask, BackgroundTasks
from litestar.connection import ASGIConnection
from litestar.response import Stream
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker
from web_models import Note, read_notes, read_notes_sync

import sa_patterns
from sa_patterns.context import current_actor, current_request_metadata, current_tenant
from sa_patterns.integrations.litestar import TenantPlugin


def tenant_header(connection: ASGIConnection[Any, Any, Any, Any]) -> int | None:
    assert isinstance(connection, ASGIConnection)
    value = connection.headers.get("x-tenant")
    return int(value) if value is not None else None


async def user_header(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    return connection.headers.get("x-user")


def request_id() -> str:
    meta = current_request_metadata()
    assert meta is not None
    return meta["request_id"]


def build_app(sessions: sessionmaker[Session], async_sessions: async_sessionmaker[AsyncSession]) -> Litestar:
    @get("/notes")
    async def notes() -> dict[str, Any]:
        seen = await read_notes(async_sessions)
        await asyncio.sleep(0)
        async with async_sessions.begin() as s:
            s.add(Note(body=f"req {request_id()}"))
        return {"tenant": current_tenant(), "request_id": request_id(), "notes": seen}

    @get("/notes-sync", sync_to_thread=True)
    def notes_sync() -> dict[str, Any]:
        seen = read_notes_sync(sessions)
        with sessions.begin() as s:
            s.add(Note(body=f"req {request_id()}"))
        return {"tenant": current_tenant(), "request_id": request_id(), "notes": seen}

    @post("/later")
    async def later() -> Response[dict[str, str]]:
        rid = request_id()

        async def write() -> None:
            await asyncio.sleep(0)
            async with async_sessions.begin() as s:
                s.add(Note(body=f"bg {rid}"))

        def write_sync() -> None:  # Litestar runs it in the thread pool
            with sessions.begin() as s:
                s.add(Note(body=f"bg-sync {rid}"))

        return Response({"request_id": rid}, background=BackgroundTasks([BackgroundTask(write), BackgroundTask(write_sync)]))

    @get("/stream")
    async def stream() -> Stream:
        async def body() -> AsyncIterator[str]:
            for row in await read_notes(async_sessions):
                await asyncio.sleep(0)
                yield json.dumps([current_tenant(), *row]) + "\n"

        return Stream(body())

    @get("/boom")
    async def boom() -> None:
        async with async_sessions.begin() as s:
            s.add(Note(body=f"boom {request_id()}"))
            raise RuntimeError("the handler failed")

    @get("/ping")
    async def ping() -> dict[str, Any]:
        async with async_sessions() as s:
            await s.execute(text("SELECT 1"))
        return {"tenant": current_tenant(), "actor": current_actor()}

    @websocket_listener("/live")
    async def live(data: str, socket: WebSocket[Any, Any, Any]) -> dict[str, Any]:
        return {"tenant": current_tenant(), "notes": await read_notes(async_sessions)}

    return Litestar(
        route_handlers=[notes, notes_sync, later, stream, boom, ping, live],
        plugins=[TenantPlugin(tenant=tenant_header, actor=user_header)],
        debug=False,
    )


def as_tenant(tenant: int) -> dict[str, str]:
    return {"x-tenant": str(tenant), "x-user": f"user-{tenant}"}


async def test_concurrent_requests_see_and_write_only_their_tenant(
    sessions: Any, async_sessions: Any, tenants: tuple[int, ...], written: Any
) -> None:
    calls = [(tenants[i % 3], "/notes" if i % 2 else "/notes-sync") for i in range(50)]
    async with AsyncTestClient(app=build_app(sessions, async_sessions)) as c:
        responses = await asyncio.gather(*(c.get(path, headers=as_tenant(t)) for t, path in calls))
    by_request: dict[str, tuple[int, str]] = {}
    for (tenant, path), response in zip(calls, responses, strict=True):
        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["tenant"] == tenant
        assert {row[0] for row in payload["notes"]} == {tenant}
        assert response.headers["x-request-id"] == payload["request_id"]
        by_request[payload["request_id"]] = (tenant, path)
    rows = written("req ")
    assert len(rows) == len(by_request) == 50
    for row in rows:
        rid = row.body.removeprefix("req ")
        tenant, path = by_request[rid]
        assert (row.tenant_id, row.audit_tenant, row.actor_id) == (tenant, str(tenant), f"user-{tenant}")
        assert row.request == {"request_id": rid, "method": "GET", "path": path}


async def test_background_tasks_and_streams_run_as_their_request_tenant(
    sessions: Any, async_sessions: Any, tenants: tuple[int, ...], written: Any
) -> None:
    calls = [tenants[i % 3] for i in range(30)]
    async with AsyncTestClient(app=build_app(sessions, async_sessions)) as c:
        responses = await asyncio.gather(*(c.post("/later", headers=as_tenant(t)) for t in calls))
        streams = await asyncio.gather(*(c.get("/stream", headers=as_tenant(t)) for t in calls))
    by_request = {r.json()["request_id"]: t for t, r in zip(calls, responses, strict=True)}
    rows = written("bg")
    assert sorted(r.body.split(" ")[0] for r in rows) == ["bg"] * 30 + ["bg-sync"] * 30
    for row in rows:
        assert row.tenant_id == by_request[row.body.split(" ")[1]]
    for tenant, response in zip(calls, streams, strict=True):
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert len(lines) >= 2 and {(scope, t) for scope, t, _ in lines} == {(tenant, tenant)}


async def test_missing_tenant_is_403_before_any_sql(
    sessions: Any, async_sessions: Any, statements: list[str]
) -> None:
    async with AsyncTestClient(app=build_app(sessions, async_sessions)) as c:
        refused = await c.get("/ping", headers={"x-user": "someone"})
        statements_after_refusal = list(statements)
        allowed = await c.get("/ping", headers={"x-tenant": "1"})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "no tenant could be resolved for this request"
    assert statements_after_refusal == []
    assert allowed.status_code == 200 and statements


async def test_request_after_an_error_inherits_no_scope(
    sessions: Any, async_sessions: Any, tenants: tuple[int, ...], written: Any
) -> None:
    async with AsyncTestClient(app=build_app(sessions, async_sessions)) as c:
        failed = await c.get("/boom", headers=as_tenant(tenants[0]))
        unscoped = await c.get("/ping")
        other = await c.get("/notes", headers=as_tenant(tenants[1]))
    assert failed.status_code == 500
    assert unscoped.status_code == 403
    assert {row[0] for row in other.json()["notes"]} == {tenants[1]}
    assert written("boom") == []
    assert current_tenant() is None and current_request_metadata() is None


async def test_a_scope_leaked_into_the_worker_is_refused(
    sessions: Any, async_sessions: Any, tenants: tuple[int, ...], statements: list[str]
) -> None:
    """The ConfigurationError becomes Litestar's 500; the handler never runs."""
    app = build_app(sessions, async_sessions)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/ping", "raw_path": b"/ping", "root_path": "", "query_string": b"",
        "headers": [(b"x-tenant", str(tenants[1]).encode())], "server": ("app", 80), "client": ("127.0.0.1", 5000),
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    with sa_patterns.tenant_scope(tenants[0]):  # as if left set by earlier work on the task
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 500 and statements == []
    sent.clear()
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 200 and statements  # the same request, on a clean task


async def test_websocket_is_scoped_and_refused_without_tenant(
    sessions: Any, async_sessions: Any, tenants: tuple[int, ...]
) -> None:
    app = build_app(sessions, async_sessions)
    sent = await talk(app, websocket(headers=as_tenant(tenants[2])), [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "one"},
        {"type": "websocket.disconnect", "code": 1000},
    ])
    assert [m["type"] for m in sent][:2] == ["websocket.accept", "websocket.send"]
    reply = json.loads(sent[1].get("text") or sent[1]["bytes"])
    assert reply["tenant"] == tenants[2] and {row[0] for row in reply["notes"]} == {tenants[2]}
    refused = await talk(app, websocket(), [{"type": "websocket.connect"}])
    assert [(m["type"], m["code"]) for m in refused] == [("websocket.close", 1008)]
    assert current_tenant() is None
