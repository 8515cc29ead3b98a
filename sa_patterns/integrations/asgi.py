"""``TenantMiddleware``: every HTTP request and websocket of an ASGI app runs in its tenant's
scope, with its actor and request id, and nothing else does.

Pure ASGI, not Starlette's ``BaseHTTPMiddleware`` (which runs the endpoint in another task):
the scope is entered in the task that calls the app and reset when that call returns, so it
covers the endpoint, a streamed body, background tasks (Starlette runs them inside the call,
after the response) and sync endpoints (Starlette's thread pool copies the context), and ends
with the request, on errors too. The resolvers receive a ``starlette.requests.HTTPConnection``
when Starlette is installed (FastAPI, Starlette apps), else the raw ASGI scope.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._scope import (
    MISSING_TENANT,
    ActorResult,
    TenantResult,
    check_not_scoped,
    make_request_id,
    request_scope,
    resolve,
)

__all__ = ["ASGIApp", "TenantMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Close code of a refused websocket handshake (policy violation); servers answer HTTP 403.
WS_POLICY_VIOLATION = 1008


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class TenantMiddleware:
    """Resolve each request's tenant (and actor) and run the request in that scope.

    ``tenant(connection)`` returns the tenant id (a header, a JWT claim, a subdomain), ``None``
    when the request names none, or an awaitable of either. With ``required=True`` (the
    default) a request without a tenant is answered **403** ``{"detail": ...}`` (a websocket is
    closed with 1008 at the handshake) and never reaches the app. To answer 401 with a
    challenge instead, authenticate in a middleware outside this one. ``actor(connection)``
    names who acts (``None``: nobody); it is resolved after the tenant.

    The request id is the ``request_id_header`` the client sent (kept when it looks like an
    id), else a new one; it is echoed in the response's header, set as
    ``request.state.request_id``, and recorded with the method and path as request metadata
    (the audit log's ``request`` column). Lifespan events pass through unscoped.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tenant: Callable[[Any], TenantResult],
        actor: Callable[[Any], ActorResult] | None = None,
        request_id_header: str = "x-request-id",
        required: bool = True,
    ) -> None:
        self.app = app
        self.tenant = tenant
        self.actor = actor
        self.request_id_header = request_id_header.lower()
        self.required = required
        self._header = self.request_id_header.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        check_not_scoped(type(self).__name__)
        request_id = make_request_id(_header(scope, self._header))
        connection = self._connect(scope, receive)
        tenant = await resolve(self.tenant, connection)
        if tenant is None and self.required:
            await self._refuse(scope, send, request_id)
            return
        actor = await resolve(self.actor, connection) if self.actor is not None else None
        scope.setdefault("state", {})["request_id"] = request_id
        if kind == "http":
            send = self._echo_request_id(send, request_id)
        method = scope.get("method", "WEBSOCKET")
        with request_scope(tenant, actor, request_id=request_id, method=method, path=scope["path"]):
            await self.app(scope, receive, send)

    def _connect(self, scope: Scope, receive: Receive) -> Any:
        """What the resolvers receive."""
        try:
            from starlette.requests import HTTPConnection
        except ImportError:  # a plain ASGI app: the resolvers read the scope itself
            return scope
        return HTTPConnection(scope, receive)

    def _echo_request_id(self, send: Send, request_id: str) -> Send:
        header = (self._header, request_id.encode("latin-1"))

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        return sending

    async def _refuse(self, scope: Scope, send: Send, request_id: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": MISSING_TENANT})
            return
        body = json.dumps({"detail": MISSING_TENANT}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (self._header, request_id.encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
