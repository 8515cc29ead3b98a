"""``TenantPlugin``: every route of a Litestar app runs in its request's tenant scope.

The plugin appends a pure ASGI middleware (the one of :mod:`.asgi`) to the app's middleware,
so it is the innermost: authentication middleware runs first and the resolvers can read
``connection.user`` / ``connection.auth``. The scope is held for the route's whole ASGI call,
so sync handlers (``sync_to_thread``: the thread copies the context), streamed bodies and
background tasks (run after the response, inside that call) are in it; it is reset when the
call returns, on errors too. Litestar runs no middleware for a path without a route (404).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._scope import MISSING_TENANT, ActorResult, TenantResult
from .asgi import Receive, Scope, Send, TenantMiddleware

try:
    from litestar.config.app import AppConfig
    from litestar.connection import ASGIConnection
    from litestar.exceptions import PermissionDeniedException
    from litestar.middleware import DefineMiddleware
    from litestar.plugins import InitPlugin
except ImportError as exc:  # pragma: no cover - the extra is installed wherever this is tested
    raise ImportError(
        "sa_patterns.integrations.litestar needs Litestar 2.15 or later: "
        "pip install 'sa_patterns[litestar]'"
    ) from exc

__all__ = ["TenantPlugin"]

#: What the resolvers receive.
Connection = ASGIConnection[Any, Any, Any, Any]


class TenantPlugin(InitPlugin):
    """``Litestar(plugins=[TenantPlugin(tenant=..., actor=...)])``.

    ``tenant(connection)`` / ``actor(connection)`` receive the request's
    ``litestar.connection.ASGIConnection`` and return the id, ``None`` or an awaitable of
    either. A request without a tenant (``required=True``) raises ``PermissionDeniedException``
    (403 through the app's exception handlers) before the handler runs; a websocket is closed
    with 1008 at the handshake. The request id and metadata are those of
    :class:`~sa_patterns.integrations.asgi.TenantMiddleware` (``connection.state.request_id``,
    echoed in the ``request_id_header``, recorded in the audit log).
    """

    __slots__ = ("options",)

    def __init__(
        self,
        *,
        tenant: Callable[[Connection], TenantResult],
        actor: Callable[[Connection], ActorResult] | None = None,
        request_id_header: str = "x-request-id",
        required: bool = True,
    ) -> None:
        self.options: dict[str, Any] = {
            "tenant": tenant,
            "actor": actor,
            "request_id_header": request_id_header,
            "required": required,
        }

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        # Litestar's ASGI types are TypedDicts; ours are mappings (the same messages at runtime)
        middleware: Any = _LitestarTenantMiddleware
        app_config.middleware.append(DefineMiddleware(middleware, **self.options))
        return app_config


class _LitestarTenantMiddleware(TenantMiddleware):
    """The ASGI middleware with Litestar's connection and Litestar's 403."""

    def _connect(self, scope: Scope, receive: Receive) -> Connection:
        return ASGIConnection(scope, receive)  # type: ignore[arg-type]

    async def _refuse(self, scope: Scope, send: Send, request_id: str) -> None:
        if scope["type"] == "http":  # rendered by the app's exception handlers
            raise PermissionDeniedException(MISSING_TENANT, headers={self.request_id_header: request_id})
        await super()._refuse(scope, send, request_id)
