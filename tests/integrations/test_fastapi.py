"""FastAPI apps scoped by ``TenantMiddleware`` and by ``tenant_dependency``, the same tests for
both: concurrent requests of three tenants on async and sync (thread pool) endpoints, background
tasks, streamed bodies, errors, a missing tenant and a leaked scope. What each request saw is
in its response; what it wrote, with its audit entry, is read back as the superuser."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_driver import talk, websocket
from fastapi import BackgroundTasks, FastAPI, WebSocket
from fastapi.responses import StreamingResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker
from web_models import Note, read_notes, read_notes_sync

import sa_patterns
from sa_patterns.context import current_actor, current_request_metadata, current_tenant
from sa_patterns.errors import ConfigurationError
from sa_patterns.integrations.asgi import TenantMiddleware
from sa_patterns.integrations.fastapi import tenant_dependency

MODES = ("middleware", "dependency")


def tenant_header(connection: Any) -> int | None:
    value = connection.headers.get("x-tenant")
    return int(value) if value is not None else None


async def user_header(connection: Any) -> str | None:  # an async resolver
    value: str | None = connection.headers.get("x-user")
    return value


def request_id() -> str:
    meta = current_request_metadata()
    assert meta is not None
    return meta["request_id"]


def build_app(
    mode: str,
    sessions: sessionmaker[Session],
    async_sessions: async_sessionmaker[AsyncSession],
    *,
    required: bool = True,
) -> FastAPI:
    if mode == "dependency":
        app = FastAPI(
            dependencies=[tenant_dependency(tenant=tenant_header, actor=user_header, required=required)]
        )
    else:
        app = FastAPI()
        app.add_middleware(TenantMiddleware, tenant=tenant_header, actor=user_header, required=required)

    @app.get("/notes")
    async def notes() -> dict[str, Any]:
        seen = await read_notes(async_sessions)
        await asyncio.sleep(0)  # other requests run between the read and the write
        async with async_sessions.begin() as s:
            s.add(Note(body=f"req {request_id()}"))
        return {"tenant": current_tenant(), "request_id": request_id(), "notes": seen}

    @app.get("/notes-sync")
    def notes_sync() -> dict[str, Any]:  # runs in the thread pool
        seen = read_notes_sync(sessions)
        with sessions.begin() as s:
            s.add(Note(body=f"req {request_id()}"))
        return {"tenant": current_tenant(), "request_id": request_id(), "notes": seen}

    @app.post("/later")
    async def later(tasks: BackgroundTasks) -> dict[str, Any]:
        rid = request_id()

        async def write() -> None:
            await asyncio.sleep(0)
            async with async_sessions.begin() as s:
                s.add(Note(body=f"bg {rid}"))

        def write_sync() -> None:
            with sessions.begin() as s:
                s.add(Note(body=f"bg-sync {rid}"))

        tasks.add_task(write)
        tasks.add_task(write_sync)
        return {"request_id": rid}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            for row in await read_notes(async_sessions):
                await asyncio.sleep(0)
                yield json.dumps([current_tenant(), *row]) + "\n"

        return StreamingResponse(body(), media_type="application/x-ndjson")

    @app.get("/boom")
    async def boom() -> None:
        async with async_sessions.begin() as s:
            s.add(Note(body=f"boom {request_id()}"))
            raise RuntimeError("the endpoint failed")

    @app.websocket("/live")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        while await ws.receive_text() != "bye":
            await ws.send_json({"tenant": current_tenant(), "notes": await read_notes(async_sessions)})
        await ws.close()

    @app.get("/ping")
    async def ping() -> dict[str, Any]:
        async with async_sessions() as s:  # SQL that needs no tenant
            await s.execute(text("SELECT 1"))
        return {"tenant": current_tenant(), "actor": current_actor(), "meta": current_request_metadata()}

    return app


def client(app: FastAPI, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://app")


def as_tenant(tenant: int) -> dict[str, str]:
    return {"x-tenant": str(tenant), "x-user": f"user-{tenant}"}


@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_requests_see_and_write_only_their_tenant(
    mode: str, sessions: Any, async_sessions: Any, tenants: tuple[int, ...], written: Any
) -> None:
    app = build_app(mode, sessions, async_sessions)
    calls = [
        (tenants[i % 3], "/notes" if i % 2 else "/notes-sync") for i in range(50)
    ]
    async with client(app) as c:
        responses = await asyncio.gather(*(c.get(path, headers=as_tenant(t)) for t, path in calls))
    by_request: dict[str, tuple[int, str]] = {}
    for (tenant, path), response in zip(calls, responses, strict=True):
        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["tenant"] == tenant
        seen_tenants = {row[0] for row in payload["notes"]}
        assert seen_tenants == {tenant}
        assert [f"seed {tenant} a", f"seed {tenant} b"] == [b for _, b in payload["notes"]][:2]
        by_request[payload["request_id"]] = (tenant, path)
        if mode == "middleware":
            assert response.headers["x-request-id"] == payload["request_id"]
    assert len(by_request) == 50  # one id per request
    rows = written("req ")
    assert len(rows) == 50
    for row in rows:
        rid = row.body.removeprefix("req ")
        tenant, path = by_request[rid]
        assert row.tenant_id == tenant
        assert row.audit_tenant == str(tenant)
        assert row.actor_id == f"user-{tenant}"
        assert row.request == {"request_id": rid, "method": "GET", "path": path}
    assert current_tenant() is None and current_request_metadata() is None


@pytest.mark.parametrize("mode", MODES)
async def test_background_tasks_run_as_their_request_tenant(
    mode: str, sessions: Any, async_sessions: Any, tenants: tuple[int, ...], written: Any
) -> None:
    app = build_app(mode, sessions, async_sessions)
    calls = [tenants[i % 3] for i in range(30)]
    async with client(app) as c:
        responses = await asyncio.gather(*(c.post("/later", headers=as_tenant(t)) for t in calls))
    by_request = {r.json()["request_id"]: t for t, r in zip(calls, responses, strict=True)}
    rows = written("bg")
    assert sorted(r.body.split(" ")[0] for r in rows) == ["bg"] * 30 + ["bg-sync"] * 30
    for row in rows:
        rid = row.body.split(" ")[1]
        assert row.tenant_id == by_request[rid]
        assert row.actor_id == f"user-{by_request[rid]}"
        assert row.request is not None and row.request["request_id"] == rid


@pytest.mark.parametrize("mode", MODES)
async def test_streamed_body_runs_in_its_tenant(
    mode: str, sessions: Any, async_sessions: Any, tenants: tuple[int, ...]
) -> None:
    app = build_app(mode, sessions, async_sessions)
    async with client(app) as c:
        responses = await asyncio.gather(*(c.get("/stream", headers=as_tenant(t)) for t in tenants * 5))
    for tenant, response in zip(tenants * 5, responses, strict=True):
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert len(lines) >= 2
        assert {(scope, row_tenant) for scope, row_tenant, _ in lines} == {(tenant, tenant)}


@pytest.mark.parametrize("mode", MODES)
async def test_missing_tenant_is_403_before_any_sql(
    mode: str, sessions: Any, async_sessions: Any, statements: list[str]
) -> None:
    app = build_app(mode, sessions, async_sessions)
    async with client(app) as c:
        response = await c.get("/ping", headers={"x-user": "someone"})
        statements_after_refusal = list(statements)
        allowed = await c.get("/ping", headers={"x-tenant": "1"})
    assert response.status_code == 403
    assert response.json() == {"detail": "no tenant could be resolved for this request"}
    assert statements_after_refusal == []
    assert allowed.status_code == 200 and statements  # the same endpoint does send SQL


@pytest.mark.parametrize("mode", MODES)
async def test_optional_tenant_runs_unscoped_with_actor_and_request_id(
    mode: str, sessions: Any, async_sessions: Any
) -> None:
    app = build_app(mode, sessions, async_sessions, required=False)
    async with client(app) as c:
        response = await c.get("/ping", headers={"x-user": "someone", "x-request-id": "abc-123"})
    assert response.status_code == 200
    assert response.json() == {
        "tenant": None,
        "actor": "someone",
        "meta": {"request_id": "abc-123", "method": "GET", "path": "/ping"},
    }


@pytest.mark.parametrize("mode", MODES)
async def test_request_after_an_error_inherits_no_scope(
    mode: str, sessions: Any, async_sessions: Any, tenants: tuple[int, ...], written: Any
) -> None:
    app = build_app(mode, sessions, async_sessions)
    # httpx's ASGI transport runs the app in the caller's task: a scope the app failed to
    # reset would still be in force here, and in the next request.
    async with client(app, raise_app_exceptions=False) as c:
        failed = await c.get("/boom", headers=as_tenant(tenants[0]))
        assert current_tenant() is None and current_actor() is None
        assert current_request_metadata() is None
        unscoped = await c.get("/ping")
        other = await c.get("/notes", headers=as_tenant(tenants[1]))
    assert failed.status_code == 500
    assert unscoped.status_code == 403
    assert {row[0] for row in other.json()["notes"]} == {tenants[1]}
    assert written("boom") == []  # the failed request's transaction rolled back


@pytest.mark.parametrize("mode", MODES)
async def test_a_scope_leaked_into_the_worker_is_refused(
    mode: str, sessions: Any, async_sessions: Any, tenants: tuple[int, ...]
) -> None:
    app = build_app(mode, sessions, async_sessions)
    async with client(app) as c:
        # as if left set by earlier work on the task
        with sa_patterns.tenant_scope(tenants[0]), pytest.raises(ConfigurationError, match="already in force"):
            await c.get("/notes", headers=as_tenant(tenants[1]))
        with sa_patterns.all_tenants(), pytest.raises(ConfigurationError, match="already in force"):
            await c.get("/ping", headers=as_tenant(tenants[1]))


async def test_request_id_from_the_client_is_kept_when_it_looks_like_one(
    sessions: Any, async_sessions: Any, tenants: tuple[int, ...], written: Any
) -> None:
    app = build_app("middleware", sessions, async_sessions)
    async with client(app) as c:
        kept = await c.get("/notes", headers={**as_tenant(tenants[0]), "x-request-id": "trace-42"})
        replaced = await c.get(
            "/notes", headers={**as_tenant(tenants[0]), "x-request-id": "x" * 129}
        )
    assert kept.headers["x-request-id"] == kept.json()["request_id"] == "trace-42"
    new_id = replaced.json()["request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", new_id) and replaced.headers["x-request-id"] == new_id
    assert [r.request["request_id"] for r in written("req ")] == ["trace-42", new_id]


def test_dependency_refuses_a_fastapi_that_ends_it_before_the_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fastapi

    monkeypatch.setattr(fastapi, "__version__", "0.117.1")
    with pytest.raises(ConfigurationError, match=r"FastAPI >= 0\.118"):
        tenant_dependency(tenant=tenant_header)


@pytest.mark.parametrize("mode", MODES)
async def test_websocket_is_scoped_and_refused_without_tenant(
    mode: str, sessions: Any, async_sessions: Any, tenants: tuple[int, ...]
) -> None:
    app = build_app(mode, sessions, async_sessions)
    sent = await talk(app, websocket(headers=as_tenant(tenants[2])), [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "one"},
        {"type": "websocket.receive", "text": "bye"},
    ])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    reply = json.loads(sent[1]["text"])
    assert reply["tenant"] == tenants[2] and {row[0] for row in reply["notes"]} == {tenants[2]}
    refused = await talk(app, websocket(), [{"type": "websocket.connect"}])
    assert [(m["type"], m["code"]) for m in refused] == [("websocket.close", 1008)]
    assert current_tenant() is None
