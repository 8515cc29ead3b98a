"""``tenant_dependency``: per-router tenant scoping for FastAPI, where a middleware is too wide.

The dependency is an ``async`` generator, whatever the resolvers are: FastAPI runs a *sync*
generator dependency in a thread pool, in a copy of the context, so a scope it sets never
reaches the endpoint. An async one runs in the request's task and FastAPI (0.118 and later)
closes it after the response is sent, so the scope covers the endpoint (sync endpoints too: the
thread pool copies the context), a streamed body and background tasks, and is reset in the
same task when the request ends. Older FastAPI closed it before sending the response (streams
and background tasks would run unscoped), so it is refused there.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..errors import ConfigurationError
from ._scope import (
    MISSING_TENANT,
    ActorResult,
    TenantResult,
    check_not_scoped,
    make_request_id,
    request_scope,
    resolve,
)

try:
    import fastapi
    from fastapi import Depends, HTTPException, WebSocketException
    from fastapi.requests import HTTPConnection
except ImportError as exc:  # pragma: no cover - the extra is installed wherever this is tested
    raise ImportError(
        "sa_patterns.integrations.fastapi needs FastAPI: pip install 'sa_patterns[fastapi]'"
    ) from exc

__all__ = ["tenant_dependency"]

#: The first FastAPI whose generator dependencies close after the response is sent.
MIN_FASTAPI = (0, 118)
WS_POLICY_VIOLATION = 1008


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def tenant_dependency(
    *,
    tenant: Callable[[HTTPConnection], TenantResult],
    actor: Callable[[HTTPConnection], ActorResult] | None = None,
    request_id_header: str = "x-request-id",
    required: bool = True,
) -> Any:
    """A ``Depends(...)`` that runs the request in its tenant's scope, for
    ``APIRouter(dependencies=[...])``, ``app.include_router(..., dependencies=[...])`` or one
    endpoint.

    ``tenant``/``actor`` receive the request's ``HTTPConnection`` (a ``Request`` or a
    ``WebSocket``) and may be sync or async; they run in the event loop, so a resolver that
    does I/O should be async. A request without a tenant gets **403** (``HTTPException``,
    through the app's handlers; a websocket is closed with 1008), as with
    :class:`~sa_patterns.integrations.asgi.TenantMiddleware`, whose request metadata
    (``request_id``, ``method``, ``path``) it records too. Use one or the other on an app:
    a second scope on the same request is refused.
    """
    if _version(fastapi.__version__) < MIN_FASTAPI:
        raise ConfigurationError(
            f"tenant_dependency() needs FastAPI >= {'.'.join(map(str, MIN_FASTAPI))} (installed: "
            f"{fastapi.__version__}): older versions end a dependency's scope before the "
            "response is sent, so streamed bodies and background tasks would run without the "
            "tenant. Upgrade FastAPI, or use sa_patterns.integrations.asgi.TenantMiddleware."
        )
    header = request_id_header.lower()

    async def sa_patterns_tenant_scope(connection: HTTPConnection) -> AsyncIterator[None]:
        check_not_scoped("tenant_dependency")
        request_id = make_request_id(connection.headers.get(header))
        tenant_id = await resolve(tenant, connection)
        websocket = connection.scope["type"] == "websocket"
        if tenant_id is None and required:
            if websocket:
                raise WebSocketException(WS_POLICY_VIOLATION, MISSING_TENANT)
            raise HTTPException(403, MISSING_TENANT, headers={header: request_id})
        actor_id = await resolve(actor, connection) if actor is not None else None
        connection.state.request_id = request_id
        method = "WEBSOCKET" if websocket else connection.scope["method"]
        with request_scope(tenant_id, actor_id, request_id=request_id, method=method, path=connection.scope["path"]):
            yield

    return Depends(sa_patterns_tenant_scope)
