"""A Flask app scoped by ``SAPatterns``: requests of three tenants from eight threads (Flask's
test client runs the app in the calling thread, as a threaded WSGI server does, and the pool
reuses each thread for many requests), errors, a missing tenant (403 before any SQL), a leaked
scope, and streamed bodies (``stream_with_scope``; ``stream_with_context`` alone fails closed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask, Request, Response, g, request, stream_with_context
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from web_models import Note, read_notes_sync

import sa_patterns
from sa_patterns.context import current_actor, current_request_metadata, current_tenant
from sa_patterns.errors import TenantRequired
from sa_patterns.integrations.flask import SAPatterns, stream_with_scope


def tenant_header(request: Request) -> int | None:
    value = request.headers.get("X-Tenant")
    return int(value) if value is not None else None


def build_app(sessions: sessionmaker[Session]) -> Flask:
    app = Flask(__name__)
    ext = SAPatterns(tenant=tenant_header, actor=lambda request: request.headers.get("X-User"))
    ext.init_app(app)  # the app-factory form

    @app.get("/notes")
    def notes() -> dict[str, Any]:
        seen = read_notes_sync(sessions)
        with sessions.begin() as s:
            s.add(Note(body=f"req {g.sa_patterns_request_id}"))
        return {"tenant": current_tenant(), "request_id": g.sa_patterns_request_id, "notes": seen}

    @app.get("/boom")
    def boom() -> None:
        with sessions.begin() as s:
            s.add(Note(body=f"boom {g.sa_patterns_request_id}"))
            raise RuntimeError("the view failed")

    @app.get("/ping")
    def ping() -> dict[str, Any]:
        with sessions() as s:
            s.execute(text("SELECT 1"))
        return {"tenant": current_tenant(), "actor": current_actor()}

    def lines() -> Iterator[str]:
        for row in read_notes_sync(sessions):
            yield json.dumps([current_tenant(), *row]) + "\n"

    @app.get("/stream")
    def stream() -> Response:
        return Response(stream_with_scope(lines()))

    @app.get("/stream-with-request")
    def stream_with_request() -> Response:
        def tagged() -> Iterator[str]:
            for line in lines():
                yield request.args["tag"] + line  # flask.request, still there

        return Response(stream_with_scope(stream_with_context(tagged())))

    @app.get("/stream-with-context")
    def stream_with_context_only() -> Response:
        return Response(stream_with_context(lines()))

    return app


def as_tenant(tenant: int) -> dict[str, str]:
    return {"X-Tenant": str(tenant), "X-User": f"user-{tenant}"}


def test_threads_of_three_tenants_see_and_write_only_their_own(
    sessions: Any, tenants: tuple[int, ...], written: Any
) -> None:
    app = build_app(sessions)
    calls = [tenants[i % 3] for i in range(48)]

    def call(tenant: int) -> tuple[int, Any]:
        response = app.test_client().get("/notes", headers=as_tenant(tenant))
        assert current_tenant() is None  # nothing left behind on this pool thread
        return tenant, response

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, calls))
    by_request = {}
    for tenant, response in results:
        assert response.status_code == 200, response.text
        payload = response.json
        assert payload["tenant"] == tenant and {row[0] for row in payload["notes"]} == {tenant}
        assert response.headers["X-Request-Id"] == payload["request_id"]
        by_request[payload["request_id"]] = tenant
    rows = written("req ")
    assert len(rows) == len(by_request) == 48
    for row in rows:
        rid = row.body.removeprefix("req ")
        tenant = by_request[rid]
        assert (row.tenant_id, row.audit_tenant, row.actor_id) == (tenant, str(tenant), f"user-{tenant}")
        assert row.request == {"request_id": rid, "method": "GET", "path": "/notes"}


def test_missing_tenant_is_403_before_any_sql(sessions: Any, statements: list[str]) -> None:
    client = build_app(sessions).test_client()
    refused = client.get("/ping", headers={"X-User": "someone", "X-Request-Id": "trace-7"})
    statements_after_refusal = list(statements)
    allowed = client.get("/ping", headers={"X-Tenant": "1"})
    assert refused.status_code == 403
    assert "no tenant could be resolved for this request" in refused.text
    assert refused.headers["X-Request-Id"] == "trace-7"
    assert statements_after_refusal == []
    assert allowed.status_code == 200 and statements


def test_request_after_an_error_inherits_no_scope(
    sessions: Any, tenants: tuple[int, ...], written: Any
) -> None:
    client = build_app(sessions).test_client()  # runs the app in this thread
    failed = client.get("/boom", headers=as_tenant(tenants[0]))
    assert current_tenant() is None and current_actor() is None and current_request_metadata() is None
    unscoped = client.get("/ping")
    other = client.get("/notes", headers=as_tenant(tenants[1]))
    assert failed.status_code == 500
    assert unscoped.status_code == 403
    assert {row[0] for row in other.json["notes"]} == {tenants[1]}
    assert written("boom") == []


def test_a_scope_leaked_into_the_thread_is_refused(
    sessions: Any, tenants: tuple[int, ...], statements: list[str]
) -> None:
    client = build_app(sessions).test_client()
    with sa_patterns.tenant_scope(tenants[0]):  # as if a teardown never ran on this thread
        leaked = client.get("/ping", headers=as_tenant(tenants[1]))
    assert leaked.status_code == 500 and statements == []
    assert client.get("/ping", headers=as_tenant(tenants[1])).status_code == 200


def test_streams_run_in_their_request_scope_with_stream_with_scope(
    sessions: Any, tenants: tuple[int, ...]
) -> None:
    app = build_app(sessions)

    def stream(tenant: int, path: str = "/stream") -> list[Any]:
        response = app.test_client().get(path, headers=as_tenant(tenant))
        return [json.loads(line.removeprefix("x")) for line in response.text.splitlines()]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(stream, tenants * 4))
    for tenant, lines in zip(tenants * 4, results, strict=True):
        assert len(lines) >= 2 and {(scope, t) for scope, t, _ in lines} == {(tenant, tenant)}
    lines = stream(tenants[1], "/stream-with-request?tag=x")
    assert len(lines) >= 2 and {(scope, t) for scope, t, _ in lines} == {(tenants[1], tenants[1])}
    assert current_tenant() is None
    # stream_with_context alone: Flask 3 tears the request down before the body runs, so the
    # body is unscoped and fails closed
    with pytest.raises(TenantRequired):
        app.test_client().get("/stream-with-context", headers=as_tenant(tenants[0])).get_data()
    assert current_tenant() is None


def test_init_app_registers_the_extension(sessions: Any) -> None:
    app = Flask(__name__)
    ext = SAPatterns(app, tenant=tenant_header)
    assert app.extensions["sa_patterns"] is ext
